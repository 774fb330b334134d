// The CUDA plan's kernels (design sections 2 and 3) and what they read: the fused plan kernel
// (all K denoising steps of the dynamics model and the planner, then the ranker, for a group of
// candidates per thread block) and the one-warp selection kernel. sampler.cu launches them;
// tests/cpp/cuda_kernel_emulation_test.cpp runs the plan kernel on the CPU as a block of one
// thread against the CPU backend. Included by one translation unit each.
#pragma once

#include "backend/backend.h"
#include "cuda/layout.h"
#include "cuda/unet.cuh"
#include "math/normalizer.h"
#include "math/philox.h"
#include "math/schedule.h"
#include "math/update.h"

// A kernel's dynamic shared memory as float4 name[], 128-byte aligned (the unet family's
// tensor-core buffers there need 32 bytes: unet_tail_at). The CPU emulation
// (tests/cpp/cuda_kernel_emulation_test.cpp) defines its own: each emulated block's thread_local array.
#ifndef MPD_DYNAMIC_SHARED
#define MPD_DYNAMIC_SHARED(name) extern __shared__ __align__(128) float4 name[]
#endif

namespace mpd::cuda {
namespace {

constexpr int kMaxDense = 17;  // dense layers per network (16 hidden layers + output)

// One residual MLP on the device: weight[l] is layer l's transposed weight, [round4(in),
// round4(out)] with zero padding (16-byte rows).
struct DeviceMlp {
  const float* weight[kMaxDense];
  const float* bias[kMaxDense];
  int dims[kMaxDense + 1];  // dims[l] -> dims[l + 1]
  int dense;                // hidden layers + 1
};

struct PlanParams {
  DeviceMlp planner, dynamics, reward, cost;
  const math::StepFloats* steps;  // [K], index k - 1
  const float* embeddings;        // [K, 32]
  const double* state_mid;        // [dx]
  const double* state_half;
  const float* state_quantiles;   // [dx, quantiles] CDF normalizer, or unused when quantiles = 0
  const float* pinned;            // [dx] 1 where a state dimension stays at x_0's value (fixed_state_dims), or null
  float* windows;      // [N, H, D]
  float* values;       // [N]
  float* costs;        // [N]
  int horizon, dx, du, cond_dim, num_steps, reward_outputs, has_cost, quantiles;
  int ld_tau, ld_in, ld_h, ld_out;  // shared-memory row strides (floats, multiples of 4; layout.h)
  int ld_rin, ld_rh, ld_rout;       // the same for the ranker's rows
  int part_cols;                    // partial-sum columns per row: max(4 kThreads, widest padded layer)
  const DevUnet* unets;             // the unet family: [planner, dynamics] in device memory, else null
  float* unet_scratch;              // the unet family: unets[0].scratch.total floats per candidate
  int unet_placement;               // the unet family: where this launch keeps the scratch (UnetPlacement)
  int unet_split_work;              // the unet family: unet_slices' work (kUnetSplitWork; 0: no split)
  float* unet_films;                // the unet family: FiLM rows [2 nets][K levels][2 kinds][ld_films]
  int ld_films;
  unsigned* group_arrivals;         // [N] the candidates' group barriers (group_sync.h), zero at a launch
  float* mlp_exchange;              // the mlp family: [N][2][2][ld_exchange] a group's dense layer outputs
  int ld_exchange;
  int blocks_per_candidate;         // blocks per candidate of this launch
  int cluster_groups;               // the candidates' groups are thread-block clusters (sm_90, group_sync.h)
  PlanRequest r;                    // this plan's (state and warm window in device memory)
};

struct SelectParams {
  float* window;       // [H, D] or nullptr: receives the chosen window
  const float* windows;
  const float* values;
  const float* costs;
  const double* state_mid;  // [dx] for the range check of the state
  const double* state_half;
  const double* action_mid;
  const double* action_half;
  const float* action_quantiles;  // [du, quantiles] CDF normalizer, or unused when quantiles = 0
  int quantiles;
  float* actions;     // [a, du]
  uint32_t* index;    // [1]
  int horizon, dx, du;
  PlanRequest r;      // this plan's: state and warm window (checked for NaN/inf), N, a, budget
};

// The blocks that share a candidate's dense layers (the mlp family with more than one block per
// candidate): each computes its share of the column quads, hands them to the others through its
// group's exchange rows in global memory (two sets, a layer's in turn: a member still reading one
// layer's is never overwritten, since the next barrier waits for it) and takes theirs back.
struct DenseGroup {
  GroupSync* sync = nullptr;  // null or a group of one: one block computes every column
  float* exchange = nullptr;  // [2][rows][ld]
  int ld = 0;
};

// y[r, j] = epilogue(b[j] + sum_i W[j, i] x[r, i]) for r < rows; R = rows at most. wt: the
// transposed weight, [round4(in), round4(out)] with zero padding, so the padding lanes of x
// (finite: shared memory is zeroed at the start) add nothing. part: [S R, round4(out)] scratch.
// epilogue 0: linear, 1: SiLU, 2: x[r, j] + SiLU (residual; in == out). fast: the fast numeric
// mode, x rounded to bfloat16 before its products (the residual is not). With a group, block
// `rank` of G computes column quads [Gq rank / G, Gq (rank + 1) / G) with the same split of the
// inputs (so the same bits) and every block ends with every column.
template <int R>
__device__ void dense(const float* __restrict__ wt, const float* __restrict__ b, int in, int out, const float* x,
                      int ldx, int rows, float* y, int ldy, int epilogue, float* part, bool fast,
                      const DenseGroup& group = {}) {
  const DenseSplit d = dense_split(in, out, static_cast<int>(blockDim.x));
  const int G = d.G, ldw = d.ldw, Q = d.Q, S = d.S, L = d.L;  // see layout.h
  const bool shared = group.sync != nullptr && group.sync->members > 1;
  const int members = shared ? group.sync->members : 1, rank = shared ? group.sync->rank : 0;
  const int g_first = G * rank / members, g_count = G * (rank + 1) / members - g_first;
  for (int task = threadIdx.x; task < g_count * S; task += blockDim.x) {
    const int g = g_first + task % g_count, slice = task / g_count, q0 = slice * L, q1 = min(Q, q0 + L);
    float acc[R][4];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = 0.0f;
    const float4* w = reinterpret_cast<const float4*>(wt) + static_cast<size_t>(q0) * ldw + g;
#pragma unroll 2
    for (int q = q0; q < q1; ++q, w += ldw) {
      const float4 w0 = __ldg(w), w1 = __ldg(w + G), w2 = __ldg(w + 2 * G), w3 = __ldg(w + 3 * G);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r >= rows) continue;
        float4 v = *reinterpret_cast<const float4*>(x + r * ldx + 4 * q);
        v = make_float4(math::layer_input(v.x, fast), math::layer_input(v.y, fast), math::layer_input(v.z, fast),
                        math::layer_input(v.w, fast));
        acc[r][0] = fmaf(v.w, w3.x, fmaf(v.z, w2.x, fmaf(v.y, w1.x, fmaf(v.x, w0.x, acc[r][0]))));
        acc[r][1] = fmaf(v.w, w3.y, fmaf(v.z, w2.y, fmaf(v.y, w1.y, fmaf(v.x, w0.y, acc[r][1]))));
        acc[r][2] = fmaf(v.w, w3.z, fmaf(v.z, w2.z, fmaf(v.y, w1.z, fmaf(v.x, w0.z, acc[r][2]))));
        acc[r][3] = fmaf(v.w, w3.w, fmaf(v.z, w2.w, fmaf(v.y, w1.w, fmaf(v.x, w0.w, acc[r][3]))));
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r < rows) {
        *reinterpret_cast<float4*>(part + (slice * R + r) * ldw + 4 * g) =
            make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
      }
    }
  }
  __syncthreads();
  const int j_first = 4 * g_first, width = max(0, min(out, 4 * (g_first + g_count)) - j_first);
  // The exchange rows of this layer: the set the group's barriers so far leave free.
  float* hand = shared ? group.exchange + ((group.sync->target / members) % 2) * R * group.ld : y;
  const int ld_hand = shared ? group.ld : ldy;
  for (int q = threadIdx.x; q < rows * width; q += blockDim.x) {
    const int r = q / width, j = j_first + q % width;
    float v = 0.0f;
    for (int slice = 0; slice < S; ++slice) v += part[(slice * R + r) * ldw + j];
    v += __ldg(b + j);
    if (epilogue == 1) v = math::silu(v);
    if (epilogue == 2) v = x[r * ldx + j] + math::silu(v);
    hand[r * ld_hand + j] = v;
  }
  if (shared) {
    group.sync->sync();
    for (int q = threadIdx.x; q < rows * out; q += blockDim.x) {
      y[(q / out) * ldy + q % out] = hand[(q / out) * group.ld + q % out];
    }
  }
  __syncthreads();
}

// out[r] = net(in[r]) for r < rows; h0, h1: [R, ld_h] scratch. Ends synchronized.
template <int R>
__device__ void mlp(const DeviceMlp& net, const float* in, int ld_in, int rows, float* h0, float* h1, int ld_h,
                    float* out, int ld_out, float* part, bool fast, const DenseGroup& group = {}) {
  dense<R>(net.weight[0], net.bias[0], net.dims[0], net.dims[1], in, ld_in, rows, h0, ld_h, 1, part, fast, group);
  float* cur = h0;
  float* next = h1;
  for (int l = 1; l < net.dense - 1; ++l) {
    dense<R>(net.weight[l], net.bias[l], net.dims[l], net.dims[l + 1], cur, ld_h, rows, next, ld_h, 2, part, fast,
             group);
    float* t = cur;
    cur = next;
    next = t;
  }
  const int last = net.dense - 1;
  dense<R>(net.weight[last], net.bias[last], net.dims[last], net.dims[last + 1], cur, ld_h, rows, out, ld_out, 0,
           part, fast, group);
}

// The fixed state dimensions (p.pinned) of every planned state back to x_0's values; nothing
// for the robots without them.
__device__ void pin_fixed(const PlanParams& p, float* tau, int cnt, const float* x0) {
  if (p.pinned == nullptr) return;
  const int D = p.dx + p.du, HD = p.horizon * D;
  for (int q = threadIdx.x; q < cnt * HD; q += blockDim.x) {
    const int n = q / HD, e = q % HD, j = e % D;
    if (j < p.dx && p.pinned[j] != 0.0f) tau[n * p.ld_tau + e] = x0[j];
  }
  __syncthreads();
}

// Without eps: the block's cnt initial windows, tau[n, e] = s z(seed, first + n, K + 1)[e] (s the
// temperature's noise scale), or warm-started at st = level k_w's floats, the shifted previous
// window re-noised. With eps: the planner update with noise s z(seed, first + n, step); step 0 =
// the last step, no noise.
__device__ void noise_update(const PlanParams& p, float* tau, int first, int cnt, int step, const float* eps,
                             const math::StepFloats* st, const float* x0) {
  const int HD = p.horizon * (p.dx + p.du), blocks = (HD + 3) / 4;
  for (int q = threadIdx.x; q < cnt * blocks; q += blockDim.x) {
    const int n = q / blocks, blk = q % blocks;
    float lanes[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (step > 0) math::normal4(p.r.seed, static_cast<uint32_t>(first + n), static_cast<uint32_t>(step),
                                static_cast<uint32_t>(blk), lanes);
    for (int lane = 0; lane < 4; ++lane) {
      const int e = 4 * blk + lane;
      if (e >= HD) break;
      float& v = tau[n * p.ld_tau + e];
      const float z = p.r.noise_scale * lanes[lane];
      if (eps == nullptr) {
        if (p.r.warm == nullptr) {
          v = z;
        } else {
          const int D = p.dx + p.du;
          v = math::renoised(p.r.warm[math::shifted_row(e / D, p.r.actions_per_plan, p.horizon) * D + e % D], z, *st);
        }
        continue;
      }
      const float cond = eps[n * p.ld_out + e];
      const float g = p.r.guided ? math::guided(cond, eps[(n + cnt) * p.ld_out + e], p.r.guidance) : cond;
      v = step > 0 ? math::planner_update(v, g, *st, z) : math::posterior_mean(v, g, *st);
    }
  }
  __syncthreads();
  pin_fixed(p, tau, cnt, x0);
}

// State dimension i of the plan's x_0, normalized.
__device__ __forceinline__ float normalized_state(const PlanParams& p, int i) {
  return static_cast<float>(math::normalize(p.r.state[i], p.state_quantiles + i * p.quantiles, p.quantiles,
                                            p.state_mid[i], p.state_half[i]));
}

// Row tail [x_0, c or 0, emb(k)] element i (0-based within the tail) of row r.
__device__ float tail_at(const PlanParams& p, const float* x0, int r, int cnt, int i, const float* emb) {
  if (i < p.dx) return x0[i];
  i -= p.dx;
  if (i < p.cond_dim) return r < cnt ? p.r.cond[i] : 0.0f;
  return emb[i - p.cond_dim];
}

// A block's shared buffers a family's denoisers may use (the mlp family's dense layers), the
// scratch of its candidate and the block's own part of it (the unet family's activations and
// tensor-core buffers, in shared or global memory by UnetPlacement), the barrier of the blocks
// that share the candidate and their exchange rows (the mlp family's, DenseGroup).
struct BlockBuffers {
  float* in;
  float* h0;
  float* h1;
  float* part;
  float* scratch;
  float* own;
  GroupSync* sync;
  float* exchange;
};

// The denoiser families on the device, as the CPU backend's Denoiser per family (cpu/denoiser.h):
// `dynamics` and `planner` put the block's network outputs for `rows` rows (the cnt windows'
// conditional rows, then as many unconditional ones when guided) in the eps rows. A third family
// is one such struct, its kernels in family_kernels (sampler.cu) and its arena in arena.h.

// The mlp family: a window and its tail [x_0, c or 0, emb(k)] as one row through a DeviceMlp, CPB
// candidates per block.
template <int CPB>
struct MlpFamily {
  __device__ static float* scratch(const PlanParams&, int, float*) { return nullptr; }
  __device__ static float* own(const PlanParams&, int, int, float*) { return nullptr; }

  // [flatten(X^k), flatten(U^k), x_0, c, emb(k)]
  __device__ static void dynamics(const PlanParams& p, const BlockBuffers& b, const float* tau, int cnt, int rows,
                                  int k, const float* x0, const float* emb, float* eps) {
    const int H = p.horizon, dx = p.dx, du = p.du, D = dx + du, HD = H * D, in_dim = p.dynamics.dims[0];
    (void)k;
    for (int q = threadIdx.x; q < rows * in_dim; q += blockDim.x) {
      const int r = q / in_dim, i = q % in_dim;
      const float* win = tau + (r % cnt) * p.ld_tau;
      float v;
      if (i < H * dx) {
        v = win[(i / dx) * D + i % dx];
      } else if (i < HD) {
        const int u = i - H * dx;
        v = win[(u / du) * D + dx + u % du];
      } else {
        v = tail_at(p, x0, r, cnt, i - HD, emb);
      }
      b.in[r * p.ld_in + i] = v;
    }
    __syncthreads();
    mlp<2 * CPB>(p.dynamics, b.in, p.ld_in, rows, b.h0, b.h1, p.ld_h, eps, p.ld_out, b.part, p.r.fast_numerics,
                 DenseGroup{b.sync, b.exchange, p.ld_exchange});
  }

  // [flatten(tau'), x_0, c, emb(k)]
  __device__ static void planner(const PlanParams& p, const BlockBuffers& b, const float* tau, int cnt, int rows,
                                 int k, const float* x0, const float* emb, float* eps) {
    const int HD = p.horizon * (p.dx + p.du), in_dim = p.planner.dims[0];
    (void)k;
    for (int q = threadIdx.x; q < rows * in_dim; q += blockDim.x) {
      const int r = q / in_dim, i = q % in_dim;
      b.in[r * p.ld_in + i] = i < HD ? tau[(r % cnt) * p.ld_tau + i] : tail_at(p, x0, r, cnt, i - HD, emb);
    }
    __syncthreads();
    mlp<2 * CPB>(p.planner, b.in, p.ld_in, rows, b.h0, b.h1, p.ld_h, eps, p.ld_out, b.part, p.r.fast_numerics,
                 DenseGroup{b.sync, b.exchange, p.ld_exchange});
  }
};

// The unet family's FiLM row of network net (0 planner, 1 dynamics model), level t, kind 0
// (conditional) or 1 (unconditional).
__device__ __forceinline__ float* unet_film_row(const PlanParams& p, int net, int t, int kind) {
  return p.unet_films + static_cast<size_t>((net * p.num_steps + t) * 2 + kind) * p.ld_films;
}

// The unet family: one candidate per group of blocks, its rows through unet_forward with the
// group's scratch (the windows' rows read in place from each block's shared memory), the FiLM
// rows from the plan's first kernel (unet_film_kernel). The scratch is the candidate's slice of
// the global buffer, or the block's shared memory from `tail` (unet_tail_at), as the launch's
// placement says (layout.h).
struct UnetFamily {
  __device__ static bool in_shared(const PlanParams& p) {
    return p.unet_placement == kUnetAllShared || p.unet_placement == kUnetReplicated;
  }

  __device__ static float* scratch(const PlanParams& p, int candidate, float* tail) {
    if (in_shared(p)) return tail;
    return p.unet_scratch + static_cast<size_t>(candidate) * p.unets[0].scratch.total;
  }

  // Block `rank`'s own buffers (UnetScratch::own_floats: tensor-core rows, partial sums): in its
  // shared memory, or the rank's within the group's global scratch.
  __device__ static float* own(const PlanParams& p, int candidate, int rank, float* tail) {
    if (p.unet_placement == kUnetOwnShared) return tail;
    if (in_shared(p)) return tail + p.unets[0].scratch.tensor_at;
    return unet_own_buffers(scratch(p, candidate, tail), p.unets[0].scratch, rank);
  }

  __device__ static void dynamics(const PlanParams& p, const BlockBuffers& b, const float* tau, int cnt, int rows,
                                  int k, const float*, const float*, float* eps) {
    forward(p, 1, b, tau, cnt, rows, k, eps);
  }

  __device__ static void planner(const PlanParams& p, const BlockBuffers& b, const float* tau, int cnt, int rows,
                                 int k, const float*, const float*, float* eps) {
    forward(p, 0, b, tau, cnt, rows, k, eps);
  }

  __device__ __forceinline__ static void forward(const PlanParams& p, int net, const BlockBuffers& b,
                                                 const float* tau, int cnt, int rows, int k, float* eps) {
    const UnetCall call{tau, p.ld_tau, cnt, rows, {unet_film_row(p, net, k - 1, 0), unet_film_row(p, net, k - 1, 1)},
                        eps, p.ld_out, p.unet_split_work};
    unet_forward(p.unets[net], call, b.scratch, b.own, *b.sync, p.r.fast_numerics);
  }
};

// The unet family's first launch: every FiLM row the plan reads (planner and dynamics model,
// levels t < start_level, conditional and unconditional: row = 4 t + 2 kind + net) into
// p.unet_films, one block per row.
__global__ void __launch_bounds__(kThreads) unet_film_kernel(const PlanParams p) {
  MPD_DYNAMIC_SHARED(smem4);
  float* s = reinterpret_cast<float*>(smem4);
  const int row = static_cast<int>(blockIdx.x), net = row % 2, kind = (row / 2) % 2, t = row / 4;
  const UnetFilmLayout at = unet_film_layout(p.unets[0].scratch, p.unets[0].dim, p.dx, p.cond_dim);
  for (int i = threadIdx.x; i < p.dx; i += blockDim.x) s[at.x0 + i] = normalized_state(p, i);
  __syncthreads();
  unet_films(p.unets[net], t, s + at.x0, kind == 0 ? p.r.cond : nullptr, unet_film_row(p, net, t, kind), s, at,
             p.r.fast_numerics);
}

// CPB candidates per block, planner and dynamics model of the denoiser family Family; the ranker
// is an MLP in every family.
template <int CPB, class Family>
__global__ void __launch_bounds__(kThreads) plan_kernel(const PlanParams p) {
  MPD_DYNAMIC_SHARED(smem4);
  float* smem = reinterpret_cast<float*>(smem4);
  const int H = p.horizon, dx = p.dx, du = p.du, D = dx + du, HD = H * D, K = p.num_steps;
  // Blocks [G c, G c + G) share candidate group c (G = 1 unless a variant of one candidate per
  // block shares it, sampler.cu): each keeps the group's windows in its own shared memory and
  // updates them alike, so the network calls alone are shared; rank 0 ranks the windows and
  // writes them out.
  const int G = p.blocks_per_candidate, group = static_cast<int>(blockIdx.x) / G;
  // Replicas of a group's scratch (a cluster's, layout.h): every member has started before any
  // writes into another's shared memory, and none exits while another may still (the barriers at
  // the start and before the ranking).
  const int replicas = G > 1 && p.unet_placement == kUnetReplicated ? 1 : 0;
  GroupSync sync{G > 1 ? p.group_arrivals + group : nullptr, G, static_cast<int>(blockIdx.x) % G, 0,
                 p.cluster_groups, replicas};
  const int first = group * CPB;
  const int cnt = min(CPB, p.r.num_candidates - first);
  const int rows = p.r.guided ? 2 * cnt : cnt;
  const Layout l = plan_layout(p, CPB);
  float* x0 = smem + l.x0;      // [dx]
  float* gamma = smem + l.gamma;  // [H]: float(discount^t)
  float* tau = smem + l.tau;    // [CPB, ld_tau]
  float* in = smem + l.in;      // [2 CPB, ld_in] or [kRankRows, ld_rin]
  float* h0 = smem + l.h0;      // [2 CPB, ld_h] or [kRankRows, ld_rh]
  float* h1 = smem + l.h1;
  float* eps = smem + l.eps;    // [2 CPB, ld_out] or [kRankRows, ld_rout]
  float* part = smem + l.part;  // dense layers' partial sums
  float* tail = smem + unet_tail_at(l);  // the unet family's scratch in shared memory, if placed there
  const BlockBuffers buffers{in, h0, h1, part, Family::scratch(p, group, tail),
                             Family::own(p, group, sync.rank, tail), &sync,
                             p.mlp_exchange + static_cast<size_t>(group) * 4 * p.ld_exchange};

  for (int i = threadIdx.x; i < l.total; i += blockDim.x) smem[i] = 0.0f;
  __syncthreads();
  if (replicas) sync.sync();
  for (int i = threadIdx.x; i < dx; i += blockDim.x) x0[i] = normalized_state(p, i);
  for (int t = threadIdx.x; t < H; t += blockDim.x) gamma[t] = static_cast<float>(pow(p.r.discount, static_cast<double>(t)));
  __syncthreads();  // x0 is read by the pinning of the initial windows
  noise_update(p, tau, first, cnt, K + 1, nullptr, p.steps + (p.r.start_level - 1), x0);

  for (int k = p.r.start_level; k >= 1; --k) {
    const math::StepFloats st = p.steps[k - 1];
    const float* emb = p.embeddings + (k - 1) * 32;
    if (math::dynamics_at(k, p.r.lambda, p.r.dynamics_every, p.r.dynamics_last)) {
      const int dynamics_rows = p.r.dynamics_guided ? 2 * cnt : cnt;
      Family::dynamics(p, buffers, tau, cnt, dynamics_rows, k, x0, emb, eps);
      for (int q = threadIdx.x; q < cnt * H * dx; q += blockDim.x) {
        const int n = q / (H * dx), e = q % (H * dx);
        const float cond = eps[n * p.ld_out + e];
        const float g = p.r.dynamics_guided
                            ? math::guided(cond, eps[(n + cnt) * p.ld_out + e], p.r.dynamics_guidance)
                            : cond;
        float& x = tau[n * p.ld_tau + (e / dx) * D + e % dx];
        x = math::dynamics_update(x, g, st, p.r.one_minus_lambda, p.r.lambda);
      }
      __syncthreads();
      pin_fixed(p, tau, cnt, x0);
    }
    Family::planner(p, buffers, tau, cnt, rows, k, x0, emb, eps);
    noise_update(p, tau, first, cnt, k > 1 ? k : 0, eps, &st, x0);
  }
  if (p.unet_placement != kUnetGlobal) {  // the ranker's buffers under the unet family's tail, zero again
    __syncthreads();
    for (int i = unet_tail_at(l) + static_cast<int>(threadIdx.x); i < l.total; i += blockDim.x) smem[i] = 0.0f;
    __syncthreads();
  }
  if (replicas) sync.sync();
  if (sync.rank != 0) return;

  for (int q = threadIdx.x; q < cnt * HD; q += blockDim.x) {
    p.windows[static_cast<size_t>(first + q / HD) * HD + q % HD] = tau[(q / HD) * p.ld_tau + q % HD];
  }

  // Ranking: rows [x_t, u_t], t = 0..H-1 (x_0 the current state), kRankRows rows at a time,
  // summed in t order by thread 0 as the CPU backend sums them.
  __shared__ float value_acc, cost_acc;
  __shared__ int fell;
  for (int n = 0; n < cnt; ++n) {
    if (threadIdx.x == 0) {
      value_acc = 0.0f;
      cost_acc = 0.0f;
      fell = -1;
    }
    const float* win = tau + n * p.ld_tau;
    for (int t0 = 0; t0 < H; t0 += kRankRows) {
      const int rr = min(kRankRows, H - t0);
      for (int q = threadIdx.x; q < rr * D; q += blockDim.x) {
        const int r = q / D, i = q % D, t = t0 + r;
        in[r * p.ld_rin + i] = i < dx ? (t == 0 ? x0[i] : win[(t - 1) * D + i]) : win[t * D + i];
      }
      __syncthreads();
      mlp<kRankRows>(p.reward, in, p.ld_rin, rr, h0, h1, p.ld_rh, eps, p.ld_rout, part, p.r.fast_numerics);
      if (threadIdx.x == 0) {
        for (int r = 0; r < rr; ++r) {
          const int t = t0 + r;
          value_acc += eps[r * p.ld_rout] * gamma[t];
          if (p.reward_outputs == 2 && fell < 0 && eps[r * p.ld_rout + 1] > 0.0f) fell = t;
        }
      }
      __syncthreads();
      if (p.has_cost) {
        mlp<kRankRows>(p.cost, in, p.ld_rin, rr, h0, h1, p.ld_rh, eps, p.ld_rout, part, p.r.fast_numerics);
        if (threadIdx.x == 0) {
          for (int r = 0; r < rr; ++r) cost_acc += eps[r * p.ld_rout] * gamma[t0 + r];
        }
        __syncthreads();
      }
    }
    if (threadIdx.x == 0) {
      float value = value_acc;
      if (fell >= 0) value -= kTerminationPenalty * gamma[fell];
      p.values[first + n] = value;
      if (p.has_cost) p.costs[first + n] = cost_acc;
    }
    __syncthreads();
  }
}

// The kernel variants of each family: candidates per thread block, and the blocks one candidate
// (a variant of one candidate per block) may share: at most max_blocks_per_candidate, by default
// default_blocks_per_candidate (MPD_CUDA_BLOCKS_PER_CANDIDATE sets it, sampler.cu; the mlp family
// keeps one block until a GPU has measured its groups). The answer does not depend on the variant
// or the group (each row's arithmetic is the same); only the weight traffic and the parallelism
// do. A family with a prologue launches it first, one block per FiLM row.
constexpr int kVariants = 3;  // variants a family has at most
using PlanKernel = void (*)(PlanParams);
struct FamilyKernels {
  int variants;
  int candidates_per_block[kVariants];
  PlanKernel kernels[kVariants];
  int max_blocks_per_candidate, default_blocks_per_candidate;
  PlanKernel prologue;
};
constexpr FamilyKernels kMlpKernels{3, {1, 2, 4}, {plan_kernel<1, MlpFamily<1>>, plan_kernel<2, MlpFamily<2>>,
                                                   plan_kernel<4, MlpFamily<4>>}, kMaxBlocksPerCandidate, 1, nullptr};
constexpr FamilyKernels kUnetKernels{1, {1}, {plan_kernel<1, UnetFamily>}, kMaxBlocksPerCandidate,
                                     kMaxBlocksPerCandidate, unet_film_kernel};

// The kernels of a model's denoiser family (ModelConfig::architecture).
inline const FamilyKernels& family_kernels(int architecture) {
  return architecture == MPD_ARCH_UNET ? kUnetKernels : kMlpKernels;
}

// One warp: the selection rule of design section 3 step 3 (ties to the lowest index), then the chosen
// candidate's first actions in env units.
__global__ void select_kernel(const SelectParams s) {
  const int lane = threadIdx.x;
  auto better = [&](int a, int b) {
    const float ca = s.r.budget ? s.costs[a] : 0.0f, cb = s.r.budget ? s.costs[b] : 0.0f;
    return math::better_candidate(s.values[a], ca, !s.r.budget || ca <= s.r.cost_budget, s.values[b], cb,
                                  !s.r.budget || cb <= s.r.cost_budget);
  };
  // Each lane the best of every 32nd candidate, then the lanes' bests merged (lower index on ties).
  int best = math::best_candidate(s.values, s.costs, s.r.budget, s.r.cost_budget, lane, s.r.num_candidates, 32);
  bool plan_finite = true;  // every value, then the chosen window and actions (mpd_plan's contract)
  for (int n = lane; n < s.r.num_candidates; n += 32) plan_finite = plan_finite && isfinite(s.values[n]);
  for (int offset = 16; offset > 0; offset /= 2) {
    const int other = __shfl_down_sync(0xffffffffu, best, offset);
    if (other >= 0 && (best < 0 || better(other, best) || (!better(best, other) && other < best))) best = other;
  }
  best = __shfl_sync(0xffffffffu, best, 0);
  const int D = s.dx + s.du;
  bool finite = true, in_range = true;
  for (int i = lane; i < s.dx; i += 32) {
    finite = finite && isfinite(s.r.state[i]);
    in_range = in_range && math::state_in_range(s.r.state[i], s.state_mid[i], s.state_half[i]);
  }
  for (int i = lane; s.r.warm != nullptr && i < s.horizon * D; i += 32) finite = finite && isfinite(s.r.warm[i]);
  finite = __all_sync(0xffffffffu, finite);
  in_range = __all_sync(0xffffffffu, in_range) || !finite;
  finite = finite && in_range;  // a refused input: NaN outputs, the index says which
  const float* window = s.windows + static_cast<size_t>(best) * s.horizon * D;
  for (int q = lane; q < s.horizon * D; q += 32) plan_finite = plan_finite && isfinite(window[q]);
  for (int q = lane; q < s.r.actions_per_plan * s.du; q += 32) {
    const int t = q / s.du, j = q % s.du;
    s.actions[q] = static_cast<float>(math::denormalize(window[t * D + s.dx + j], s.action_quantiles + j * s.quantiles,
                                                        s.quantiles, s.action_mid[j], s.action_half[j]));
    plan_finite = plan_finite && isfinite(s.actions[q]);
  }
  plan_finite = __all_sync(0xffffffffu, plan_finite);
  const bool ok = finite && plan_finite;
  for (int q = lane; s.window != nullptr && q < s.horizon * D; q += 32) s.window[q] = ok ? window[q] : NAN;
  for (int q = lane; !ok && q < s.r.actions_per_plan * s.du; q += 32) s.actions[q] = NAN;  // this lane's own writes
  if (lane == 0 && s.index != nullptr) {
    *s.index = !in_range ? MPD_INDEX_STATE_OUT_OF_RANGE
               : !finite ? MPD_INDEX_NON_FINITE_INPUT
               : !plan_finite ? MPD_INDEX_NON_FINITE_PLAN : static_cast<uint32_t>(best);
  }
}

}  // namespace
}  // namespace mpd::cuda
