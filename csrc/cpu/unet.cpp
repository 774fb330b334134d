// The unet family on the CPU backend; see unet.h.
#include "cpu/unet.h"

#include "cpu/vec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace mpd::cpu {

namespace {

constexpr int kGroups = 8;
constexpr float kNormEps = 1e-6f;

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace

size_t CpuUnet::take(const std::vector<NamedTensor>& tensors, const std::string& name) {
  for (const NamedTensor& t : tensors) {
    if (t.name == name) {
      const size_t at = weights_.size();
      weights_.insert(weights_.end(), t.data.begin(), t.data.end());
      return at;
    }
  }
  throw std::invalid_argument("unet tensor '" + name + "' is missing");  // the reader checked: not reached
}

// Weights [out, in, kernel] (a Linear is kernel 1) -> packed_ as [in][kernel][out_padded], zeros
// past out, and the bias padded alike: conv_forward and dense accumulate kVec outputs per vector.
void CpuUnet::pack(size_t w, size_t b, int in, int out, int kernel, size_t* packed, size_t* packed_bias) {
  const int out_padded = (out + kVec - 1) / kVec * kVec;
  *packed = packed_.size();
  packed_.resize(packed_.size() + static_cast<size_t>(in) * kernel * out_padded, 0.0f);
  for (int o = 0; o < out; ++o) {
    for (int i = 0; i < in; ++i) {
      for (int j = 0; j < kernel; ++j) {
        packed_[*packed + (static_cast<size_t>(i) * kernel + j) * out_padded + o] =
            weights_[w + (static_cast<size_t>(o) * in + i) * kernel + j];
      }
    }
  }
  *packed_bias = packed_.size();
  packed_.resize(packed_.size() + static_cast<size_t>(out_padded), 0.0f);
  for (int o = 0; o < out; ++o) packed_[*packed_bias + o] = weights_[b + o];
}

CpuUnet::Linear CpuUnet::linear(const std::vector<NamedTensor>& t, const std::string& p, int in, int out) {
  Linear l;
  l.in = in;
  l.out = out;
  l.w = take(t, p + ".weight");
  l.b = take(t, p + ".bias");
  pack(l.w, l.b, in, out, 1, &l.packed, &l.packed_bias);
  return l;
}

CpuUnet::Conv CpuUnet::conv(const std::vector<NamedTensor>& t, const std::string& p, int in, int out, int kernel,
                            bool packed) {
  Conv c;
  c.in = in;
  c.out = out;
  c.kernel = kernel;
  c.w = take(t, p + ".weight");
  c.b = take(t, p + ".bias");
  if (packed) pack(c.w, c.b, in, out, kernel, &c.packed, &c.packed_bias);  // for conv_forward (stride 1)
  return c;
}

CpuUnet::FilmConv CpuUnet::film_conv(const std::vector<NamedTensor>& t, const std::string& p, int in, int out) {
  FilmConv f;
  f.conv = conv(t, p + ".conv", in, out, 5);
  f.gamma = take(t, p + ".norm.weight");
  f.beta = take(t, p + ".norm.bias");
  f.film0 = linear(t, p + ".film.0", context_, context_);
  f.film2 = linear(t, p + ".film.2", context_, 2 * out);
  return f;
}

CpuUnet::Block CpuUnet::block(const std::vector<NamedTensor>& t, const std::string& p, int in, int out) {
  Block b;
  b.first = film_conv(t, p + ".first", in, out);
  b.second = film_conv(t, p + ".second", out, out);
  b.has_skip = in != out;
  if (b.has_skip) b.skip = conv(t, p + ".skip", in, out, 1);
  return b;
}

CpuUnet::CpuUnet(const ModelConfig& c, const std::vector<NamedTensor>& tensors, const char* net_name) {
  const std::string net(net_name);
  const std::string p = net + ".";
  horizon_ = c.horizon;
  dim_ = c.unet_dim;
  in_channels_ = c.window_dim();
  out_channels_ = net == "planner" ? c.window_dim() : c.state_dim;
  const int e = c.unet_embed_dim;
  context_ = dim_ + 2 * e;
  time0_ = linear(tensors, p + "time.0", dim_, 4 * dim_);
  time2_ = linear(tensors, p + "time.2", 4 * dim_, dim_);
  const int condition_dims[2] = {c.state_dim, c.cond_dim};
  for (int i = 0; i < 2; ++i) {
    embed_[i][0] = linear(tensors, p + "embeds." + std::to_string(i) + ".0", condition_dims[i], 4 * e);
    embed_[i][1] = linear(tensors, p + "embeds." + std::to_string(i) + ".2", 4 * e, e);
  }
  for (int m : c.unet_mults) level_channels_.push_back(dim_ * m);
  const size_t levels = level_channels_.size();
  int channels = in_channels_, length = horizon_;
  size_t max_cl = static_cast<size_t>(channels) * length;
  int max_channels = channels;
  for (size_t i = 0; i < levels; ++i) {
    const int d = level_channels_[i];
    const std::string level = p + "down." + std::to_string(i) + ".";
    Level l;
    l.b0 = block(tensors, level + "0", channels, d);
    l.b1 = block(tensors, level + "1", d, d);
    l.has_down = i + 1 < levels;
    if (l.has_down) l.down = conv(tensors, level + "2.conv", d, d, 3, false);
    down_.push_back(l);
    max_cl = std::max(max_cl, static_cast<size_t>(d) * length);
    max_channels = std::max(max_channels, d);
    kept_floats_ += static_cast<size_t>(d) * length;  // this level's output, kept for the up path
    channels = d;
    if (l.has_down) length /= 2;
  }
  middle0_ = block(tensors, p + "middle.0", channels, channels);
  middle1_ = block(tensors, p + "middle.1", channels, channels);
  for (size_t j = 0; j + 1 < levels; ++j) {
    const int d = level_channels_[levels - 2 - j], skip = level_channels_[levels - 1 - j];
    const std::string level = p + "up." + std::to_string(j) + ".";
    Up u;
    u.b0 = block(tensors, level + "0", channels + skip, d);
    u.b1 = block(tensors, level + "1", d, d);
    u.up = conv(tensors, level + "2", d, d, 4, false);
    up_.push_back(u);
    max_cl = std::max(max_cl, static_cast<size_t>(channels + skip) * length);
    max_channels = std::max(max_channels, channels + skip);
    length *= 2;
    max_cl = std::max(max_cl, static_cast<size_t>(d) * length);
    channels = d;
  }
  head0_ = conv(tensors, p + "head.0", channels, dim_, 5);
  head_gamma_ = take(tensors, p + "head.1.weight");
  head_beta_ = take(tensors, p + "head.1.bias");
  head3_ = conv(tensors, p + "head.3", dim_, out_channels_, 1);
  max_cl = std::max(max_cl, static_cast<size_t>(dim_) * horizon_);
  max_channels = std::max(max_channels, dim_);
  max_cl_ = max_cl;
  // Scratch: 4 activation buffers, the kept outputs of every level, the context and FiLM vectors.
  // The context, then the sinusoid (dim) and one region for the embeddings' hidden layer (4 dim or
  // 4 e) or a FiLM's hidden layer and [scale, bias] (context + 2 C).
  const int widest = *std::max_element(level_channels_.begin(), level_channels_.end());
  const size_t vectors = static_cast<size_t>(context_) + static_cast<size_t>(dim_) +
                         static_cast<size_t>(std::max({4 * dim_, 4 * e, context_ + 2 * widest}));
  vectors_ = vectors - static_cast<size_t>(context_);  // after the context
  scratch_floats_ = 4 * max_cl_ + kept_floats_ + vectors + max_cl_ + 4 * static_cast<size_t>(max_channels);
}

// y = x W^T + b (then SiLU), kVec outputs per vector, summed over the inputs in index order.
void CpuUnet::dense(const Linear& l, const float* x, float* y, bool apply_silu) const {
  const int out_padded = (l.out + kVec - 1) / kVec * kVec;
  const float* w = packed_.data() + l.packed;
  const float* b = packed_.data() + l.packed_bias;
  float lanes[kVec];
  for (int ob = 0; ob < out_padded; ob += kVec) {
    vfloat acc = load(b + ob);
    for (int i = 0; i < l.in; ++i) acc += load(w + static_cast<size_t>(i) * out_padded + ob) * x[i];
    store(lanes, acc);
    const int outs = std::min(kVec, l.out - ob);
    for (int q = 0; q < outs; ++q) y[ob + q] = apply_silu ? silu(lanes[q]) : lanes[q];
  }
}

// y[o, l] = b[o] + sum_i sum_j w[o, i, j] x[i, l + j - k/2], zero outside [0, length). The input
// is first copied with k/2 zero columns on each side (pad, [in, length + k - 1]). The weights
// were repacked at load as [in][k][out_padded] (packed_), so a vector of kVec output channels
// accumulates in registers for up to 16 positions at a time, over (i, j) in index order.
void CpuUnet::conv_forward(const Conv& c, const float* x, int length, float* y, float* pad) const {
  const int half = c.kernel / 2, K = c.kernel, padded_length = length + K - 1;
  for (int i = 0; i < c.in; ++i) {
    float* row = pad + static_cast<size_t>(i) * padded_length;
    for (int j = 0; j < half; ++j) row[j] = row[padded_length - 1 - j] = 0.0f;
    std::memcpy(row + half, x + static_cast<size_t>(i) * length, sizeof(float) * static_cast<size_t>(length));
  }
  const int out_padded = (c.out + kVec - 1) / kVec * kVec;
  const float* wp = packed_.data() + c.packed;
  const float* bp = packed_.data() + c.packed_bias;
  constexpr int kPositions = 16;
  vfloat acc[kPositions];
  float lanes[kVec];
  for (int l0 = 0; l0 < length; l0 += kPositions) {
    const int positions = std::min(kPositions, length - l0);
    for (int ob = 0; ob < out_padded; ob += kVec) {
      const vfloat bias = load(bp + ob);
      for (int l = 0; l < positions; ++l) acc[l] = bias;
      for (int i = 0; i < c.in; ++i) {
        const float* in = pad + static_cast<size_t>(i) * padded_length + l0;
        for (int j = 0; j < K; ++j) {
          const vfloat w = load(wp + (static_cast<size_t>(i) * K + j) * out_padded + ob);
          for (int l = 0; l < positions; ++l) acc[l] += w * in[l + j];
        }
      }
      const int outs = std::min(kVec, c.out - ob);
      for (int l = 0; l < positions; ++l) {
        store(lanes, acc[l]);
        for (int q = 0; q < outs; ++q) y[static_cast<size_t>(ob + q) * length + l0 + l] = lanes[q];
      }
    }
  }
}

// Stride 2, kernel 3, input padded with one zero column on the right: y[o, l] reads x[., 2l + j].
void CpuUnet::down_forward(const Conv& c, const float* x, int length, float* y) const {
  const float* w = weights_.data() + c.w;
  const float* b = weights_.data() + c.b;
  const int half_length = length / 2;
  for (int o = 0; o < c.out; ++o) {
    float* out = y + static_cast<size_t>(o) * half_length;
    for (int l = 0; l < half_length; ++l) out[l] = b[o];
    for (int i = 0; i < c.in; ++i) {
      const float* in = x + static_cast<size_t>(i) * length;
      const float* taps = w + (static_cast<size_t>(o) * c.in + i) * 3;
      for (int j = 0; j < 3; ++j) {
        for (int l = 0; l < half_length; ++l) {
          const int src = 2 * l + j;
          if (src < length) out[l] += taps[j] * in[src];
        }
      }
    }
  }
}

// Transposed conv, kernel 4, stride 2, padding 1: y[o, 2l + j - 1] += x[i, l] w[i, o, j].
void CpuUnet::up_forward(const Conv& c, const float* x, int length, float* y) const {
  const float* w = weights_.data() + c.w;
  const float* b = weights_.data() + c.b;
  const int out_length = 2 * length;
  for (int o = 0; o < c.out; ++o) {
    float* out = y + static_cast<size_t>(o) * out_length;
    for (int m = 0; m < out_length; ++m) out[m] = b[o];
    for (int i = 0; i < c.in; ++i) {
      const float* in = x + static_cast<size_t>(i) * length;
      const float* taps = w + (static_cast<size_t>(i) * c.out + o) * 4;
      for (int l = 0; l < length; ++l) {
        for (int j = 0; j < 4; ++j) {
          const int m = 2 * l + j - 1;
          if (m >= 0 && m < out_length) out[m] += in[l] * taps[j];
        }
      }
    }
  }
}

// GroupNorm (8 groups, biased variance) over x [C, length] in place, with its affine; then, when
// given, FiLM (x * scale + shift per channel) and SiLU.
namespace {

void group_norm(float* x, int C, int length, const float* gamma, const float* beta, const float* scale,
                const float* shift, bool apply_silu) {
  const int per_group = C / kGroups;
  for (int g = 0; g < kGroups; ++g) {
    float* xs = x + static_cast<size_t>(g) * per_group * length;
    const size_t n = static_cast<size_t>(per_group) * length;
    double sum = 0.0;
    for (size_t e = 0; e < n; ++e) sum += xs[e];
    const float mean = static_cast<float>(sum / static_cast<double>(n));
    double sq = 0.0;
    for (size_t e = 0; e < n; ++e) sq += static_cast<double>(xs[e] - mean) * (xs[e] - mean);
    const float inv = 1.0f / std::sqrt(static_cast<float>(sq / static_cast<double>(n)) + kNormEps);
    for (int ch = 0; ch < per_group; ++ch) {
      const int channel = g * per_group + ch;
      const float a = gamma[channel] * inv, b = beta[channel];
      const float s = scale ? scale[channel] : 1.0f, t = shift ? shift[channel] : 0.0f;
      float* row = xs + static_cast<size_t>(ch) * length;
      for (int l = 0; l < length; ++l) {
        float v = (row[l] - mean) * a + b;
        if (scale) v = v * s + t;
        row[l] = apply_silu ? silu(v) : v;
      }
    }
  }
}

}  // namespace

// GroupNorm and FiLM of a FilmConv, [scale, shift] = film2(SiLU(film0(context))). film: scratch of
// context + 2 C floats.
void CpuUnet::norm_film(const FilmConv& f, const float* context, float* x, int length, float* film) const {
  const int C = f.conv.out;
  float* hidden = film;
  float* scale_shift = film + f.film0.out;
  dense(f.film0, context, hidden, true);
  dense(f.film2, hidden, scale_shift, false);
  group_norm(x, C, length, weights_.data() + f.gamma, weights_.data() + f.beta, scale_shift, scale_shift + C, false);
}

void CpuUnet::block_forward(const Block& b, const float* context, const float* x, int length, float* out,
                            float* t1, float* t3, float* film, float* pad) const {
  conv_forward(b.first.conv, x, length, t1, pad);
  norm_film(b.first, context, t1, length, film);
  conv_forward(b.second.conv, t1, length, out, pad);
  norm_film(b.second, context, out, length, film);
  const size_t n = static_cast<size_t>(b.second.conv.out) * length;
  const float* skip = x;
  if (b.has_skip) {
    conv_forward(b.skip, x, length, t3, pad);
    skip = t3;
  }
  for (size_t e = 0; e < n; ++e) out[e] = silu(out[e] + skip[e]);
}

void CpuUnet::forward(const float* window, int t, const float* x0, const float* cond, float* out,
                      float* scratch) const {
  const int H = horizon_;
  float* buf[4];
  for (int i = 0; i < 4; ++i) buf[i] = scratch + static_cast<size_t>(i) * max_cl_;
  float* kept = scratch + 4 * max_cl_;
  float* context = kept + kept_floats_;
  float* vec = context + context_;  // embedding temporaries, then FiLM scratch
  // Context: [time(t), embed(x_0), embed(c)].
  const int half = dim_ / 2;
  for (int j = 0; j < half; ++j) {
    const float freq = std::exp(static_cast<float>(j) * (-std::log(10000.0f) / static_cast<float>(half - 1)));
    const float angle = static_cast<float>(t) * freq;
    vec[j] = std::sin(angle);
    vec[half + j] = std::cos(angle);
  }
  float* hidden = vec + dim_;
  dense(time0_, vec, hidden, true);
  dense(time2_, hidden, context, false);
  const float* inputs[2] = {x0, cond};
  int offset = dim_;
  for (int i = 0; i < 2; ++i) {
    dense(embed_[i][0], inputs[i], hidden, true);
    dense(embed_[i][1], hidden, context + offset, false);
    offset += embed_[i][1].out;
  }
  float* film = hidden;  // the embeddings are done: the FiLM vectors reuse the space
  float* pad = vec + vectors_;  // a convolution's zero-padded input
  // The window [H, C_in] -> channel-major [C_in, H].
  float* x = buf[0];
  for (int l = 0; l < H; ++l) {
    for (int ch = 0; ch < in_channels_; ++ch) x[static_cast<size_t>(ch) * H + l] = window[l * in_channels_ + ch];
  }
  int length = H;
  float* kept_at[8];  // the reader allows 8 levels at most; no allocation in a plan
  int kept_count = 0;
  float* kept_cursor = kept;
  for (const Level& level : down_) {
    block_forward(level.b0, context, x, length, buf[1], buf[2], buf[3], film, pad);
    block_forward(level.b1, context, buf[1], length, buf[0], buf[2], buf[3], film, pad);
    const size_t n = static_cast<size_t>(level.b1.second.conv.out) * length;
    std::memcpy(kept_cursor, buf[0], n * sizeof(float));
    kept_at[kept_count++] = kept_cursor;
    kept_cursor += n;
    if (level.has_down) {
      down_forward(level.down, buf[0], length, buf[1]);
      std::swap(buf[0], buf[1]);
      length /= 2;
    }
    x = buf[0];
  }
  block_forward(middle0_, context, x, length, buf[1], buf[2], buf[3], film, pad);
  block_forward(middle1_, context, buf[1], length, buf[0], buf[2], buf[3], film, pad);
  int channels = middle1_.second.conv.out;
  for (const Up& up : up_) {
    // [x; kept] along channels (x first), both [., length].
    const int skip_channels = up.b0.first.conv.in - channels;
    float* joined = buf[1];
    std::memcpy(joined, buf[0], static_cast<size_t>(channels) * length * sizeof(float));
    std::memcpy(joined + static_cast<size_t>(channels) * length, kept_at[--kept_count],
                static_cast<size_t>(skip_channels) * length * sizeof(float));
    block_forward(up.b0, context, joined, length, buf[0], buf[2], buf[3], film, pad);
    block_forward(up.b1, context, buf[0], length, buf[1], buf[2], buf[3], film, pad);
    up_forward(up.up, buf[1], length, buf[0]);
    length *= 2;
    channels = up.up.out;
  }
  // Head: conv k5 -> GroupNorm -> SiLU -> conv k1.
  conv_forward(head0_, buf[0], length, buf[1], pad);
  group_norm(buf[1], head0_.out, length, weights_.data() + head_gamma_, weights_.data() + head_beta_, nullptr,
             nullptr, true);
  conv_forward(head3_, buf[1], length, buf[2], pad);
  // Channel-major [C_out, H] -> the output rows [H, C_out].
  for (int l = 0; l < H; ++l) {
    for (int ch = 0; ch < out_channels_; ++ch) out[l * out_channels_ + ch] = buf[2][static_cast<size_t>(ch) * H + l];
  }
}

}  // namespace mpd::cpu
