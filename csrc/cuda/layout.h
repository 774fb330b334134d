// The CUDA plan kernel's shared-memory layout, row strides and the work split of its dense layers,
// in plain integer arithmetic: the kernel, its host setup (sampler.cu) and a CPU test
// (tests/cpp/cuda_layout_test.cpp) use these same functions, so the invariants the kernel relies on
// (16-byte aligned buffers, strides that hold every layer's padded rows, a partial-sum buffer that
// holds every layer's slices) are checked on every machine, GPU or not.
#pragma once

#include "math/host_device.h"

namespace mpd::cuda {

constexpr int kThreads = 512;  // threads per plan-kernel block
constexpr int kRankRows = 8;   // window rows the ranker scores per batch

MPD_HOST_DEVICE int round4(int n) { return (n + 3) / 4 * 4; }
MPD_HOST_DEVICE int most(int a, int b) { return a > b ? a : b; }

// Row strides (floats, multiples of 4) of a block's shared buffers. P: any type with these members
// (the kernel's PlanParams, or Strides below).
struct Strides {
  int dx = 0, horizon = 0;
  int ld_tau = 0, ld_in = 0, ld_h = 0, ld_out = 0;  // windows; planner and dynamics rows
  int ld_rin = 0, ld_rh = 0, ld_rout = 0;           // ranker rows
  int part_cols = 0;  // partial-sum columns per row: max(4 kThreads, widest padded layer)
};

// Float offsets of a block's buffers for CPB candidates per block; every buffer starts on a
// 16-byte boundary.
struct Layout {
  int x0, gamma, tau, in, h0, h1, eps, part, total;
};

MPD_HOST_DEVICE int part_rows(int cpb) { return most(2 * cpb, kRankRows); }

template <class P>
MPD_HOST_DEVICE Layout plan_layout(const P& p, int cpb) {
  const int rows = 2 * cpb, ranked = kRankRows;
  Layout l{};
  l.x0 = 0;
  l.gamma = l.x0 + round4(p.dx);
  l.tau = l.gamma + round4(p.horizon);
  l.in = l.tau + cpb * p.ld_tau;
  l.h0 = l.in + most(rows * p.ld_in, ranked * p.ld_rin);
  l.h1 = l.h0 + most(rows * p.ld_h, ranked * p.ld_rh);
  l.eps = l.h1 + most(rows * p.ld_h, ranked * p.ld_rh);
  l.part = l.eps + most(rows * p.ld_out, ranked * p.ld_rout);
  l.total = l.part + part_rows(cpb) * p.part_cols;
  return l;
}

// How a dense layer in -> out splits over `threads` threads: G column quads (padded width ldw =
// 4 G), Q input quads, S input slices of L quads each; a task is (column quad, slice), G S tasks.
// Its partial sums take S x rows x ldw floats.
struct DenseSplit {
  int G, ldw, Q, S, L;
};

MPD_HOST_DEVICE DenseSplit dense_split(int in, int out, int threads) {
  DenseSplit d{};
  d.G = (out + 3) / 4;
  d.ldw = 4 * d.G;
  d.Q = (in + 3) / 4;
  const int per_task = threads / d.G;
  d.S = most(1, per_task < d.Q ? per_task : d.Q);
  d.L = (d.Q + d.S - 1) / d.S;
  return d;
}

// The strides for a model's networks: dims[i] holds network i's layer widths (dims[i][0] its
// input, dims[i][dense[i]] its output); networks 0 and 1 are the planner and the dynamics model,
// 2 and 3 the reward and cost models (num_nets 3 without a cost model). dense_diffusion false (the
// unet family): planner and dynamics run no dense layer in shared memory, only their outputs land
// in the eps rows, so they size ld_out alone (not the input, hidden and partial-sum buffers, which
// the ranker's layers then size: a Humanoid-size window, H D = 5840, takes 157 KB, which fits an
// sm_87 block's 163 KB, where sizing the U-Nets as dense networks took 313 KB; tests/cpp/cuda_layout_test.cpp).
inline Strides plan_strides(int dx, int du, int horizon, const int* const dims[4], const int dense[4], int num_nets,
                            bool dense_diffusion = true) {
  Strides s;
  s.dx = dx;
  s.horizon = horizon;
  s.ld_tau = round4(horizon * (dx + du));
  int ld_in = 4, ld_h = 4, ld_out = 4, ld_rin = 4, ld_rh = 4, ld_rout = 4, widest = 4;
  for (int i = 0; i < num_nets; ++i) {
    const bool ranker = i >= 2;
    if (!ranker && !dense_diffusion) {
      ld_out = most(ld_out, round4(dims[i][dense[i]]));
      continue;
    }
    for (int l = 1; l < dense[i]; ++l) {  // hidden widths: the inputs of layers 1..dense-1
      int& h = ranker ? ld_rh : ld_h;
      h = most(h, round4(dims[i][l]));
    }
    for (int l = 1; l <= dense[i]; ++l) widest = most(widest, round4(dims[i][l]));
    int& in = ranker ? ld_rin : ld_in;
    int& out = ranker ? ld_rout : ld_out;
    in = most(in, round4(dims[i][0]));
    out = most(out, round4(dims[i][dense[i]]));
  }
  s.ld_in = ld_in;
  s.ld_h = ld_h;
  s.ld_out = ld_out;
  s.ld_rin = ld_rin;
  s.ld_rh = ld_rh;
  s.ld_rout = ld_rout;
  s.part_cols = most(4 * kThreads, widest);
  return s;
}

// The unet family in the plan kernel (cuda/unet.cuh): a group of blocks per candidate, its
// conditional and unconditional rows through the network together; activations position-major
// [L][C] per row in the group's scratch, which every block of the group reads and writes (its own
// output channels): a slice of a global buffer, or shared memory for a group of one (UnetPlacement). These are its sizes, as the CPU backend's CpuUnet
// sizes its own (the largest activation over the down path, the joined up-path inputs and the head).
constexpr int kMaxUnetLevels = 8;  // the model file allows 2..8 levels
constexpr int kUnetRows = 2;       // rows per forward: a candidate's conditional and unconditional
constexpr int kUnetGroups = 8;     // GroupNorm groups
// Blocks per candidate at most (a power of two): the unet family's each own whole GroupNorm groups
// of every normalized layer, so it divides kUnetGroups; the mlp family's share column quads.
constexpr int kMaxBlocksPerCandidate = kUnetGroups;

struct UnetShape {
  int horizon, in_channels, out_channels, dim, embed, levels;
  int mults[kMaxUnetLevels];
};

// Float offsets (multiples of 4; of 8 from tensor_at on) of one group's scratch for `rows` rows;
// act and kept_row are one row's floats of an activation buffer and of the kept level outputs;
// head holds the network's output rows while a group of several blocks hands them to each member.
// Every member block has own_floats of its own from tensor_at: with tensor cores (unet_mma.cuh)
// the bfloat16 input rows (half_row elements each), then at stage_at a 16 x 16 float tile per
// warp; then at partial_at the partial sums of the sliced convolutions (unet_slices).
struct UnetScratch {
  int act, kept_row, max_channels, context, hidden;
  int kept_at[kMaxUnetLevels];  // level i's kept output within a row's kept region
  int buf[4], kept, head, stats, tensor_at, own_floats, half_row, stage_at, partial_at, total;
};

// A convolution with few outputs splits each output's sum into S slices of its input channels
// (every tap within a slice), the slices' partial sums added in slice order after (cuda/unet.cuh:
// unet_conv): its chain of dependent multiply-adds is S times shorter and its threads busy. S
// comes from the layer alone (its outputs for kUnetRows rows), never from the group's size, so
// neither does the answer; a layer of kUnetSplitWork outputs or more is not split.
constexpr int kUnetSplitWork = 4096;  // outputs times slices a split layer reaches
constexpr int kUnetMinSlice = 8;      // input channels per slice, at least

// work: kUnetSplitWork, or 0 for no split (MPD_CUDA_UNET_SPLIT=off, for measurement).
MPD_HOST_DEVICE int unet_slices(int cin, int outputs, int work = kUnetSplitWork) {
  if (outputs >= work) return 1;
  const int by_work = (work + outputs - 1) / outputs, by_channels = (cin + kUnetMinSlice - 1) / kUnetMinSlice;
  return most(1, by_work < by_channels ? by_work : by_channels);
}

MPD_HOST_DEVICE int round_to(int n, int m) { return (n + m - 1) / m * m; }

// A block's partial sums of a layer cin -> C channels over len output positions: its outputs
// times slices when split (a group's block has a share of them), else none. Under 2 kUnetSplitWork.
MPD_HOST_DEVICE int unet_partial_need(int cin, int len, int C) {
  const int outputs = kUnetRows * len * C, slices = unet_slices(cin, outputs);
  return slices > 1 ? outputs * slices : 0;
}

MPD_HOST_DEVICE void unet_grow(int* act, int* widest, int ch, int len) {
  *act = most(*act, ch * len);
  *widest = most(*widest, ch);
}

MPD_HOST_DEVICE UnetScratch unet_scratch(const UnetShape& s, int rows, bool tensor_cores = false) {
  UnetScratch u{};
  int length = s.horizon, channels = s.in_channels, act = s.horizon * s.in_channels, widest = s.in_channels;
  // partial: the most partial sums a block's convolution needs (the layers unet_conv runs, as
  // unet_forward walks them: each level's residual blocks and down convolution, the middle, the
  // up path's blocks, the head).
  int kept = 0, partial = 0;
  for (int i = 0; i < s.levels; ++i) {
    const int d = s.dim * s.mults[i];
    unet_grow(&act, &widest, d, length);
    partial = most(partial, most(unet_partial_need(channels, length, d), unet_partial_need(d, length, d)));
    u.kept_at[i] = kept;
    kept += round4(length * d);
    channels = d;
    if (i + 1 < s.levels) {
      partial = most(partial, unet_partial_need(d, length / 2, d));
      length /= 2;
    }
  }
  for (int j = 0; j + 1 < s.levels; ++j) {
    const int d = s.dim * s.mults[s.levels - 2 - j], skip = s.dim * s.mults[s.levels - 1 - j];
    partial = most(partial, most(unet_partial_need(channels + skip, length, d), unet_partial_need(d, length, d)));
    unet_grow(&act, &widest, channels + skip, length);
    length *= 2;
    unet_grow(&act, &widest, d, length);
    channels = d;
  }
  unet_grow(&act, &widest, s.dim, s.horizon);
  unet_grow(&act, &widest, s.out_channels, s.horizon);
  partial = most(partial, most(unet_partial_need(s.dim, s.horizon, s.dim),
                               unet_partial_need(s.dim, s.horizon, s.out_channels)));
  u.act = round4(act);
  u.kept_row = kept;
  u.max_channels = widest;
  u.context = s.dim + 2 * s.embed;
  u.hidden = round4(most(most(4 * s.dim, 4 * s.embed), u.context));
  int at = 0;
  for (int b = 0; b < 4; ++b) {
    u.buf[b] = at;
    at += rows * u.act;
  }
  u.kept = at;
  at += rows * u.kept_row;
  u.head = at;
  at += rows * round4(s.horizon * s.out_channels);
  u.stats = at;
  at += rows * 2 * kUnetGroups;
  u.tensor_at = round_to(at, 8);
  if (tensor_cores) {  // an input of up to max_channels over the longest padded length (kernels <= 5)
    u.half_row = round_to((round_to(s.horizon, 16) + 4) * u.max_channels, 16);
    u.stage_at = round_to(rows * u.half_row / 2, 8);
    u.partial_at = u.stage_at + (kThreads / 32) * 256;
  }
  u.own_floats = u.partial_at + round_to(partial, 8);
  u.total = u.tensor_at + kMaxBlocksPerCandidate * u.own_floats;
  return u;
}

// Where a launch keeps a unet candidate's scratch (PlanParams::unet_placement), in each block's
// shared memory (the tail from unet_tail_at) when it fits, else in the global scratch:
// kUnetAllShared, a group of one block, the whole scratch (the activations never leave the SM);
// kUnetReplicated, a group that is a thread-block cluster (sm_90), a replica of the group's
// scratch in every member, each member writing its channels into every replica through distributed
// shared memory before the barrier that hands them over (so every read is local);
// kUnetOwnShared, the block's own buffers (own_floats: no other block reads them),
// the activations global for the group to share; kUnetGlobal, everything global. The placement
// moves no arithmetic, so the answer does not depend on it.
enum UnetPlacement : int { kUnetGlobal = 0, kUnetOwnShared = 1, kUnetAllShared = 2, kUnetReplicated = 3 };

// Floats of shared memory a block keeps for a placement (its tail).
MPD_HOST_DEVICE int unet_shared_floats(const UnetScratch& u, int placement) {
  return placement == kUnetAllShared || placement == kUnetReplicated ? u.tensor_at + u.own_floats
         : placement == kUnetOwnShared                              ? u.own_floats
                                                                    : 0;
}

// Where that tail starts: over the plan layout's partial sums of dense layers (Layout::part),
// which only the ranker uses, after the denoising (the plan kernel zeroes them again before it
// ranks), at 32 bytes (WMMA's alignment).
MPD_HOST_DEVICE int unet_tail_at(const Layout& l) { return round_to(l.part, 8); }

// A block's shared-memory floats with the tail of `placement` (none: the plan layout alone).
MPD_HOST_DEVICE int shared_floats(const Layout& l, const UnetScratch& u, int placement) {
  const int tail = unet_shared_floats(u, placement);
  return tail > 0 ? most(l.total, unet_tail_at(l) + tail) : l.total;
}

// The placement of a launch whose groups have `members` blocks (a cluster's: `cluster`): the most
// that fits `limit` floats of shared memory per block (the device's opt-in maximum). A group of
// several blocks shares its activations: replicas in a cluster, else only its own buffers there.
MPD_HOST_DEVICE int unet_placement(const Layout& l, const UnetScratch& u, int members, long limit, bool cluster) {
  if (u.total == 0) return kUnetGlobal;  // not the unet family
  const int first = members == 1 ? kUnetAllShared : cluster ? kUnetReplicated : kUnetOwnShared;
  for (int placement = first; placement > kUnetGlobal; --placement) {
    if (placement == kUnetAllShared && members > 1) continue;
    if (shared_floats(l, u, placement) <= limit) return placement;
  }
  return kUnetGlobal;
}

// The FiLM kernel's shared memory (plan_kernel.cuh): the normalized state, one context row
// [time(t), embed(x_0), embed(c)], and two hidden rows (the second also holds the sinusoid of t
// and the condition).
struct UnetFilmLayout {
  int x0, ctx, hid, hid2, total;
};

MPD_HOST_DEVICE UnetFilmLayout unet_film_layout(const UnetScratch& u, int dim, int dx, int cond_dim) {
  UnetFilmLayout f{};
  f.x0 = 0;
  f.ctx = round4(dx);
  f.hid = f.ctx + round4(u.context);
  f.hid2 = f.hid + u.hidden;
  f.total = f.hid2 + most(u.hidden, most(round4(dim), round4(cond_dim)));
  return f;
}

}  // namespace mpd::cuda
