// The unet family on the CUDA backend: the authors' temporal U-Net with FiLM, one thread block
// running one candidate's rows (conditional and unconditional) through a whole network call. The
// CPU backend's CpuUnet (cpu/unet.h) is its specification, layer for layer: the same convolutions
// (stride 1 "same", the stride-2 down convolution reading positions 2l..2l+2, the transposed
// up convolution as even and odd outputs of two taps each), GroupNorm in double with the same
// float casts, FiLM folded into the norm's affine, SiLU after the residual sum. Activations are
// position-major [L][C] per row in the block's slice of a global scratch buffer (unet_scratch in
// layout.h); weights are repacked at upload with the output channel innermost (unet_net.h), so the
// threads of a warp, which compute neighbouring output channels, read neighbouring weights.
//
// Written as the plainest correct form: each layer is one pass of the block's threads over its
// outputs (output channel fastest), an output summing its inputs in index order (taps outer,
// channels inner, as the CPU's packed columns). Fusing layers and tensor cores are for when a GPU
// has measured this.
#pragma once

#include <cstddef>

#include "cuda/layout.h"
#include "cuda/unet_net.h"
#include "math/bf16.h"
#include "math/update.h"

namespace mpd::cuda {

// Weights, biases and norm parameters are read through the read-only data path (they never change
// during a plan; a struct member cannot carry __restrict__, so the load says so). A plain load in
// the CPU emulation (tests/cpp/cuda_unet_emulation_test.cpp), which compiles this as host code.
#if defined(__CUDA_ARCH__)
#define MPD_WEIGHT(p) __ldg(p)
#else
#define MPD_WEIGHT(p) (*(p))
#endif

// y[r, o] = b[o] + sum_i w[o, i] x[r, i] for r < rows, SiLU when asked; fast: inputs rounded.
__device__ inline void unet_linear(const DevLinear& f, const float* x, int ldx, int rows, float* y, int ldy,
                                   bool apply_silu, bool fast) {
  for (int q = threadIdx.x; q < rows * f.out; q += blockDim.x) {
    const int r = q / f.out, o = q % f.out;
    const float* xr = x + static_cast<size_t>(r) * ldx;
    float acc = MPD_WEIGHT(f.b + o);
    for (int i = 0; i < f.in; ++i) {
      acc = fmaf(MPD_WEIGHT(f.w + static_cast<size_t>(i) * f.out + o), math::layer_input(xr[i], fast), acc);
    }
    y[static_cast<size_t>(r) * ldy + o] = apply_silu ? math::silu(acc) : acc;
  }
  __syncthreads();
}

// x [rows][L][in] -> y [rows][L / stride][out]: output l reads positions stride l + j - pad for
// taps j (zero outside [0, L)). The network's convolutions: stride 1 with pad kernel / 2 ("same"),
// and the down convolution, kernel 3, stride 2, pad 0 (positions 2l..2l+2, zero past the end).
__device__ inline void unet_conv(const DevConv& c, const float* x, int L, int act, int rows, float* y, bool fast,
                                 int stride = 1) {
  const int pad = stride == 1 ? c.kernel / 2 : 0, out_len = L / stride, per_row = out_len * c.out;
  for (int q = threadIdx.x; q < rows * per_row; q += blockDim.x) {
    const int r = q / per_row, l = (q % per_row) / c.out, o = q % c.out;
    const float* xr = x + static_cast<size_t>(r) * act;
    float acc = MPD_WEIGHT(c.b + o);
    for (int j = 0; j < c.kernel; ++j) {
      const int at = stride * l + j - pad;
      if (at < 0 || at >= L) continue;
      const float* xp = xr + static_cast<size_t>(at) * c.in;
      const float* w = c.w + static_cast<size_t>(j) * c.in * c.out + o;
      for (int i = 0; i < c.in; ++i) {
        acc = fmaf(MPD_WEIGHT(w + static_cast<size_t>(i) * c.out), math::layer_input(xp[i], fast), acc);
      }
    }
    y[static_cast<size_t>(r) * act + static_cast<size_t>(l) * c.out + o] = acc;
  }
  __syncthreads();
}

// Transposed, kernel 4, stride 2, padding 1 (w [in, out, 4]) -> 2 L positions: output 2a =
// x[a - 1] w[., ., 3] + x[a] w[., ., 1]; output 2a + 1 = x[a] w[., ., 2] + x[a + 1] w[., ., 0].
__device__ inline void unet_up(const DevConv& c, const float* x, int L, int act, int rows, float* y, bool fast) {
  const int per_row = 2 * L * c.out;
  for (int q = threadIdx.x; q < rows * per_row; q += blockDim.x) {
    const int r = q / per_row, m = (q % per_row) / c.out, o = q % c.out;
    const int a = m / 2, odd = m % 2;
    const float* xr = x + static_cast<size_t>(r) * act;
    const int positions[2] = {odd ? a : a - 1, odd ? a + 1 : a};
    const int taps[2] = {odd ? 2 : 3, odd ? 0 : 1};
    float acc = MPD_WEIGHT(c.b + o);
    for (int s = 0; s < 2; ++s) {
      if (positions[s] < 0 || positions[s] >= L) continue;
      const float* xp = xr + static_cast<size_t>(positions[s]) * c.in;
      const float* w = c.w + static_cast<size_t>(taps[s]) * c.in * c.out + o;
      for (int i = 0; i < c.in; ++i) {
        acc = fmaf(MPD_WEIGHT(w + static_cast<size_t>(i) * c.out), math::layer_input(xp[i], fast), acc);
      }
    }
    y[static_cast<size_t>(r) * act + static_cast<size_t>(m) * c.out + o] = acc;
  }
  __syncthreads();
}

// GroupNorm (8 groups, biased variance, sums in double), its affine, FiLM (film row r = [scale
// (C), shift (C)], when given) folded into h a + b per channel, SiLU when asked; in place.
__device__ inline void unet_norm(float* x, int C, int L, int act, int rows, const float* gamma, const float* beta,
                                 const float* film, int ld_film, float* stats, bool apply_silu) {
  // A warp per (row, group) (width: the lanes, 32 in a kernel's block of kThreads; a block of one
  // thread, as the CPU emulation runs it, is one lane).
  const int width = blockDim.x < 32 ? static_cast<int>(blockDim.x) : 32;
  const int warp = threadIdx.x / width, lane = threadIdx.x % width, warps = blockDim.x / width;
  const int per_group = C / kUnetGroups, n = per_group * L;
  for (int rg = warp; rg < rows * kUnetGroups; rg += warps) {
    const int r = rg / kUnetGroups, g = rg % kUnetGroups;
    const float* xr = x + static_cast<size_t>(r) * act + g * per_group;
    double sum = 0.0;
    for (int e = lane; e < n; e += width) sum += xr[static_cast<size_t>(e / per_group) * C + e % per_group];
    for (int offset = width / 2; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    const float mean = static_cast<float>(__shfl_sync(0xffffffffu, sum, 0) / n);
    double sq = 0.0;
    for (int e = lane; e < n; e += width) {
      const double d = static_cast<double>(xr[static_cast<size_t>(e / per_group) * C + e % per_group] - mean);
      sq += d * d;
    }
    for (int offset = width / 2; offset > 0; offset /= 2) sq += __shfl_down_sync(0xffffffffu, sq, offset);
    if (lane == 0) {
      stats[rg * 2] = mean;
      stats[rg * 2 + 1] = 1.0f / sqrtf(static_cast<float>(sq / n) + 1e-6f);
    }
  }
  __syncthreads();
  const int per_row = L * C;
  for (int q = threadIdx.x; q < rows * per_row; q += blockDim.x) {
    const int r = q / per_row, ch = q % C, g = ch / per_group;
    const float mean = stats[(r * kUnetGroups + g) * 2], inv = stats[(r * kUnetGroups + g) * 2 + 1];
    const float* f = film != nullptr ? film + static_cast<size_t>(r) * ld_film : nullptr;
    const float s = f ? f[ch] : 1.0f, t = f ? f[C + ch] : 0.0f;
    const float weight = MPD_WEIGHT(gamma + ch);
    const float a = weight * inv * s;
    const float b = (MPD_WEIGHT(beta + ch) - mean * weight * inv) * s + t;
    float& v = x[static_cast<size_t>(r) * act + q % per_row];
    const float y = fmaf(v, a, b);
    v = apply_silu ? math::silu(y) : y;
  }
  __syncthreads();
}

// A residual block with FiLM: x -> out, t1 and t3 scratch activations.
__device__ inline void unet_block(const DevUnet& net, const DevBlock& b, float* base, const float* x, int L,
                                  int rows, float* out, float* t1, float* t3, bool fast) {
  const UnetScratch& u = net.scratch;
  const DevFilmConv* films[2] = {&b.first, &b.second};
  for (int i = 0; i < 2; ++i) {
    const DevFilmConv& f = *films[i];
    float* y = i == 0 ? t1 : out;
    unet_conv(f.conv, i == 0 ? x : t1, L, u.act, rows, y, fast);
    unet_linear(f.film0, base + u.ctx, round4(u.context), rows, base + u.hid, u.hidden, true, fast);
    unet_linear(f.film2, base + u.hid, u.hidden, rows, base + u.film, round4(2 * u.max_channels), false,
                fast);
    unet_norm(y, f.conv.out, L, u.act, rows, f.gamma, f.beta, base + u.film, round4(2 * u.max_channels),
              base + u.stats, false);
  }
  const float* skip = x;
  if (b.has_skip) {
    unet_conv(b.skip, x, L, u.act, rows, t3, fast);
    skip = t3;
  }
  const int C = b.second.conv.out, per_row = L * C;
  for (int q = threadIdx.x; q < rows * per_row; q += blockDim.x) {
    const size_t at = static_cast<size_t>(q / per_row) * u.act + q % per_row;
    out[at] = math::silu(out[at] + skip[at]);
  }
  __syncthreads();
}

// out + r ldo = [H, out_channels] = unet(window of row r, level t = k - 1, x0, condition of row r)
// for r < rows (<= kUnetRows): row r's window is windows + (r % count) ld_window; rows >= count
// are unconditional (condition 0). base: the block's scratch (net.scratch.total floats). fast:
// the fast numeric mode (every layer's inputs rounded to bfloat16).
__device__ inline void unet_forward(const DevUnet& net, int rows, const float* windows, int ld_window, int count,
                                    int t, const float* x0, const float* cond, float* out, int ldo, float* base,
                                    bool fast) {
  const UnetScratch& u = net.scratch;
  const int H = net.horizon, dim = net.dim, embed = net.embed, ld_ctx = round4(u.context);
  float* ctx = base + u.ctx;
  float* hid = base + u.hid;
  float* hid2 = base + u.hid2;
  // Context rows [time(t), embed(x_0), embed(c_r)]: time and x_0 are every row's.
  const int half = dim / 2;
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    const float freq = expf(static_cast<float>(j) * (-logf(10000.0f) / static_cast<float>(half - 1)));
    const float angle = static_cast<float>(t) * freq;
    hid2[j] = sinf(angle);
    hid2[half + j] = cosf(angle);
  }
  __syncthreads();
  unet_linear(net.time0, hid2, 0, 1, hid, u.hidden, true, fast);
  unet_linear(net.time2, hid, 0, 1, ctx, ld_ctx, false, fast);
  unet_linear(net.embeds[0][0], x0, 0, 1, hid, u.hidden, true, fast);
  unet_linear(net.embeds[0][1], hid, 0, 1, ctx + dim, ld_ctx, false, fast);
  for (int q = threadIdx.x; q < rows * net.cond_dim; q += blockDim.x) {
    const int r = q / net.cond_dim, i = q % net.cond_dim;
    hid2[r * net.cond_dim + i] = r < count ? cond[i] : 0.0f;
  }
  for (int q = threadIdx.x; q < (rows - 1) * (dim + embed); q += blockDim.x) {
    ctx[(1 + q / (dim + embed)) * ld_ctx + q % (dim + embed)] = ctx[q % (dim + embed)];
  }
  __syncthreads();
  unet_linear(net.embeds[1][0], hid2, net.cond_dim, rows, hid, u.hidden, true, fast);
  unet_linear(net.embeds[1][1], hid, u.hidden, rows, ctx + dim + embed, ld_ctx, false, fast);

  float* buf[4] = {base + u.buf[0], base + u.buf[1], base + u.buf[2], base + u.buf[3]};
  const int C_in = net.in_channels;
  for (int q = threadIdx.x; q < rows * H * C_in; q += blockDim.x) {
    const int r = q / (H * C_in);
    buf[0][static_cast<size_t>(r) * u.act + q % (H * C_in)] =
        windows[static_cast<size_t>(r % count) * ld_window + q % (H * C_in)];
  }
  __syncthreads();
  int length = H;
  for (int i = 0; i < net.levels; ++i) {
    unet_block(net, net.down0[i], base, buf[0], length, rows, buf[1], buf[2], buf[3], fast);
    unet_block(net, net.down1[i], base, buf[1], length, rows, buf[0], buf[2], buf[3], fast);
    const int n = length * net.down1[i].second.conv.out;
    for (int q = threadIdx.x; q < rows * n; q += blockDim.x) {
      const int r = q / n;
      base[u.kept + static_cast<size_t>(r) * u.kept_row + u.kept_at[i] + q % n] = buf[0][static_cast<size_t>(r) * u.act + q % n];
    }
    __syncthreads();
    if (i + 1 < net.levels) {
      unet_conv(net.down[i], buf[0], length, u.act, rows, buf[1], fast, 2);
      float* swap = buf[0];
      buf[0] = buf[1];
      buf[1] = swap;
      length /= 2;
    }
  }
  unet_block(net, net.mid0, base, buf[0], length, rows, buf[1], buf[2], buf[3], fast);
  unet_block(net, net.mid1, base, buf[1], length, rows, buf[0], buf[2], buf[3], fast);
  int channels = net.mid1.second.conv.out;
  for (int j = 0; j + 1 < net.levels; ++j) {
    // [h; kept] along the channels (h first), per position.
    const int level = net.levels - 1 - j, skip = net.up0[j].first.conv.in - channels;
    const int joined = channels + skip;
    const float* kept = base + u.kept + u.kept_at[level];
    for (int q = threadIdx.x; q < rows * length * joined; q += blockDim.x) {
      const int r = q / (length * joined), l = (q % (length * joined)) / joined, ch = q % joined;
      buf[1][static_cast<size_t>(r) * u.act + q % (length * joined)] =
          ch < channels ? buf[0][static_cast<size_t>(r) * u.act + static_cast<size_t>(l) * channels + ch]
                        : kept[static_cast<size_t>(r) * u.kept_row + static_cast<size_t>(l) * skip + ch - channels];
    }
    __syncthreads();
    unet_block(net, net.up0[j], base, buf[1], length, rows, buf[0], buf[2], buf[3], fast);
    unet_block(net, net.up1[j], base, buf[0], length, rows, buf[1], buf[2], buf[3], fast);
    unet_up(net.up[j], buf[1], length, u.act, rows, buf[0], fast);
    length *= 2;
    channels = net.up[j].out;
  }
  // Head: conv k5 -> GroupNorm -> SiLU -> conv k1, then the rows [H, C_out] out.
  unet_conv(net.head0, buf[0], length, u.act, rows, buf[1], fast);
  unet_norm(buf[1], net.head0.out, length, u.act, rows, net.head_gamma, net.head_beta, nullptr, 0, base + u.stats,
            true);
  unet_conv(net.head3, buf[1], length, u.act, rows, buf[2], fast);
  const int n = H * net.out_channels;
  for (int q = threadIdx.x; q < rows * n; q += blockDim.x) {
    out[static_cast<size_t>(q / n) * ldo + q % n] = buf[2][static_cast<size_t>(q / n) * u.act + q % n];
  }
  __syncthreads();
}

#undef MPD_WEIGHT

}  // namespace mpd::cuda
