// The CPU backend's packed dense layers: a register-blocked micro-kernel over rows x kPanel.
#include "cpu/dense.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "math/bf16.h"

namespace mpd::cpu {

void AlignedFree::operator()(float* p) const { std::free(p); }

AlignedBuffer aligned_floats(size_t count) {
  const size_t bytes = (count * sizeof(float) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, bytes == 0 ? 64 : bytes);
  return AlignedBuffer(static_cast<float*>(p));
}

namespace {

// Rows per register block: accumulators 2 * kRows vectors, plus two weight vectors and one
// broadcast, fit the 32 AVX-512 (16 AVX2) vector registers.
constexpr int kRows = kVec == 16 ? 12 : 6;

// A block's epilogue: y[r] = epilogue(acc[r]) (+ residual[r]) for R rows x one panel.
template <int R>
inline void finish(const vfloat* acc0, const vfloat* acc1, Epilogue epilogue, const float* residual, size_t ldr,
                   float* y, size_t ldy) {
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    vfloat o0 = acc0[r], o1 = acc1[r];
    if (epilogue != Epilogue::kLinear) {
      o0 = vsilu(o0);
      o1 = vsilu(o1);
    }
    if (epilogue == Epilogue::kResidualSilu) {
      o0 += load(residual + static_cast<size_t>(r) * ldr);
      o1 += load(residual + static_cast<size_t>(r) * ldr + kVec);
    }
    store(y + static_cast<size_t>(r) * ldy, o0);
    store(y + static_cast<size_t>(r) * ldy + kVec, o1);
  }
}

// One block of R rows x one panel.
//   x:     [R, ldx] inputs, columns 0..in
//   panel: [in][kPanel] packed W^T (kBf16: [ceil(in / 2)][kPanel] words of two bfloat16
//          weights, widened exactly to float32 and summed in the same index order)
//   bias:  [kPanel]
//   y:     [R, ldy] outputs, the panel's kPanel columns (residual: [R, ldr] likewise)
// kRound: each input rounded to bfloat16 first (the fast numeric mode, math/bf16.h).
template <int R, bool kBf16, bool kRound>
void block(const float* x, size_t ldx, int in, const float* panel, const float* bias, Epilogue epilogue,
           const float* residual, size_t ldr, float* y, size_t ldy) {
  vfloat acc0[R], acc1[R];
  const vfloat b0 = load(bias), b1 = load(bias + kVec);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    acc0[r] = b0;
    acc1[r] = b1;
  }
  if constexpr (!kBf16) {
    for (int i = 0; i < in; ++i) {
      const vfloat w0 = load(panel + static_cast<size_t>(i) * kPanel);
      const vfloat w1 = load(panel + static_cast<size_t>(i) * kPanel + kVec);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const float a = math::layer_input(x[static_cast<size_t>(r) * ldx + i], kRound);
        acc0[r] += a * w0;
        acc1[r] += a * w1;
      }
    }
  } else {
    const int pairs = in / 2;
    const vint high = vint{} + static_cast<int32_t>(0xffff0000u);
    for (int j = 0; j < pairs; ++j) {
      const vint p0 = load_int(panel + static_cast<size_t>(j) * kPanel);
      const vint p1 = load_int(panel + static_cast<size_t>(j) * kPanel + kVec);
      const vfloat e0 = (vfloat)(p0 << 16), e1 = (vfloat)(p1 << 16);
      const vfloat o0 = (vfloat)(p0 & high), o1 = (vfloat)(p1 & high);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const float a = math::layer_input(x[static_cast<size_t>(r) * ldx + 2 * j], kRound);
        const float b = math::layer_input(x[static_cast<size_t>(r) * ldx + 2 * j + 1], kRound);
        acc0[r] += a * e0;
        acc1[r] += a * e1;
        acc0[r] += b * o0;
        acc1[r] += b * o1;
      }
    }
    if (in % 2 != 0) {  // the last input's weights: the low halves of the last words
      const vint p0 = load_int(panel + static_cast<size_t>(pairs) * kPanel);
      const vint p1 = load_int(panel + static_cast<size_t>(pairs) * kPanel + kVec);
      const vfloat e0 = (vfloat)(p0 << 16), e1 = (vfloat)(p1 << 16);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const float a = math::layer_input(x[static_cast<size_t>(r) * ldx + 2 * pairs], kRound);
        acc0[r] += a * e0;
        acc1[r] += a * e1;
      }
    }
  }
  finish<R>(acc0, acc1, epilogue, residual, ldr, y, ldy);
}

using BlockFn = void (*)(const float*, size_t, int, const float*, const float*, Epilogue, const float*, size_t,
                         float*, size_t);

template <bool kBf16, bool kRound, int... R>
constexpr auto make_table(std::integer_sequence<int, R...>) {
  return std::array<BlockFn, sizeof...(R)>{&block<R + 1, kBf16, kRound>...};
}
// kBlocks[bf16 panels][round inputs][r - 1] handles r rows.
constexpr std::array<BlockFn, kRows> kBlocks[2][2] = {
    {make_table<false, false>(std::make_integer_sequence<int, kRows>{}),
     make_table<false, true>(std::make_integer_sequence<int, kRows>{})},
    {make_table<true, false>(std::make_integer_sequence<int, kRows>{}),
     make_table<true, true>(std::make_integer_sequence<int, kRows>{})}};

// In bfloat16 pairs: the rows of a panel, and whether a float is a bfloat16 value.
int panel_rows(int in, bool bf16) { return bf16 ? (in + 1) / 2 : in; }
bool is_bf16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return (bits & 0xffffu) == 0;
}

}  // namespace

void dense_forward(const PackedDense& layer, const float* x, size_t ldx, int rows, Epilogue epilogue,
                   const float* residual, size_t ldr, float* y, size_t ldy, bool round_inputs) {
  const int panels = layer.out_padded / kPanel;
  const size_t panel_size = static_cast<size_t>(panel_rows(layer.in, layer.bf16)) * kPanel;
  const auto& blocks = kBlocks[layer.bf16 ? 1 : 0][round_inputs ? 1 : 0];
  for (int p = 0; p < panels; ++p) {
    const float* panel = layer.panels.get() + static_cast<size_t>(p) * panel_size;
    const float* bias = layer.bias.get() + static_cast<size_t>(p) * kPanel;
    const size_t col = static_cast<size_t>(p) * kPanel;
    for (int r0 = 0; r0 < rows; r0 += kRows) {
      const int r = rows - r0 < kRows ? rows - r0 : kRows;
      const size_t row = static_cast<size_t>(r0);
      blocks[static_cast<size_t>(r - 1)](x + row * ldx, ldx, layer.in, panel, bias, epilogue,
                                          residual ? residual + row * ldr + col : nullptr, ldr,
                                          y + row * ldy + col, ldy);
    }
  }
}

PackedDense pack_dense(const float* weight, const float* bias, int in, int out, bool allow_bf16) {
  PackedDense d;
  d.in = in;
  d.out = out;
  d.out_padded = padded(out);
  const size_t count = static_cast<size_t>(out) * static_cast<size_t>(in);
  d.bf16 = allow_bf16 && std::all_of(weight, weight + count, is_bf16);
  const int rows = panel_rows(in, d.bf16);
  d.panels = aligned_floats(static_cast<size_t>(d.out_padded) * static_cast<size_t>(rows));
  d.bias = aligned_floats(static_cast<size_t>(d.out_padded));
  for (int o = 0; o < out; ++o) {
    float* panel = d.panels.get() + static_cast<size_t>(o / kPanel) * rows * kPanel;
    for (int i = 0; i < in; ++i) {
      const float w = weight[static_cast<size_t>(o) * in + i];
      float* at = panel + static_cast<size_t>(d.bf16 ? i / 2 : i) * kPanel + o % kPanel;
      if (d.bf16) {  // the weight's upper 16 bits into the word's low (even i) or high (odd i) half
        uint32_t word, bits;
        std::memcpy(&word, at, sizeof word);
        std::memcpy(&bits, &w, sizeof bits);
        word |= i % 2 == 0 ? bits >> 16 : bits;
        std::memcpy(at, &word, sizeof word);
      } else {
        *at = w;
      }
    }
    d.bias[static_cast<size_t>(o)] = bias ? bias[o] : 0.0f;
  }
  return d;
}

size_t PackedDense::weight_bytes() const {
  return static_cast<size_t>(out_padded) * static_cast<size_t>(panel_rows(in, bf16)) * sizeof(float);
}

PackedMlp pack_mlp(const MlpWeights& weights) {
  PackedMlp mlp;
  mlp.shape = weights.shape;
  for (const DenseWeights& w : weights.layers) {
    mlp.layers.push_back(pack_dense(w.weight.data(), w.bias.data(), w.in, w.out));
  }
  return mlp;
}

double PackedMlp::flops_per_row() const {
  double f = 0.0;
  for (const PackedDense& d : layers) f += 2.0 * d.in * d.out;
  return f;
}

void mlp_forward(const PackedMlp& mlp, const float* x, size_t ldx, int rows, float* h0, float* h1,
                 float* out, size_t ldo, bool fast) {
  const size_t ldh = static_cast<size_t>(mlp.width_padded());
  const size_t last = mlp.layers.size() - 1;
  dense_forward(mlp.layers[0], x, ldx, rows, Epilogue::kSilu, nullptr, 0, h0, ldh, fast);
  for (size_t l = 1; l < last; ++l) {
    dense_forward(mlp.layers[l], h0, ldh, rows, Epilogue::kResidualSilu, h0, ldh, h1, ldh, fast);
    float* t = h0;
    h0 = h1;
    h1 = t;
  }
  dense_forward(mlp.layers[last], h0, ldh, rows, Epilogue::kLinear, nullptr, 0, out, ldo, fast);
}

}  // namespace mpd::cpu
