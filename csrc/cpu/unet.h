// The unet family on the CPU backend: the authors' temporal U-Net with FiLM (design section 1,
// python/mpdiffuser/models/unet.py is its specification), one row (candidate) at a time.
//
// Activations are channel-major [C, L]; every convolution sums over input channel, then kernel
// tap, in index order, vectorized over positions, so a row's result does not depend on the other
// rows, the thread or the batch it runs in.
#pragma once

#include <cstddef>
#include <vector>

#include "core/model_file.h"

namespace mpd::cpu {

class CpuUnet {
 public:
  CpuUnet() = default;
  // The network `net` ("planner": D channels in and out; "dynamics": D in, dx out) of a unet
  // model file; copies its weights.
  CpuUnet(const ModelConfig& config, const std::vector<NamedTensor>& tensors, const char* net);

  bool empty() const { return out_channels_ == 0; }
  int out_channels() const { return out_channels_; }
  size_t scratch_floats() const { return scratch_floats_; }  // forward's scratch, per call

  // out [H, out_channels] = unet(window [H, in_channels] row-major, level t = k - 1, x0 [dx],
  // cond [cond_dim]); scratch: scratch_floats() floats, not shared with a concurrent call.
  void forward(const float* window, int t, const float* x0, const float* cond, float* out, float* scratch) const;

 private:
  struct Linear {
    int in = 0, out = 0;
    size_t w = 0, b = 0;  // offsets into weights_: [out, in], [out]
    size_t packed = 0, packed_bias = 0;  // into packed_: [in][out padded to kVec], [out padded]
  };
  struct Conv {
    int in = 0, out = 0, kernel = 0;
    size_t w = 0, b = 0;  // [out, in, kernel] ([in, out, kernel] for the transposed conv), [out]
    // into packed_, stride-1 convolutions only: [in][kernel][out padded to kVec], [out padded]
    size_t packed = 0, packed_bias = 0;
  };
  struct FilmConv {
    Conv conv;
    size_t gamma = 0, beta = 0;  // GroupNorm affine [out]
    Linear film0, film2;         // context -> context -> 2 out
  };
  struct Block {
    FilmConv first, second;
    bool has_skip = false;
    Conv skip;  // k1, when the channel count changes
  };
  struct Level {
    Block b0, b1;
    bool has_down = false;
    Conv down;  // k3 stride 2, one zero column on the right
  };
  struct Up {
    Block b0, b1;
    Conv up;  // transposed k4 stride 2 padding 1
  };

  size_t take(const std::vector<NamedTensor>& tensors, const std::string& name);
  void pack(size_t w, size_t b, int in, int out, int kernel, size_t* packed, size_t* packed_bias);
  Linear linear(const std::vector<NamedTensor>& t, const std::string& p, int in, int out);
  // packed: repack for conv_forward (stride 1); the strided convolutions read weights_ as stored.
  Conv conv(const std::vector<NamedTensor>& t, const std::string& p, int in, int out, int kernel, bool packed = true);
  FilmConv film_conv(const std::vector<NamedTensor>& t, const std::string& p, int in, int out);
  Block block(const std::vector<NamedTensor>& t, const std::string& p, int in, int out);

  void dense(const Linear& l, const float* x, float* y, bool silu) const;
  // stride 1, "same"; pad: scratch of in * (length + kernel - 1) floats
  void conv_forward(const Conv& c, const float* x, int length, float* y, float* pad) const;
  void down_forward(const Conv& c, const float* x, int length, float* y) const;  // length -> length / 2
  void up_forward(const Conv& c, const float* x, int length, float* y) const;    // length -> 2 length
  void norm_film(const FilmConv& f, const float* context, float* x, int length, float* film) const;
  // out = block(x); work: 3 buffers of max_cl_ floats (out is one of them).
  void block_forward(const Block& b, const float* context, const float* x, int length, float* out, float* t1,
                     float* t3, float* film, float* pad) const;

  std::vector<float> weights_;
  std::vector<float> packed_;  // the stride-1 convolutions' weights, output channels innermost
  int horizon_ = 0, dim_ = 0, in_channels_ = 0, out_channels_ = 0, context_ = 0;
  Linear time0_, time2_, embed_[2][2];
  std::vector<Level> down_;
  Block middle0_, middle1_;
  std::vector<Up> up_;
  Conv head0_, head3_;
  size_t head_gamma_ = 0, head_beta_ = 0;
  std::vector<int> level_channels_;  // d_i
  size_t max_cl_ = 0;                // floats of the largest activation [C, L]
  size_t kept_floats_ = 0;           // floats of every level's kept output
  size_t vectors_ = 0;  // floats of the sinusoid, embedding and FiLM vectors after the context
  size_t scratch_floats_ = 0;
};

}  // namespace mpd::cpu
