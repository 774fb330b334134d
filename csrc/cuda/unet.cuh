// The unet family on the CUDA backend: the authors' temporal U-Net with FiLM. The CPU backend's
// CpuUnet (cpu/unet.h) is its specification, layer for layer: the same convolutions (stride 1
// "same", the stride-2 down convolution reading positions 2l..2l+2, the transposed up convolution
// as even and odd outputs of two taps each), GroupNorm in double with the same float casts, FiLM
// folded into the norm's affine, SiLU after the residual sum.
//
// Two parts, as the CPU's:
// - unet_films: the FiLM of a network call depends on its level, x_0 and condition, not on the
//   window, so a plan computes every level's conditional and unconditional FiLM rows once, in its
//   own kernel (plan_kernel.cuh), one block per row;
// - unet_forward: one candidate's rows (conditional and unconditional) through the network by a
//   group of blocks (GroupSync, group_sync.h). Block `rank` of a group of G computes output
//   channels [C rank / G, C (rank + 1) / G) of every layer (whole GroupNorm groups, so it
//   normalizes its own channels), reading the whole input the group wrote before the last
//   barrier: one barrier per convolution (two per residual block, whose skip and sum stay within
//   a block's channels). A group of one block is the plain kernel, no barrier.
//
// Activations are position-major [L][C] per row in the group's scratch (unet_scratch in layout.h):
// a slice of a global buffer, a group of one block's shared memory, or a replica in every member's
// shared memory, to which each member writes its channels (unet_publish) before the barrier
// (UnetPlacement); weights are repacked at upload with the output channel innermost
// (unet_net.h), so the threads of a warp, which compute neighbouring output channels, read
// neighbouring weights. An output sums its inputs in index order (taps outer, channels inner), so
// the answer does not depend on the group's size.
#pragma once

#include <cstddef>

#include "cuda/group_sync.h"
#include "cuda/layout.h"
#include "cuda/unet_mma.cuh"
#include "cuda/unet_net.h"
#include "math/bf16.h"
#include "math/update.h"

namespace mpd::cuda {

// Weights, biases and norm parameters are read through the read-only data path (they never change
// during a plan; a struct member cannot carry __restrict__, so the load says so). Activations are
// written by the other blocks of the group and are read with plain loads. A plain load in the CPU
// emulation (tests/cpp/cuda_unet_emulation_test.cpp), which compiles this as host code.
#if defined(__CUDA_ARCH__)
#define MPD_WEIGHT(p) __ldg(p)
#else
#define MPD_WEIGHT(p) (*(p))
#endif

// This block's output channels [first, first + width) of a layer, and whether the layer runs on
// tensor cores (unet_mma.cuh). The channels come in units: whole GroupNorm groups for a normalized
// layer, whole 16-channel tiles on tensor cores (both: their least common multiple), else single
// channels; block `rank` of G takes units [U rank / G, U (rank + 1) / G) of the layer's U (some
// blocks none when U < G).
struct UnetSplit {
  int first, width;
  bool tensor;
};

__device__ inline UnetSplit unet_split(const DevConv& c, bool normalized, bool tensor, const GroupSync& g) {
  int unit = normalized ? c.out / kUnetGroups : 1;
  if (tensor) {
    int a = unit, b = 16;  // lcm(unit, 16)
    while (b != 0) {
      const int r = a % b;
      a = b;
      b = r;
    }
    unit = unit / a * 16;
  }
  const int units = c.out / unit, begin = units * g.rank / g.members, end = units * (g.rank + 1) / g.members;
  return UnetSplit{begin * unit, (end - begin) * unit, tensor};
}

// A layer's input rows: position-major [L][channels], row r at at + (r % count) ld (count: the
// candidates whose windows the rows share; the activations' own rows have count = kUnetRows).
// The up path's first block reads the kept level output joined after the channels.
struct UnetInput {
  const float* at;
  size_t ld;
  int count, channels;
  const float* joined = nullptr;  // [L][joined_channels] per row, row r at joined + r ld_joined
  size_t ld_joined = 0;
  int joined_channels = 0;
};

// acc + sum over the input channels i in [i0, i1) (the joined ones after x's own) at position
// pos of row r of w[i out] x[i] (w: this tap's weights of one output channel, stride out).
__device__ inline float tap_sum(const UnetInput& x, int r, int pos, const float* w, int out, float acc, bool fast,
                               int i0 = 0, int i1 = 1 << 30) {
  const float* xp = x.at + static_cast<size_t>(r % x.count) * x.ld + static_cast<size_t>(pos) * x.channels;
  const int own_end = i1 < x.channels ? i1 : x.channels;
  for (int i = i0; i < own_end; ++i) {
    acc = fmaf(MPD_WEIGHT(w + static_cast<size_t>(i) * out), math::layer_input(xp[i], fast), acc);
  }
  if (x.joined != nullptr) {
    xp = x.joined + static_cast<size_t>(r) * x.ld_joined + static_cast<size_t>(pos) * x.joined_channels;
    w += static_cast<size_t>(x.channels) * out;
    const int j0 = i0 > x.channels ? i0 - x.channels : 0, j1 = i1 - x.channels < x.joined_channels
                                                                 ? i1 - x.channels
                                                                 : x.joined_channels;
    for (int i = j0; i < j1; ++i) {
      acc = fmaf(MPD_WEIGHT(w + static_cast<size_t>(i) * out), math::layer_input(xp[i], fast), acc);
    }
  }
  return acc;
}

// y[r, o] = b[o] + sum_i w[o, i] x[r, i] for r < rows, SiLU when asked, every output by this
// block (the FiLM kernel's small layers); fast: inputs rounded.
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

// The input channels of x (joined ones included).
__device__ inline int channels_of(const UnetInput& x) { return x.channels + x.joined_channels; }

// acc + output l, channel o of row r of convolution c over x's input channels [i0, i1): taps
// outer, channels inner (the stride and padding of unet_conv's comment).
__device__ inline float conv_output(const DevConv& c, const UnetInput& x, int L, int r, int l, int o, int stride,
                                    float acc, bool fast, int i0 = 0, int i1 = 1 << 30) {
  const int pad = stride == 1 ? c.kernel / 2 : 0;
  for (int j = 0; j < c.kernel; ++j) {
    const int at = stride * l + j - pad;
    if (at < 0 || at >= L) continue;
    acc = tap_sum(x, r, at, c.w + static_cast<size_t>(j) * c.in * c.out + o, c.out, acc, fast, i0, i1);
  }
  return acc;
}

// unet_conv's layer of few outputs: each output's inputs in `slices` slices of the input channels
// (every tap within a slice), summed apart into the block's partial buffer, then the bias and the
// slices in slice order.
__device__ inline void unet_conv_sliced(const DevConv& c, const UnetInput& x, int L, int rows, float* y, size_t ldy,
                                        const UnetSplit& split, float* partial, bool fast, int stride, int slices) {
  const int first = split.first, width = split.width, per_row = (L / stride) * width;
  const int slice = (channels_of(x) + slices - 1) / slices, outputs = rows * per_row;
  for (int q = threadIdx.x; q < slices * outputs; q += blockDim.x) {
    const int s = q / outputs, r = (q % outputs) / per_row, l = (q % per_row) / width, o = first + q % width;
    partial[q] = conv_output(c, x, L, r, l, o, stride, 0.0f, fast, s * slice, (s + 1) * slice);
  }
  __syncthreads();
  for (int q = threadIdx.x; q < outputs; q += blockDim.x) {
    const int r = q / per_row, l = (q % per_row) / width, o = first + q % width;
    float acc = MPD_WEIGHT(c.b + o);
    for (int s = 0; s < slices; ++s) acc += partial[s * outputs + q];
    y[static_cast<size_t>(r) * ldy + static_cast<size_t>(l) * c.out + o] = acc;
  }
  __syncthreads();
}

// x [rows][L][in] -> the split's channels of y [rows][L / stride][out] (row stride ldy): output l
// reads positions stride l + j - pad for taps j (zero outside [0, L)). The network's
// convolutions: stride 1 with pad kernel / 2 ("same"), and the down convolution, kernel 3,
// stride 2, pad 0 (positions 2l..2l+2, zero past the end). A layer of few outputs sums slices of
// its input channels apart (unet_slices, layout.h: every tap within a slice) into the block's
// partial buffer, then the bias and the slices in slice order. Not inlined: one copy serves every
// layer (inlined at each with its sliced form, the plan kernel's stack grew from 184 to 2168 bytes
// and its local accesses from 211 to 1498; called, 592 and 514: cuda_kernel_resources.py, sm_90).
__device__ inline __noinline__ void unet_conv(const DevConv& c, const UnetInput& x, int L, int rows, float* y, size_t ldy,
                                 const UnetSplit& split, const UnetOwnBuffers& t, bool fast, int stride = 1) {
  if (split.tensor) {
    unet_conv_mma(c, x.at, x.ld, x.count, x.channels, x.joined, x.ld_joined, x.joined_channels, L, rows, y, ldy,
                  split.first, split.width, t);
    return;
  }
  const int out_len = L / stride, first = split.first, width = split.width, per_row = out_len * width;
  const int slices = unet_slices(channels_of(x), kUnetRows * out_len * c.out, t.split_work);
  if (slices > 1) {
    unet_conv_sliced(c, x, L, rows, y, ldy, split, t.partial, fast, stride, slices);
    return;
  }
  for (int q = threadIdx.x; q < rows * per_row; q += blockDim.x) {
    const int r = q / per_row, l = (q % per_row) / width, o = first + q % width;
    y[static_cast<size_t>(r) * ldy + static_cast<size_t>(l) * c.out + o] =
        conv_output(c, x, L, r, l, o, stride, MPD_WEIGHT(c.b + o), fast);
  }
  __syncthreads();
}

// Transposed, kernel 4, stride 2, padding 1 (w [in, out, 4]) -> 2 L positions, this block's
// channels: output 2a = x[a - 1] w[., ., 3] + x[a] w[., ., 1]; output 2a + 1 = x[a] w[., ., 2] +
// x[a + 1] w[., ., 0].
__device__ inline void unet_up(const DevConv& c, const UnetInput& x, int L, int rows, float* y, size_t ldy,
                               const UnetSplit& split, bool fast) {
  const int first = split.first, width = split.width, per_row = 2 * L * width;
  for (int q = threadIdx.x; q < rows * per_row; q += blockDim.x) {
    const int r = q / per_row, m = (q % per_row) / width, o = first + q % width;
    const int a = m / 2, odd = m % 2;
    const int positions[2] = {odd ? a : a - 1, odd ? a + 1 : a};
    const int taps[2] = {odd ? 2 : 3, odd ? 0 : 1};
    float acc = MPD_WEIGHT(c.b + o);
    for (int s = 0; s < 2; ++s) {
      if (positions[s] < 0 || positions[s] >= L) continue;
      acc = tap_sum(x, r, positions[s], c.w + static_cast<size_t>(taps[s]) * c.in * c.out + o, c.out, acc, fast);
    }
    y[static_cast<size_t>(r) * ldy + static_cast<size_t>(m) * c.out + o] = acc;
  }
  __syncthreads();
}

// The FiLM rows of a call's rows: row r < count conditional, the others unconditional (a row
// chosen by comparison, not by indexing an array, so it stays in registers); cond null: none.
struct UnetFilmRows {
  const float* cond;
  const float* uncond;
  int count;
  __device__ const float* of(int r) const { return r < count ? cond : uncond; }
};

// GroupNorm (8 groups, biased variance, sums in double) of the split's channels (whole groups),
// its affine, FiLM (row r's [scale (C), shift (C)] at films[r] + film_at, when films is given)
// folded into h a + b per channel, SiLU when asked; in place. stats: [rows][kUnetGroups][2].
__device__ inline void unet_norm(float* x, size_t ld, int C, int L, int rows, const float* gamma, const float* beta,
                                 const UnetFilmRows& films, int film_at, float* stats, bool apply_silu,
                                 const UnetSplit& split) {
  // A warp per (row, group) (width: the lanes, 32 in a kernel's block of kThreads; a block of one
  // thread, as the CPU emulation runs it, is one lane).
  const int width = blockDim.x < 32 ? static_cast<int>(blockDim.x) : 32;
  const int warp = threadIdx.x / width, lane = threadIdx.x % width, warps = blockDim.x / width;
  const int per_group = C / kUnetGroups, n = per_group * L;
  const int first = split.first, channels = split.width;
  const int g0 = first / per_group, groups = channels / per_group;
  for (int rg = warp; rg < rows * groups; rg += warps) {
    const int r = rg / groups, grp = g0 + rg % groups;
    const float* xr = x + static_cast<size_t>(r) * ld + grp * per_group;
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
      stats[(r * kUnetGroups + grp) * 2] = mean;
      stats[(r * kUnetGroups + grp) * 2 + 1] = 1.0f / sqrtf(static_cast<float>(sq / n) + 1e-6f);
    }
  }
  __syncthreads();
  const int per_row = L * channels;
  for (int q = threadIdx.x; q < rows * per_row; q += blockDim.x) {
    const int r = q / per_row, l = (q % per_row) / channels, ch = first + q % channels, grp = ch / per_group;
    const float mean = stats[(r * kUnetGroups + grp) * 2], inv = stats[(r * kUnetGroups + grp) * 2 + 1];
    const float* f = films.cond != nullptr ? films.of(r) + film_at : nullptr;
    const float s = f ? f[ch] : 1.0f, t = f ? f[C + ch] : 0.0f;
    const float weight = MPD_WEIGHT(gamma + ch);
    const float a = weight * inv * s;
    const float b = (MPD_WEIGHT(beta + ch) - mean * weight * inv) * s + t;
    float& v = x[static_cast<size_t>(r) * ld + static_cast<size_t>(l) * C + ch];
    const float y = fmaf(v, a, b);
    v = apply_silu ? math::silu(y) : y;
  }
  __syncthreads();
}

// With replicas of the group's scratch (GroupSync::replicas), this block's channels
// [first, first + width) of rows [L][C] (row stride ld) at y, copied to the same place in every
// other member's replica, before the barrier that hands them over. Nothing otherwise.
__device__ inline void unet_publish(const GroupSync& g, float* y, size_t ld, int C, int L, int rows, int first,
                                    int width) {
  if (!g.replicas || g.members == 1) return;
  __syncthreads();  // the block's own writes of y, by any of its threads
  const int per_row = L * width;
  for (int m = 1; m < g.members; ++m) {
    float* to = g.peer(y, (g.rank + m) % g.members);
    for (int q = threadIdx.x; q < rows * per_row; q += blockDim.x) {
      const size_t at = static_cast<size_t>(q / per_row) * ld + static_cast<size_t>((q % per_row) / width) * C +
                        first + q % width;
      to[at] = y[at];
    }
  }
}

// The activation rows of buffer x (C channels) as a layer's input.
__device__ inline UnetInput activation(const float* x, const UnetScratch& u, int C) {
  return UnetInput{x, static_cast<size_t>(u.act), kUnetRows, C};
}

// A residual block with FiLM: x -> out, t1 and t3 scratch activations; two barriers. Returns the
// split of its output (the block's channels of out).
__device__ inline UnetSplit unet_block(const DevUnet& net, const DevBlock& b, const UnetInput& x, int L, int rows,
                                       float* out, float* t1, float* t3, const UnetFilmRows& films, float* stats,
                                       GroupSync& g, const UnetOwnBuffers& t, bool fast) {
  const UnetScratch& u = net.scratch;
  const size_t ld = static_cast<size_t>(u.act);
  const bool tensor1 = unet_tensor_layer(b.first.conv, channels_of(x), 1, fast, t);
  const UnetSplit s1 = unet_split(b.first.conv, true, tensor1, g);
  unet_conv(b.first.conv, x, L, rows, t1, ld, s1, t, fast);
  unet_norm(t1, ld, b.first.conv.out, L, rows, b.first.gamma, b.first.beta, films, b.first.film_at, stats, false, s1);
  unet_publish(g, t1, ld, b.first.conv.out, L, rows, s1.first, s1.width);
  g.sync();
  const bool tensor2 = unet_tensor_layer(b.second.conv, b.first.conv.out, 1, fast, t);
  const UnetSplit s2 = unet_split(b.second.conv, true, tensor2, g);
  unet_conv(b.second.conv, activation(t1, u, b.first.conv.out), L, rows, out, ld, s2, t, fast);
  unet_norm(out, ld, b.second.conv.out, L, rows, b.second.gamma, b.second.beta, films, b.second.film_at, stats,
            false, s2);
  // The skip convolution over the same channels, on tensor cores when it qualifies and the
  // channels are whole tiles (the second convolution's are: same outputs, 16-channel inputs).
  if (b.has_skip) {
    const UnetSplit skip{s2.first, s2.width, s2.tensor && unet_tensor_layer(b.skip, channels_of(x), 1, fast, t)};
    unet_conv(b.skip, x, L, rows, t3, ld, skip, t, fast);
  }
  // The sum over this block's channels: its own skip outputs, or the input's same channels.
  const int C = b.second.conv.out, first = s2.first, width = s2.width, per_row = L * width;
  for (int q = threadIdx.x; q < rows * per_row; q += blockDim.x) {
    const int r = q / per_row, l = (q % per_row) / width, o = first + q % width;
    const size_t at = static_cast<size_t>(l) * C + o;
    const float skip = b.has_skip ? t3[static_cast<size_t>(r) * ld + at]
                                  : x.at[static_cast<size_t>(r % x.count) * x.ld + at];
    float& v = out[static_cast<size_t>(r) * ld + at];
    v = math::silu(v + skip);
  }
  unet_publish(g, out, ld, C, L, rows, first, width);
  g.sync();
  return s2;
}

// The FiLM row of network call (level t = k - 1, x0, condition c; c null: the unconditional
// rows' zeros): the context [time(t), embed(x_0), embed(c)], then every FiLM layer's context ->
// context (SiLU) -> [scale, shift] at film + film_at (net.film_floats floats). One block; its
// shared scratch s laid out by unet_film_layout.
__device__ inline void unet_films(const DevUnet& net, int t, const float* x0, const float* cond, float* film,
                                  float* s, const UnetFilmLayout& at, bool fast) {
  const int dim = net.dim, embed = net.embed, half = dim / 2;
  float* ctx = s + at.ctx;
  float* hid = s + at.hid;
  float* hid2 = s + at.hid2;
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    const float freq = expf(static_cast<float>(j) * (-logf(10000.0f) / static_cast<float>(half - 1)));
    const float angle = static_cast<float>(t) * freq;
    hid2[j] = sinf(angle);
    hid2[half + j] = cosf(angle);
  }
  __syncthreads();
  unet_linear(net.time0, hid2, 0, 1, hid, 0, true, fast);
  unet_linear(net.time2, hid, 0, 1, ctx, 0, false, fast);
  unet_linear(net.embeds[0][0], x0, 0, 1, hid, 0, true, fast);
  unet_linear(net.embeds[0][1], hid, 0, 1, ctx + dim, 0, false, fast);
  for (int i = threadIdx.x; i < net.cond_dim; i += blockDim.x) hid2[i] = cond != nullptr ? cond[i] : 0.0f;
  __syncthreads();
  unet_linear(net.embeds[1][0], hid2, 0, 1, hid, 0, true, fast);
  unet_linear(net.embeds[1][1], hid, 0, 1, ctx + dim + embed, 0, false, fast);
  const DevBlock* blocks[4 * kMaxUnetLevels + 2];  // in the order of the forward pass
  int count = 0;
  for (int i = 0; i < net.levels; ++i) {
    blocks[count++] = &net.down0[i];
    blocks[count++] = &net.down1[i];
  }
  blocks[count++] = &net.mid0;
  blocks[count++] = &net.mid1;
  for (int j = 0; j + 1 < net.levels; ++j) {
    blocks[count++] = &net.up0[j];
    blocks[count++] = &net.up1[j];
  }
  for (int b = 0; b < 2 * count; ++b) {
    const DevFilmConv& f = b % 2 == 0 ? blocks[b / 2]->first : blocks[b / 2]->second;
    unet_linear(f.film0, ctx, 0, 1, hid, 0, true, fast);
    unet_linear(f.film2, hid, 0, 1, film + f.film_at, 0, false, fast);
  }
}

// Block `rank`'s own buffers within a group's scratch at base (the global placement).
__device__ inline float* unet_own_buffers(float* base, const UnetScratch& u, int rank) {
  return base + u.tensor_at + static_cast<size_t>(rank) * u.own_floats;
}

// One candidate's network call: rows (<= kUnetRows) windows, row r's at windows + (r % count)
// ld_window ([H][in_channels]); rows r < count conditional (FiLM row films[0]), the others
// unconditional (films[1]).
struct UnetCall {
  const float* windows;
  int ld_window, count, rows;
  const float* films[2];
  float* out;  // [rows][H, out_channels], row stride ldo: every member block gets every row
  int ldo;
  int split_work = kUnetSplitWork;  // unet_slices' (0: no convolution split)
};

// The call by the group g (every member calls it with the same arguments but its own out);
// base: the group's scratch (net.scratch.total floats; the part before tensor_at is what the
// members share), own: this block's own buffers (own_floats; unet_own_buffers where the
// group's scratch holds them). fast: the fast numeric mode (every layer's inputs rounded to
// bfloat16). Ends synchronized within the block.
__device__ inline void unet_forward(const DevUnet& net, const UnetCall& call, float* base, float* own, GroupSync& g,
                                    bool fast) {
  const UnetScratch& u = net.scratch;
  const int H = net.horizon, rows = call.rows;
  const UnetFilmRows films{call.films[0], call.films[1], call.count};
  float* buf[4] = {base + u.buf[0], base + u.buf[1], base + u.buf[2], base + u.buf[3]};
  float* stats = base + u.stats;
  // This block's own buffers: the tensor-core layers' (none without bfloat16 weights), the
  // sliced convolutions' partial sums.
  const UnetOwnBuffers t{u.half_row > 0 ? reinterpret_cast<uint16_t*>(own) : nullptr, u.half_row, own + u.stage_at,
                         own + u.partial_at, call.split_work};
  UnetInput x{call.windows, static_cast<size_t>(call.ld_window), call.count, net.in_channels};
  int length = H;
  for (int i = 0; i < net.levels; ++i) {
    unet_block(net, net.down0[i], x, length, rows, buf[1], buf[2], buf[3], films, stats, g, t, fast);
    const int C = net.down1[i].second.conv.out;
    const UnetSplit s = unet_block(net, net.down1[i], activation(buf[1], u, C), length, rows, buf[0], buf[2], buf[3],
                                   films, stats, g, t, fast);
    // This block's channels of the level's output, kept for the up path (read after later barriers).
    const int per_row = length * s.width;
    float* kept = base + u.kept + u.kept_at[i];
    for (int q = threadIdx.x; q < rows * per_row; q += blockDim.x) {
      const int r = q / per_row;
      const size_t at = static_cast<size_t>((q % per_row) / s.width) * C + s.first + q % s.width;
      kept[static_cast<size_t>(r) * u.kept_row + at] = buf[0][static_cast<size_t>(r) * u.act + at];
    }
    unet_publish(g, kept, u.kept_row, C, length, rows, s.first, s.width);  // handed over by a later barrier
    x = activation(buf[0], u, C);
    if (i + 1 < net.levels) {
      const UnetSplit down = unet_split(net.down[i], false, false, g);
      unet_conv(net.down[i], x, length, rows, buf[1], u.act, down, t, fast, 2);
      unet_publish(g, buf[1], u.act, net.down[i].out, length / 2, rows, down.first, down.width);
      g.sync();
      float* swap = buf[0];
      buf[0] = buf[1];
      buf[1] = swap;
      length /= 2;
      x = activation(buf[0], u, C);
    }
  }
  __syncthreads();
  unet_block(net, net.mid0, x, length, rows, buf[1], buf[2], buf[3], films, stats, g, t, fast);
  unet_block(net, net.mid1, activation(buf[1], u, net.mid1.second.conv.out), length, rows, buf[0], buf[2], buf[3],
             films, stats, g, t, fast);
  int channels = net.mid1.second.conv.out;
  for (int j = 0; j + 1 < net.levels; ++j) {
    // [h; kept] along the channels (h first), per position: the kept level output read in place.
    const int level = net.levels - 1 - j, skip = net.up0[j].first.conv.in - channels;
    UnetInput joined = activation(buf[0], u, channels);
    joined.joined = base + u.kept + u.kept_at[level];
    joined.ld_joined = static_cast<size_t>(u.kept_row);
    joined.joined_channels = skip;
    unet_block(net, net.up0[j], joined, length, rows, buf[1], buf[2], buf[3], films, stats, g, t, fast);
    const int d = net.up1[j].second.conv.out;
    unet_block(net, net.up1[j], activation(buf[1], u, d), length, rows, buf[0], buf[2], buf[3], films, stats, g, t,
               fast);
    const UnetSplit up = unet_split(net.up[j], false, false, g);
    unet_up(net.up[j], activation(buf[0], u, d), length, rows, buf[1], u.act, up, fast);
    unet_publish(g, buf[1], u.act, net.up[j].out, 2 * length, rows, up.first, up.width);
    g.sync();
    float* swap = buf[0];
    buf[0] = buf[1];
    buf[1] = swap;
    length *= 2;
    channels = net.up[j].out;
  }
  // Head: conv k5 -> GroupNorm -> SiLU -> conv k1, then the rows [H, C_out] out: written there
  // directly by a group of one, else through the group's head buffer (no other phase writes it,
  // so the members may read it while the group runs ahead).
  const UnetSplit h0 = unet_split(net.head0, true, unet_tensor_layer(net.head0, channels, 1, fast, t), g);
  unet_conv(net.head0, activation(buf[0], u, channels), length, rows, buf[1], u.act, h0, t, fast);
  unet_norm(buf[1], u.act, net.head0.out, length, rows, net.head_gamma, net.head_beta, UnetFilmRows{}, 0, stats, true,
            h0);
  unet_publish(g, buf[1], u.act, net.head0.out, length, rows, h0.first, h0.width);
  g.sync();
  const int n = H * net.out_channels, ld_head = round4(n);
  float* head = g.members == 1 ? call.out : base + u.head;
  const UnetSplit h3 = unet_split(net.head3, false, unet_tensor_layer(net.head3, net.head0.out, 1, fast, t), g);
  unet_conv(net.head3, activation(buf[1], u, net.head0.out), length, rows, head, g.members == 1 ? call.ldo : ld_head,
            h3, t, fast);
  if (g.members == 1) return;
  unet_publish(g, head, ld_head, net.out_channels, length, rows, h3.first, h3.width);
  g.sync();
  for (int q = threadIdx.x; q < rows * n; q += blockDim.x) {
    call.out[static_cast<size_t>(q / n) * call.ldo + q % n] = head[static_cast<size_t>(q / n) * ld_head + q % n];
  }
  __syncthreads();
}

#undef MPD_WEIGHT

}  // namespace mpd::cuda
