// The unet family on the CPU backend: the authors' temporal U-Net with FiLM (design section 1,
// python/mpdiffuser/models/unet.py is its specification), a batch of rows (candidates) at a time.
//
// Every layer is a packed dense layer (cpu/dense.h) over the rows' positions. Activations are
// position-major [L + 4][ldc] per row (channels innermost, ldc = C padded to kPanel, two zero
// positions of margin on each side, zero channels past C), so the kernel taps of a convolution
// at position l are the contiguous K * ldc floats from position l - K/2: a stride-1 convolution
// is one dense call over the row's L positions with weights packed [out][tap][channel], the
// stride-2 convolution the same with the rows two positions apart, and the transposed
// convolution two such calls (even and odd outputs, two taps each). Each layer runs over all the
// batch's rows before the next, so its weights stream from memory once per batch. A row's result
// depends on its own inputs only (every output sums its inputs in index order): it does not
// depend on the other rows, the batch, or the thread it runs in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "format/model_file.h"
#include "cpu/dense.h"

namespace mpd::cpu {

class CpuUnet {
 public:
  static constexpr int kMaxRows = 16;  // rows per forward call

  CpuUnet() = default;
  // The network `net` ("planner": D channels in and out; "dynamics": D in, dx out) of a unet
  // model file.
  CpuUnet(const ModelConfig& config, const std::vector<NamedTensor>& tensors, const char* net);

  bool empty() const { return out_channels_ == 0; }
  int out_channels() const { return out_channels_; }
  size_t scratch_floats() const { return scratch_floats_; }  // forward's scratch, per call

  // For r < rows (<= kMaxRows): out + r ldo = [H, out_channels] row-major = unet(windows[r]
  // ([H, in_channels] row-major), level t = k - 1, x0 [dx], conds[r] [cond_dim]). scratch:
  // scratch_floats() floats, not shared with a concurrent call. fast: the fast numeric mode, every
  // layer's inputs rounded to bfloat16 (the convolutions on AMX tiles where the CPU has them and
  // the weights are bfloat16: cpu/amx.h).
  void forward(int rows, const float* const* windows, int t, const float* x0, const float* const* conds,
               float* out, size_t ldo, float* scratch, bool fast = false) const;

  // The FiLM of a network call depends on its level, x_0 and condition, not on the window: films()
  // computes it once for `count` contexts (levels[i], x0, conds[i]) into films + i film_floats()
  // (every FiLM layer's [scale, shift]), kMaxRows contexts a batch, and forward() below takes each
  // row's FiLM from there. A plan computes its K levels' conditional and unconditional contexts
  // once instead of every step's every row. The same arithmetic, row by row, as the forward above.
  size_t film_floats() const { return film_floats_; }
  void films(int count, const int* levels, const float* x0, const float* const* conds, float* films,
             float* scratch, bool fast) const;
  void forward(int rows, const float* const* windows, const float* const* film_rows, float* out, size_t ldo,
               float* scratch, bool fast) const;

 private:
  // A convolution as dense layers: stride 1 or 2 (gemm) or transposed (gemm: even, odd).
  struct Conv {
    int in = 0, out = 0, kernel = 0;
    PackedDense gemm, odd;
  };
  struct FilmConv {
    Conv conv;
    std::vector<float> gamma, beta;  // GroupNorm affine [out]
    PackedDense film0, film2;        // context -> context (SiLU) -> [scale, shift] (2 out)
    size_t film_at = 0;              // its [scale, shift] in a row of films()
  };
  struct Block {
    FilmConv first, second;
    bool has_skip = false;
    Conv skip;  // k1, when the channel count changes
  };
  struct Level {
    Block b0, b1;
    bool has_down = false;
    Conv down;  // k3 stride 2, one zero position on the right
  };
  struct Up {
    Block b0, b1;
    Conv up;  // transposed k4 stride 2 padding 1
  };
  struct Work;  // forward's pointers into the scratch
  struct Mode {  // the numeric mode of a forward call
    bool fast = false;
    uint16_t* half = nullptr;  // [kMaxRows][row_floats_] bfloat16 scratch for AMX convolutions
  };
  size_t carve(float* base, Work* w) const;

  const NamedTensor& find(const std::vector<NamedTensor>& tensors, const std::string& name) const;
  PackedDense linear(const std::vector<NamedTensor>& t, const std::string& p, int in, int out) const;
  Conv conv(const std::vector<NamedTensor>& t, const std::string& p, int in, int out, int kernel) const;
  Conv up_conv(const std::vector<NamedTensor>& t, const std::string& p, int channels) const;
  FilmConv film_conv(const std::vector<NamedTensor>& t, const std::string& p, int in, int out);
  Block block(const std::vector<NamedTensor>& t, const std::string& p, int in, int out);
  // fn(film) for every FiLM layer, in the order of the forward pass (no allocation).
  template <class Fn>
  void each_film(Fn fn) const;

  // y = conv(x) over every row, x and y [rows][row_floats_] in the padded layout; length: of x.
  void conv_forward(const Conv& c, int rows, const float* x, int length, float* y, const Mode& m) const;
  void down_forward(const Conv& c, int rows, const float* x, int length, float* y, const Mode& m) const;  // -> L / 2
  void up_forward(const Conv& c, int rows, const float* x, int length, float* y, const Mode& m) const;    // -> 2 L
  // The bfloat16 copy of x's rows (length positions and the margins, ld channels) in m.half when
  // the fast mode runs layer d on AMX tiles, else nullptr.
  const uint16_t* amx_input(const PackedDense& d, int rows, const float* x, int length, size_t ld, const Mode& m) const;
  // For rows r < rows and output positions p < positions: y + r row_floats_ + y_at + p ldy =
  // d(window p of row r), window p the d.in inputs from x + r row_floats_ + x_at + p step (from h,
  // the rows in bfloat16, when given: AMX tiles, two rows sharing each weight tile).
  void conv_rows(const PackedDense& d, int rows, const float* x, const uint16_t* h, size_t x_at, size_t step,
                 int positions, float* y, size_t y_at, size_t ldy, bool fast) const;
  // GroupNorm (and FiLM from film_rows[r] + film_at, when given), then SiLU if asked, in place.
  void norm_silu(int rows, float* x, int channels, int length, const float* gamma, const float* beta,
                 const float* const* film_rows, size_t film_at, float* affine, bool apply_silu) const;
  void block_forward(const Block& b, const Work& w, int rows, const float* x, int length, float* out,
                     float* t1, float* t3, const float* const* film_rows, const Mode& m) const;

  int horizon_ = 0, dim_ = 0, in_channels_ = 0, out_channels_ = 0, context_ = 0, embed_ = 0;
  PackedDense time0_, time2_, embed_layers_[2][2];
  std::vector<Level> down_;
  Block middle0_, middle1_;
  std::vector<Up> up_;
  Conv head0_, head3_;
  std::vector<float> head_gamma_, head_beta_;
  size_t row_floats_ = 0;   // one row's activation buffer: the largest (L + 4) ldc
  size_t kept_floats_ = 0;  // one row's kept level outputs, [L][ldc] each
  size_t ld_context_ = 0, ld_hidden_ = 0, widest_ = 0, film_floats_ = 0;
  size_t scratch_floats_ = 0;
};

}  // namespace mpd::cpu
