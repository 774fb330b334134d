// The unet family on the CPU backend; see unet.h.
#include "cpu/unet.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cpu/amx.h"
#include "cpu/vec.h"

namespace mpd::cpu {

namespace {

constexpr int kGroups = 8;
constexpr float kNormEps = 1e-6f;
constexpr int kMargin = 2;  // zero positions on each side of a row: half the widest kernel (5)

size_t ldc(int channels) { return static_cast<size_t>(padded(channels)); }

// Zeroes the margins of every row of a padded-layout buffer holding `length` positions.
void zero_margins(float* x, int rows, size_t row_floats, int length, size_t ld) {
  for (int r = 0; r < rows; ++r) {
    float* row = x + static_cast<size_t>(r) * row_floats;
    std::memset(row, 0, sizeof(float) * kMargin * ld);
    std::memset(row + (static_cast<size_t>(kMargin) + length) * ld, 0, sizeof(float) * kMargin * ld);
  }
}

// x[e] = SiLU(x[e] + y[e]) for e < n (n a multiple of kVec).
void add_silu(float* x, const float* y, size_t n) {
  for (size_t e = 0; e < n; e += kVec) store(x + e, vsilu(load(x + e) + load(y + e)));
}

}  // namespace

// The forward's scratch, carved in the constructor's order.
struct CpuUnet::Work {
  float* buf[4];    // [kMaxRows][row_floats_] activations
  float* kept;      // [kMaxRows][kept_floats_]
  float* context;   // [kMaxRows][ld_context_]
  float* hidden;    // [kMaxRows][ld_hidden_]
  float* hidden2;   // [kMaxRows][ld_hidden_]
  float* film;      // [kMaxRows][film_floats_]: the FiLM rows of a forward given no precomputed ones
  float* cond;      // [kMaxRows][cond_dim]
  float* affine;    // [5 * widest ldc]: a row's GroupNorm scale, shift and group mean per channel, double sums
  float* sinusoid;  // [kMaxRows][dim]
  float* half;      // [kMaxRows][row_floats_ / 2]: bfloat16 activations (the fast mode's AMX convolutions)
};

const NamedTensor& CpuUnet::find(const std::vector<NamedTensor>& tensors, const std::string& name) const {
  for (const NamedTensor& t : tensors) {
    if (t.name == name) return t;
  }
  throw std::invalid_argument("unet tensor '" + name + "' is missing");  // the reader checked: not reached
}

PackedDense CpuUnet::linear(const std::vector<NamedTensor>& t, const std::string& p, int in, int out) const {
  return pack_dense(find(t, p + ".weight").data.data(), find(t, p + ".bias").data.data(), in, out);
}

// Stride 1, "same": W [out, in, K] -> the dense layer over K positions x ldc(in) channels,
// input column j ldc(in) + i = w[o, i, j] (zero past in).
CpuUnet::Conv CpuUnet::conv(const std::vector<NamedTensor>& t, const std::string& p, int in, int out,
                            int kernel) const {
  const std::vector<float>& w = find(t, p + ".weight").data;
  const size_t cols = static_cast<size_t>(kernel) * ldc(in);
  std::vector<float> dense(static_cast<size_t>(out) * cols, 0.0f);
  for (int o = 0; o < out; ++o) {
    for (int i = 0; i < in; ++i) {
      for (int j = 0; j < kernel; ++j) {
        dense[static_cast<size_t>(o) * cols + static_cast<size_t>(j) * ldc(in) + static_cast<size_t>(i)] =
            w[(static_cast<size_t>(o) * in + i) * kernel + j];
      }
    }
  }
  Conv c;
  c.in = in;
  c.out = out;
  c.kernel = kernel;
  c.gemm = pack_dense(dense.data(), find(t, p + ".bias").data.data(), static_cast<int>(cols), out);
  return c;
}

// Transposed, kernel 4, stride 2, padding 1 (W [in, out, 4]): output 2a = x[a - 1] w[., ., 3] +
// x[a] w[., ., 1]; output 2a + 1 = x[a] w[., ., 2] + x[a + 1] w[., ., 0]. Two dense layers
// over 2 positions each, even and odd.
CpuUnet::Conv CpuUnet::up_conv(const std::vector<NamedTensor>& t, const std::string& p, int channels) const {
  const std::vector<float>& w = find(t, p + ".weight").data;
  const float* bias = find(t, p + ".bias").data.data();
  const size_t ld = ldc(channels), cols = 2 * ld;
  const int d = channels;
  auto pack = [&](int first_tap, int second_tap) {
    std::vector<float> dense(static_cast<size_t>(d) * cols, 0.0f);
    for (int o = 0; o < d; ++o) {
      for (int i = 0; i < d; ++i) {
        const size_t at = (static_cast<size_t>(i) * d + o) * 4;
        dense[static_cast<size_t>(o) * cols + i] = w[at + first_tap];
        dense[static_cast<size_t>(o) * cols + ld + i] = w[at + second_tap];
      }
    }
    return pack_dense(dense.data(), bias, static_cast<int>(cols), d);
  };
  Conv c;
  c.in = c.out = d;
  c.kernel = 4;
  c.gemm = pack(3, 1);
  c.odd = pack(2, 0);
  return c;
}

CpuUnet::FilmConv CpuUnet::film_conv(const std::vector<NamedTensor>& t, const std::string& p, int in, int out) {
  FilmConv f;
  f.conv = conv(t, p + ".conv", in, out, 5);
  f.gamma = find(t, p + ".norm.weight").data;
  f.beta = find(t, p + ".norm.bias").data;
  f.film0 = linear(t, p + ".film.0", context_, context_);
  f.film2 = linear(t, p + ".film.2", context_, 2 * out);
  f.film_at = film_floats_;
  film_floats_ += static_cast<size_t>(f.film2.out_padded);
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
  embed_ = c.unet_embed_dim;
  context_ = dim_ + 2 * embed_;
  time0_ = linear(tensors, p + "time.0", dim_, 4 * dim_);
  time2_ = linear(tensors, p + "time.2", 4 * dim_, dim_);
  const int condition_dims[2] = {c.state_dim, c.cond_dim};
  for (int i = 0; i < 2; ++i) {
    embed_layers_[i][0] = linear(tensors, p + "embeds." + std::to_string(i) + ".0", condition_dims[i], 4 * embed_);
    embed_layers_[i][1] = linear(tensors, p + "embeds." + std::to_string(i) + ".2", 4 * embed_, embed_);
  }
  std::vector<int> dims;
  for (int m : c.unet_mults) dims.push_back(dim_ * m);
  const size_t levels = dims.size();
  int channels = in_channels_, length = horizon_;
  size_t widest = ldc(channels);  // the widest ldc of any activation
  auto grow = [&](int ch, int len) {
    widest = std::max(widest, ldc(ch));
    row_floats_ = std::max(row_floats_, (static_cast<size_t>(len) + 2 * kMargin) * ldc(ch));
  };
  grow(channels, length);
  for (size_t i = 0; i < levels; ++i) {
    const std::string level = p + "down." + std::to_string(i) + ".";
    Level l;
    l.b0 = block(tensors, level + "0", channels, dims[i]);
    l.b1 = block(tensors, level + "1", dims[i], dims[i]);
    l.has_down = i + 1 < levels;
    if (l.has_down) l.down = conv(tensors, level + "2.conv", dims[i], dims[i], 3);  // read two positions apart
    down_.push_back(std::move(l));
    grow(dims[i], length);
    kept_floats_ += static_cast<size_t>(length) * ldc(dims[i]);  // this level's output, for the up path
    channels = dims[i];
    if (i + 1 < levels) length /= 2;
  }
  middle0_ = block(tensors, p + "middle.0", channels, channels);
  middle1_ = block(tensors, p + "middle.1", channels, channels);
  for (size_t j = 0; j + 1 < levels; ++j) {
    const int d = dims[levels - 2 - j], skip = dims[levels - 1 - j];
    const std::string level = p + "up." + std::to_string(j) + ".";
    Up u;
    u.b0 = block(tensors, level + "0", channels + skip, d);
    u.b1 = block(tensors, level + "1", d, d);
    u.up = up_conv(tensors, level + "2", d);
    up_.push_back(std::move(u));
    grow(channels + skip, length);
    length *= 2;
    grow(d, length);
    channels = d;
  }
  head0_ = conv(tensors, p + "head.0", channels, dim_, 5);
  head_gamma_ = find(tensors, p + "head.1.weight").data;
  head_beta_ = find(tensors, p + "head.1.bias").data;
  head3_ = conv(tensors, p + "head.3", dim_, out_channels_, 1);
  grow(dim_, horizon_);
  grow(out_channels_, horizon_);
  ld_context_ = ldc(context_);
  ld_hidden_ = ldc(std::max({4 * dim_, 4 * embed_, context_}));
  widest_ = widest;
  Work sizes;
  scratch_floats_ = carve(nullptr, &sizes);
}

const uint16_t* CpuUnet::amx_input(const PackedDense& d, int rows, const float* x, int length, size_t ld,
                                   const Mode& m) const {
  if (!m.fast || !amx_fits(d) || !amx_available()) return nullptr;
  const size_t n = (static_cast<size_t>(length) + 2 * kMargin) * ld;
  for (int r = 0; r < rows; ++r) {
    to_bf16(x + static_cast<size_t>(r) * row_floats_, n, m.half + static_cast<size_t>(r) * row_floats_);
  }
  return m.half;
}

void CpuUnet::conv_rows(const PackedDense& d, int rows, const float* x, const uint16_t* h, size_t x_at,
                        size_t step, int positions, float* y, size_t y_at, size_t ldy, bool fast) const {
  for (int r = 0; r < rows; r += h == nullptr ? 1 : 2) {
    const size_t row = static_cast<size_t>(r) * row_floats_;
    if (h == nullptr) {
      dense_forward(d, x + row + x_at, step, positions, Epilogue::kLinear, nullptr, 0, y + row + y_at, ldy, fast);
      continue;
    }
    const int batches = std::min(2, rows - r);
    for (int p0 = 0; p0 < positions; p0 += 16) {
      const uint16_t* a[2];
      float* out[2];
      for (int b = 0; b < batches; ++b) {
        const size_t at = row + static_cast<size_t>(b) * row_floats_;
        a[b] = h + at + x_at + static_cast<size_t>(p0) * step;
        out[b] = y + at + y_at + static_cast<size_t>(p0) * ldy;
      }
      amx_dense(d, batches, a, step, std::min(16, positions - p0), out, ldy);
    }
  }
}

void CpuUnet::conv_forward(const Conv& c, int rows, const float* x, int length, float* y, const Mode& m) const {
  const size_t ld_in = ldc(c.in), ld_out = ldc(c.out);
  const int half = c.kernel / 2;
  const uint16_t* h = amx_input(c.gemm, rows, x, length, ld_in, m);
  conv_rows(c.gemm, rows, x, h, static_cast<size_t>(kMargin - half) * ld_in, ld_in, length, y, kMargin * ld_out, ld_out,
            m.fast);
  zero_margins(y, rows, row_floats_, length, ld_out);
}

// Output l reads positions 2l, 2l + 1, 2l + 2 (the last one past the end reads the zero margin).
void CpuUnet::down_forward(const Conv& c, int rows, const float* x, int length, float* y, const Mode& m) const {
  const size_t ld = ldc(c.in);
  const uint16_t* h = amx_input(c.gemm, rows, x, length, ld, m);
  conv_rows(c.gemm, rows, x, h, kMargin * ld, 2 * ld, length / 2, y, kMargin * ld, ld, m.fast);
  zero_margins(y, rows, row_floats_, length / 2, ld);
}

void CpuUnet::up_forward(const Conv& c, int rows, const float* x, int length, float* y, const Mode& m) const {
  const size_t ld = ldc(c.in);
  const uint16_t* h = amx_input(c.gemm, rows, x, length, ld, m);  // both halves are packed alike
  if (h != nullptr && !amx_fits(c.odd)) h = nullptr;
  conv_rows(c.gemm, rows, x, h, (kMargin - 1) * ld, ld, length, y, kMargin * ld, 2 * ld, m.fast);
  conv_rows(c.odd, rows, x, h, kMargin * ld, ld, length, y, (kMargin + 1) * ld, 2 * ld, m.fast);
  zero_margins(y, rows, row_floats_, 2 * length, ld);
}

// GroupNorm (8 groups, biased variance, float64 sums), its affine, then, when film_rows is given,
// FiLM (h * scale + shift per channel; row r's [scale (C), shift (C)] at film_rows[r] + film_at);
// SiLU when asked.
// Folded per channel into h * a + b, zero on the padding channels. The sums run per channel over
// the positions (8 channels a vector), then over the group's channels in channel order.
void CpuUnet::norm_silu(int rows, float* x, int channels, int length, const float* gamma, const float* beta,
                        const float* const* film_rows, size_t film_at, float* affine, bool apply_silu) const {
  typedef float vf8 __attribute__((vector_size(32)));
  typedef double vd8 __attribute__((vector_size(64)));
  const size_t ld = ldc(channels);  // a multiple of 8
  const int per_group = channels / kGroups;
  float* a = affine;
  float* b = affine + ld;
  float* group_mean = affine + 2 * ld;                       // [ld] each channel's group mean
  unsigned char* acc = reinterpret_cast<unsigned char*>(affine + 3 * ld);  // [ld] doubles
  auto load8 = [](const float* p) { vf8 v; std::memcpy(&v, p, sizeof v); return v; };
  auto load_acc = [acc](size_t e) { vd8 v; std::memcpy(&v, acc + e * sizeof(double), sizeof v); return v; };
  auto store_acc = [acc](size_t e, vd8 v) { std::memcpy(acc + e * sizeof(double), &v, sizeof v); };
  auto group_total = [&](int g) {
    double total = 0.0;
    for (int ch = g * per_group; ch < (g + 1) * per_group; ++ch) {
      double v;
      std::memcpy(&v, acc + static_cast<size_t>(ch) * sizeof(double), sizeof v);
      total += v;
    }
    return total;
  };
  const double n = static_cast<double>(per_group) * length;
  for (int r = 0; r < rows; ++r) {
    float* xr = x + static_cast<size_t>(r) * row_floats_ + kMargin * ld;
    const float* f = film_rows ? film_rows[r] + film_at : nullptr;
    std::fill(a, a + 3 * ld, 0.0f);
    std::memset(acc, 0, ld * sizeof(double));
    for (int l = 0; l < length; ++l) {
      const float* row = xr + static_cast<size_t>(l) * ld;
      for (size_t e = 0; e < ld; e += 8) store_acc(e, load_acc(e) + __builtin_convertvector(load8(row + e), vd8));
    }
    float mean[kGroups];
    for (int g = 0; g < kGroups; ++g) {
      mean[g] = static_cast<float>(group_total(g) / n);
      std::fill(group_mean + g * per_group, group_mean + (g + 1) * per_group, mean[g]);
    }
    std::memset(acc, 0, ld * sizeof(double));
    for (int l = 0; l < length; ++l) {
      const float* row = xr + static_cast<size_t>(l) * ld;
      for (size_t e = 0; e < ld; e += 8) {
        const vd8 d = __builtin_convertvector(load8(row + e) - load8(group_mean + e), vd8);
        store_acc(e, load_acc(e) + d * d);
      }
    }
    for (int g = 0; g < kGroups; ++g) {
      const float inv = 1.0f / std::sqrt(static_cast<float>(group_total(g) / n) + kNormEps);
      for (int ch = g * per_group; ch < (g + 1) * per_group; ++ch) {
        const float s = f ? f[ch] : 1.0f, t = f ? f[channels + ch] : 0.0f;
        a[ch] = gamma[ch] * inv * s;
        b[ch] = (beta[ch] - mean[g] * gamma[ch] * inv) * s + t;
      }
    }
    for (int l = 0; l < length; ++l) {
      float* row = xr + static_cast<size_t>(l) * ld;
      for (size_t e = 0; e < ld; e += kVec) {
        const vfloat v = load(row + e) * load(a + e) + load(b + e);
        store(row + e, apply_silu ? vsilu(v) : v);
      }
    }
  }
}

void CpuUnet::block_forward(const Block& b, const Work& w, int rows, const float* x, int length, float* out,
                            float* t1, float* t3, const float* const* film_rows, const Mode& m) const {
  const FilmConv* films[2] = {&b.first, &b.second};
  for (int i = 0; i < 2; ++i) {
    const FilmConv& f = *films[i];
    conv_forward(f.conv, rows, i == 0 ? x : t1, length, i == 0 ? t1 : out, m);
    norm_silu(rows, i == 0 ? t1 : out, f.conv.out, length, f.gamma.data(), f.beta.data(), film_rows, f.film_at,
              w.affine, false);
  }
  const float* skip = x;
  if (b.has_skip) {
    conv_forward(b.skip, rows, x, length, t3, m);
    skip = t3;
  }
  const size_t ld = ldc(b.second.conv.out);
  for (int r = 0; r < rows; ++r) {
    const size_t at = static_cast<size_t>(r) * row_floats_ + kMargin * ld;
    add_silu(out + at, skip + at, static_cast<size_t>(length) * ld);
  }
}

// The scratch regions of Work in order from base (null: sizes only); returns the floats used.
size_t CpuUnet::carve(float* base, Work* w) const {
  const size_t R = kMaxRows;
  size_t at = 0;
  auto take = [&](size_t floats) {
    float* p = base ? base + at : nullptr;
    at += floats;
    return p;
  };
  for (float*& b : w->buf) b = take(R * row_floats_);
  w->kept = take(R * kept_floats_);
  w->context = take(R * ld_context_);
  w->hidden = take(R * ld_hidden_);
  w->hidden2 = take(R * ld_hidden_);
  w->film = take(R * film_floats_);
  w->cond = take(R * static_cast<size_t>(std::max(embed_layers_[1][0].in, 1)));
  w->affine = take(widest_ * 5);
  w->sinusoid = take(R * static_cast<size_t>(dim_));
  w->half = take(R * ((row_floats_ + 1) / 2));
  return at;
}

template <class Fn>
void CpuUnet::each_film(Fn fn) const {
  auto add = [&fn](const Block& b) {
    fn(b.first);
    fn(b.second);
  };
  for (const Level& l : down_) {
    add(l.b0);
    add(l.b1);
  }
  add(middle0_);
  add(middle1_);
  for (const Up& u : up_) {
    add(u.b0);
    add(u.b1);
  }
}

// Context rows [time(t_i), embed(x_0), embed(c_i)], then every FiLM layer's context -> context
// (SiLU) -> [scale, shift], kMaxRows contexts at a time.
void CpuUnet::films(int count, const int* levels, const float* x0, const float* const* conds, float* films,
                    float* scratch, bool fast) const {
  Work w;
  carve(scratch, &w);
  const int cond_dim = embed_layers_[1][0].in, half = dim_ / 2;
  const size_t dim = static_cast<size_t>(dim_);
  // embed(x_0): every context's
  dense_forward(embed_layers_[0][0], x0, 0, 1, Epilogue::kSilu, nullptr, 0, w.hidden, ld_hidden_, fast);
  dense_forward(embed_layers_[0][1], w.hidden, 0, 1, Epilogue::kLinear, nullptr, 0, w.hidden2, ld_hidden_, fast);
  for (int r = 0; r < kMaxRows; ++r) {
    std::memcpy(w.context + static_cast<size_t>(r) * ld_context_ + dim_, w.hidden2,
                sizeof(float) * static_cast<size_t>(embed_));
  }
  for (int i0 = 0; i0 < count; i0 += kMaxRows) {
    const int rows = std::min(kMaxRows, count - i0);
    for (int r = 0; r < rows; ++r) {
      const int t = levels[i0 + r];
      float* sin_row = w.sinusoid + static_cast<size_t>(r) * dim;
      for (int j = 0; j < half; ++j) {
        const float freq = std::exp(static_cast<float>(j) * (-std::log(10000.0f) / static_cast<float>(half - 1)));
        const float angle = static_cast<float>(t) * freq;
        sin_row[j] = std::sin(angle);
        sin_row[half + j] = std::cos(angle);
      }
      std::memcpy(w.cond + static_cast<size_t>(r) * cond_dim, conds[i0 + r],
                  sizeof(float) * static_cast<size_t>(cond_dim));
    }
    dense_forward(time0_, w.sinusoid, dim, rows, Epilogue::kSilu, nullptr, 0, w.hidden, ld_hidden_, fast);
    dense_forward(time2_, w.hidden, ld_hidden_, rows, Epilogue::kLinear, nullptr, 0, w.hidden2, ld_hidden_, fast);
    for (int r = 0; r < rows; ++r) {
      std::memcpy(w.context + static_cast<size_t>(r) * ld_context_, w.hidden2 + static_cast<size_t>(r) * ld_hidden_,
                  sizeof(float) * dim);
    }
    dense_forward(embed_layers_[1][0], w.cond, static_cast<size_t>(cond_dim), rows, Epilogue::kSilu, nullptr, 0,
                  w.hidden, ld_hidden_, fast);
    dense_forward(embed_layers_[1][1], w.hidden, ld_hidden_, rows, Epilogue::kLinear, nullptr, 0, w.hidden2,
                  ld_hidden_, fast);
    for (int r = 0; r < rows; ++r) {
      std::memcpy(w.context + static_cast<size_t>(r) * ld_context_ + dim_ + embed_,
                  w.hidden2 + static_cast<size_t>(r) * ld_hidden_, sizeof(float) * static_cast<size_t>(embed_));
    }
    float* out = films + static_cast<size_t>(i0) * film_floats_;
    each_film([&](const FilmConv& f) {
      dense_forward(f.film0, w.context, ld_context_, rows, Epilogue::kSilu, nullptr, 0, w.hidden, ld_hidden_, fast);
      dense_forward(f.film2, w.hidden, ld_hidden_, rows, Epilogue::kLinear, nullptr, 0, out + f.film_at,
                    film_floats_, fast);
    });
  }
}

void CpuUnet::forward(int rows, const float* const* windows, int t, const float* x0, const float* const* conds,
                      float* out, size_t ldo, float* scratch, bool fast) const {
  Work w;
  carve(scratch, &w);
  int levels[kMaxRows];
  const float* film_rows[kMaxRows];
  for (int r = 0; r < rows; ++r) {
    levels[r] = t;
    film_rows[r] = w.film + static_cast<size_t>(r) * film_floats_;
  }
  films(rows, levels, x0, conds, w.film, scratch, fast);
  forward(rows, windows, film_rows, out, ldo, scratch, fast);
}

void CpuUnet::forward(int rows, const float* const* windows, const float* const* film_rows, float* out, size_t ldo,
                      float* scratch, bool fast) const {
  const int H = horizon_;
  Work w;
  carve(scratch, &w);
  Mode m;
  m.fast = fast;
  m.half = reinterpret_cast<uint16_t*>(w.half);

  // The windows [H, C_in] into the padded layout, zero past C_in.
  float* buf[4] = {w.buf[0], w.buf[1], w.buf[2], w.buf[3]};
  const size_t ld_in = ldc(in_channels_);
  for (int r = 0; r < rows; ++r) {
    float* row = buf[0] + static_cast<size_t>(r) * row_floats_;
    std::memset(row, 0, sizeof(float) * (static_cast<size_t>(H) + 2 * kMargin) * ld_in);
    for (int l = 0; l < H; ++l) {
      std::memcpy(row + (static_cast<size_t>(kMargin) + l) * ld_in, windows[r] + static_cast<size_t>(l) * in_channels_,
                  sizeof(float) * static_cast<size_t>(in_channels_));
    }
  }
  int length = H;
  size_t kept_at[8];  // offsets of each level's kept output in a row's kept region (8 levels at most)
  int kept_count = 0;
  size_t kept_offset = 0;
  for (const Level& level : down_) {
    block_forward(level.b0, w, rows, buf[0], length, buf[1], buf[2], buf[3], film_rows, m);
    block_forward(level.b1, w, rows, buf[1], length, buf[0], buf[2], buf[3], film_rows, m);
    const size_t n = static_cast<size_t>(length) * ldc(level.b1.second.conv.out);
    for (int r = 0; r < rows; ++r) {
      std::memcpy(w.kept + static_cast<size_t>(r) * kept_floats_ + kept_offset,
                  buf[0] + static_cast<size_t>(r) * row_floats_ + kMargin * ldc(level.b1.second.conv.out),
                  n * sizeof(float));
    }
    kept_at[kept_count++] = kept_offset;
    kept_offset += n;
    if (level.has_down) {
      down_forward(level.down, rows, buf[0], length, buf[1], m);
      std::swap(buf[0], buf[1]);
      length /= 2;
    }
  }
  block_forward(middle0_, w, rows, buf[0], length, buf[1], buf[2], buf[3], film_rows, m);
  block_forward(middle1_, w, rows, buf[1], length, buf[0], buf[2], buf[3], film_rows, m);
  int channels = middle1_.second.conv.out;
  for (const Up& up : up_) {
    // [h; kept] along the channels (h first), per position.
    const int skip_channels = up.b0.first.conv.in - channels;
    const size_t ld_h = ldc(channels), ld_skip = ldc(skip_channels), ld_joined = ldc(channels + skip_channels);
    const size_t kept_row = kept_at[--kept_count];
    for (int r = 0; r < rows; ++r) {
      const float* h = buf[0] + static_cast<size_t>(r) * row_floats_ + kMargin * ld_h;
      const float* kept = w.kept + static_cast<size_t>(r) * kept_floats_ + kept_row;
      float* joined = buf[1] + static_cast<size_t>(r) * row_floats_ + kMargin * ld_joined;
      for (int l = 0; l < length; ++l) {
        float* dst = joined + static_cast<size_t>(l) * ld_joined;
        std::memcpy(dst, h + static_cast<size_t>(l) * ld_h, sizeof(float) * static_cast<size_t>(channels));
        std::memcpy(dst + channels, kept + static_cast<size_t>(l) * ld_skip,
                    sizeof(float) * static_cast<size_t>(skip_channels));
        std::fill(dst + channels + skip_channels, dst + ld_joined, 0.0f);
      }
    }
    zero_margins(buf[1], rows, row_floats_, length, ld_joined);
    block_forward(up.b0, w, rows, buf[1], length, buf[0], buf[2], buf[3], film_rows, m);
    block_forward(up.b1, w, rows, buf[0], length, buf[1], buf[2], buf[3], film_rows, m);
    up_forward(up.up, rows, buf[1], length, buf[0], m);
    length *= 2;
    channels = up.up.out;
  }
  // Head: conv k5 -> GroupNorm -> SiLU -> conv k1; then the rows [H, C_out] out of the layout.
  conv_forward(head0_, rows, buf[0], length, buf[1], m);
  norm_silu(rows, buf[1], head0_.out, length, head_gamma_.data(), head_beta_.data(), nullptr, 0, w.affine, true);
  conv_forward(head3_, rows, buf[1], length, buf[2], m);
  const size_t ld_out = ldc(out_channels_);
  for (int r = 0; r < rows; ++r) {
    const float* src = buf[2] + static_cast<size_t>(r) * row_floats_ + kMargin * ld_out;
    for (int l = 0; l < H; ++l) {
      std::memcpy(out + static_cast<size_t>(r) * ldo + static_cast<size_t>(l) * out_channels_,
                  src + static_cast<size_t>(l) * ld_out, sizeof(float) * static_cast<size_t>(out_channels_));
    }
  }
}

}  // namespace mpd::cpu
