// Dense layers and residual MLPs of the CPU backend (design section 3, "Networks").
//
// Weights are packed once at model load into panels of kPanel = 2 * kVec outputs: panel p holds
// W^T[:, p*kPanel .. p*kPanel + kPanel) as [in][kPanel] (outputs past `out` are zero), so the
// micro-kernel reads it contiguously and keeps a block of rows x kPanel accumulators in registers.
// Every output element sums its inputs in index order, whatever the row blocking: results do not
// depend on how many rows (candidates) a call or a thread holds.
//
// A layer whose weights are all bfloat16 values (a model file that stores them as BF16, or any
// weights that happen to be) is packed in bfloat16 instead: panel p holds [ceil(in / 2)][kPanel]
// 32-bit words, word (j, o) = (bits of W[o, 2j + 1] << 16) | bits of W[o, 2j]. The kernel widens
// each word to the two float32 weights exactly (a shift and a mask) and multiplies and adds in
// float32 in the same index order, so the outputs are bit-identical to the float32 panels' on the
// same weights, with half the bytes to stream from memory per plan step.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "format/model_file.h"
#include "cpu/vec.h"

namespace mpd::cpu {

constexpr int kPanel = 2 * kVec;

inline int padded(int n) { return (n + kPanel - 1) / kPanel * kPanel; }

// A float buffer aligned to 64 bytes (one cache line, one AVX-512 vector).
struct AlignedFree {
  void operator()(float* p) const;
};
using AlignedBuffer = std::unique_ptr<float[], AlignedFree>;
AlignedBuffer aligned_floats(size_t count);  // zero-filled; throws std::bad_alloc

struct PackedDense {
  int in = 0, out = 0, out_padded = 0;
  bool bf16 = false;     // panels hold bfloat16 pairs (above)
  AlignedBuffer panels;  // float32: [out_padded / kPanel][in][kPanel]; bf16: [out_padded / kPanel][ceil(in / 2)][kPanel] words
  AlignedBuffer bias;    // [out_padded], zero past out
  size_t weight_bytes() const;  // of the packed panels
};

enum class Epilogue { kLinear, kSilu, kResidualSilu };


// y[r, :] = epilogue(x[r, :in] W^T + b) for r < rows. x: [rows, ldx]; y: [rows, ldy] with
// ldy >= out_padded; kResidualSilu adds residual[r, :] ([rows, ldr]) to SiLU(.). y may not
// alias x or residual. round_inputs: the fast numeric mode, each x rounded to bfloat16 first
// (math/bf16.h; the residual is not rounded).
void dense_forward(const PackedDense& layer, const float* x, size_t ldx, int rows, Epilogue epilogue,
                   const float* residual, size_t ldr, float* y, size_t ldy, bool round_inputs = false);

struct PackedMlp {
  MlpShape shape;
  std::vector<PackedDense> layers;
  int out_padded() const { return layers.back().out_padded; }
  int width_padded() const { return padded(shape.width); }
  double flops_per_row() const;  // 2 * sum(in * out) over layers
};

// Packs W [out, in] row-major and b [out] (b may be null: zero): in bfloat16 pairs when every
// weight is a bfloat16 value (its low 16 bits zero) and allow_bf16, else in float32.
PackedDense pack_dense(const float* weight, const float* bias, int in, int out, bool allow_bf16 = true);

PackedMlp pack_mlp(const MlpWeights& weights);

// out[rows, ldo] = MLP(x[rows, ldx]); h0, h1: scratch [rows, width_padded()]; fast: the fast
// numeric mode (every layer's inputs rounded to bfloat16).
void mlp_forward(const PackedMlp& mlp, const float* x, size_t ldx, int rows, float* h0, float* h1,
                 float* out, size_t ldo, bool fast = false);

}  // namespace mpd::cpu
