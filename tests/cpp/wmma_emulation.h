// CUDA's WMMA API and __nv_bfloat16 for the CPU emulation of the kernels (a warp of one thread, as
// the emulation tests run every block): a fragment holds its whole tile, mma_sync sums the tile's
// products in k order in float32. The products of two bfloat16 values are exact in float32, as on
// the tensor cores, so the emulated layer differs from the device's only in the order (and, on
// the device, the rounding) of its float32 sums: the tolerance of the fast numeric mode covers it.
// Only the shapes the kernels use (16 x 16 x 16, bfloat16 in, float out, row-major).
#pragma once

#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
  uint16_t bits;
};

inline void __syncwarp() {}

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  float x[256];  // the whole 16 x 16 tile, row-major
};

inline float widen(__nv_bfloat16 h) {
  const uint32_t bits = static_cast<uint32_t>(h.bits) << 16;
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

template <class Use>
void load_matrix_sync(fragment<Use, 16, 16, 16, __nv_bfloat16, row_major>& f, const __nv_bfloat16* p, unsigned ldm) {
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16; ++j) f.x[i * 16 + j] = widen(p[static_cast<size_t>(i) * ldm + j]);
  }
}

inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) {
  for (float& e : f.x) e = v;
}

inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
                     const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, row_major>& a,
                     const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, row_major>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[256];
  for (int m = 0; m < 16; ++m) {
    for (int n = 0; n < 16; ++n) {
      float acc = c.x[m * 16 + n];
      for (int k = 0; k < 16; ++k) acc += a.x[m * 16 + k] * b.x[k * 16 + n];  // exact products
      out[m * 16 + n] = acc;
    }
  }
  std::memcpy(d.x, out, sizeof out);
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t) {
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16; ++j) p[static_cast<size_t>(i) * ldm + j] = f.x[i * 16 + j];
  }
}

}  // namespace nvcuda::wmma
