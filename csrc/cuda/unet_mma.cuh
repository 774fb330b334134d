// The unet family's stride-1 convolutions on tensor cores, in the fast numeric mode: bfloat16
// inputs (the mode's rounding, math::bf16_bits) times bfloat16 weights, float32 accumulation. Used
// when every product is exact, so the arithmetic is the fast mode's (design section 3, "Numeric
// modes"): the model file's convolution weights are bfloat16 values (--weights bf16; the arena
// then holds their 16-bit copy, DevConv::wh), and only the order of the float32 sums differs from
// the CPU backend's, as it does between any two backends. A block's output channels are a
// multiple of 16 and so are the input channels; otherwise unet_conv's plain loops run the layer.
//
// A convolution of kernel K over L positions is a GEMM per row: [L, K Cin] x [K Cin, Cout], whose
// left matrix is the input itself read with a row stride of Cin (position-major activations: the
// taps of position l are the K Cin values from position l - K / 2), once the input is in bfloat16
// with K / 2 zero positions on each side and its length padded to 16. Each block converts the
// whole input into its own buffer (the group's other blocks read the same activations), then each
// warp computes 16 x 16 output tiles over the block's channels (WMMA, 16 x 16 x 16 steps), stages
// a tile in its own 256 floats and writes the valid positions with the bias added.
//
// The CPU emulation (tests/cpp/cuda_unet_emulation_test.cpp, cuda_kernel_emulation_test.cpp) supplies nvcuda::wmma and
// __nv_bfloat16 for a warp of one thread (tests/cpp/wmma_emulation.h).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <mma.h>
#endif

#include "cuda/group_sync.h"
#include "cuda/layout.h"
#include "cuda/unet_net.h"
#include "math/bf16.h"

namespace mpd::cuda {

// A block's own buffers (UnetScratch::own_floats; no other block reads them): for the tensor-core
// convolutions the bfloat16 input rows (null without tensor cores), row stride half_row elements,
// and a 16 x 16 float staging tile per warp; the sliced convolutions' partial sums (unet.cuh),
// split_work their unet_slices work (0: no layer split).
struct UnetOwnBuffers {
  uint16_t* half;
  int half_row;
  float* stage;
  float* partial;
  int split_work = kUnetSplitWork;
};

// Whether layer c (stride 1 or 2, cin input channels) runs on tensor cores in this plan: the fast
// mode, the layer's bfloat16 weights, stride 1, channels in whole 16-channel tiles. It depends on
// the layer alone, never on the group's size, so the answer does not either (unet.cuh gives such a
// layer's blocks whole tiles of output channels).
__device__ inline bool unet_tensor_layer(const DevConv& c, int cin, int stride, bool fast, const UnetOwnBuffers& t) {
  return fast && t.half != nullptr && c.wh != nullptr && stride == 1 && cin % 16 == 0 && c.out % 16 == 0;
}

// Output channels [first, first + width) (whole tiles) of the stride-1 convolution c of x (the
// first x_channels channels from x_at, the joined ones after them) into y, on tensor cores. Not
// inlined: inlined at each of its call sites it took the plan kernel from a 128-byte to a
// 2000-byte stack frame at its 128 registers (ptxas -v, sm_90); called, 288 bytes.
__device__ inline __noinline__ void unet_conv_mma(const DevConv& c, const float* x_at, size_t x_ld, int x_count,
                                                  int x_channels, const float* joined, size_t ld_joined,
                                                  int joined_channels, int L, int rows, float* y, size_t ldy,
                                                  int first, int width, const UnetOwnBuffers& t) {
  const int cin = x_channels + joined_channels;
  const int pad = c.kernel / 2, tiles_m = (L + 15) / 16, positions = 16 * tiles_m + c.kernel - 1;
  for (int q = threadIdx.x; q < rows * positions * cin; q += blockDim.x) {
    const int r = q / (positions * cin), s = (q / cin) % positions, i = q % cin, pos = s - pad;
    float v = 0.0f;
    if (pos >= 0 && pos < L) {
      v = i < x_channels ? x_at[static_cast<size_t>(r % x_count) * x_ld + static_cast<size_t>(pos) * x_channels + i]
                         : joined[static_cast<size_t>(r) * ld_joined + static_cast<size_t>(pos) * joined_channels +
                                  i - x_channels];
    }
    t.half[static_cast<size_t>(r) * t.half_row + static_cast<size_t>(s) * cin + i] = math::bf16_bits(v);
  }
  __syncthreads();
  namespace wmma = nvcuda::wmma;
  const int lanes = blockDim.x < 32 ? static_cast<int>(blockDim.x) : 32;
  const int warp = threadIdx.x / lanes, lane = threadIdx.x % lanes, warps = blockDim.x / lanes;
  const int tiles_n = width / 16, tiles = rows * tiles_m * tiles_n, depth = c.kernel * cin;
  const __nv_bfloat16* w = reinterpret_cast<const __nv_bfloat16*>(c.wh);
  float* stage = t.stage + warp * 256;
  for (int tile = warp; tile < tiles; tile += warps) {
    const int r = tile / (tiles_m * tiles_n), tm = (tile / tiles_n) % tiles_m, o0 = first + 16 * (tile % tiles_n);
    const __nv_bfloat16* a = reinterpret_cast<const __nv_bfloat16*>(t.half) + static_cast<size_t>(r) * t.half_row +
                             static_cast<size_t>(16 * tm) * cin;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int k0 = 0; k0 < depth; k0 += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> at;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> bt;
      wmma::load_matrix_sync(at, a + k0, static_cast<unsigned>(cin));
      wmma::load_matrix_sync(bt, w + static_cast<size_t>(k0) * c.out + o0, static_cast<unsigned>(c.out));
      wmma::mma_sync(acc, at, bt, acc);
    }
    wmma::store_matrix_sync(stage, acc, 16, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < 256; e += lanes) {
      const int l = 16 * tm + e / 16, o = o0 + e % 16;
      if (l < L) y[static_cast<size_t>(r) * ldy + static_cast<size_t>(l) * c.out + o] = stage[e] + c.b[o];
    }
    __syncwarp();
  }
  __syncthreads();
}

}  // namespace mpd::cuda
