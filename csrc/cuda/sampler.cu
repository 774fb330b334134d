// The CUDA backend (backend/backend.h): one fused kernel runs all K denoising steps of the
// dynamics model and the planner plus the ranker for a group of candidates per thread block
// (activations in shared memory, transposed weights read through L2, Philox noise generated in
// the kernel); a second one-warp kernel checks the state, selects the candidate and writes its
// de-normalized actions. Two launches per plan, no host synchronization and no allocation after
// make_backend, so a plan can be captured in a CUDA graph. A refused input cannot return a status
// without a synchronization: the chosen index says why (MPD_INDEX_*) and the actions are NaN.
//
// Thread block b owns candidates [b CPB, b CPB + CPB). Its windows, network inputs, hidden
// activations and network outputs live in shared memory for the whole plan; the conditional and
// unconditional rows of its candidates form one batch of up to 2 CPB rows. A dense layer splits
// its work into tasks (4 output columns x one slice of the inputs): a task reads its weights as
// 16-byte rows of the transposed, zero-padded [in, out] copy (coalesced across the warp, each
// weight read once per block and evaluation for all rows), its inputs as 16-byte broadcasts from
// shared memory, and keeps a 4-column accumulator per row in registers; the slices' partial sums
// are then added in slice order (deterministic, independent of the variant). The per-element
// update rules and the noise are csrc/math's, shared with the CPU backend.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "cuda/layout.h"
#include "cuda/unet.cuh"
#include "backend/backend.h"
#include "math/philox.h"
#include "math/normalizer.h"
#include "math/schedule.h"
#include "math/update.h"

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
  float* windows;      // [N, H, D]
  float* values;       // [N]
  float* costs;        // [N]
  int horizon, dx, du, cond_dim, num_steps, reward_outputs, has_cost, quantiles;
  int ld_tau, ld_in, ld_h, ld_out;  // shared-memory row strides (floats, multiples of 4; layout.h)
  int ld_rin, ld_rh, ld_rout;       // the same for the ranker's rows
  int part_cols;                    // partial-sum columns per row: max(4 kThreads, widest padded layer)
  const DevUnet* unets;             // the unet family: [planner, dynamics] in device memory, else null
  float* unet_scratch;              // the unet family: unets[0].scratch.total floats per block
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

// y[r, j] = epilogue(b[j] + sum_i W[j, i] x[r, i]) for r < rows; R = rows at most. wt: the
// transposed weight, [round4(in), round4(out)] with zero padding, so the padding lanes of x
// (finite: shared memory is zeroed at the start) add nothing. part: [S R, round4(out)] scratch.
// epilogue 0: linear, 1: SiLU, 2: x[r, j] + SiLU (residual; in == out).
template <int R>
__device__ void dense(const float* __restrict__ wt, const float* __restrict__ b, int in, int out, const float* x,
                      int ldx, int rows, float* y, int ldy, int epilogue, float* part) {
  const DenseSplit d = dense_split(in, out, static_cast<int>(blockDim.x));
  const int G = d.G, ldw = d.ldw, Q = d.Q, S = d.S, L = d.L;  // see layout.h
  for (int task = threadIdx.x; task < G * S; task += blockDim.x) {
    const int g = task % G, slice = task / G, q0 = slice * L, q1 = min(Q, q0 + L);
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
        const float4 v = *reinterpret_cast<const float4*>(x + r * ldx + 4 * q);
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
  for (int q = threadIdx.x; q < rows * out; q += blockDim.x) {
    const int r = q / out, j = q % out;
    float v = 0.0f;
    for (int slice = 0; slice < S; ++slice) v += part[(slice * R + r) * ldw + j];
    v += __ldg(b + j);
    if (epilogue == 1) v = math::silu(v);
    if (epilogue == 2) v = x[r * ldx + j] + math::silu(v);
    y[r * ldy + j] = v;
  }
  __syncthreads();
}

// out[r] = net(in[r]) for r < rows; h0, h1: [R, ld_h] scratch. Ends synchronized.
template <int R>
__device__ void mlp(const DeviceMlp& net, const float* in, int ld_in, int rows, float* h0, float* h1, int ld_h,
                    float* out, int ld_out, float* part) {
  dense<R>(net.weight[0], net.bias[0], net.dims[0], net.dims[1], in, ld_in, rows, h0, ld_h, 1, part);
  float* cur = h0;
  float* next = h1;
  for (int l = 1; l < net.dense - 1; ++l) {
    dense<R>(net.weight[l], net.bias[l], net.dims[l], net.dims[l + 1], cur, ld_h, rows, next, ld_h, 2, part);
    float* t = cur;
    cur = next;
    next = t;
  }
  const int last = net.dense - 1;
  dense<R>(net.weight[last], net.bias[last], net.dims[last], net.dims[last + 1], cur, ld_h, rows, out, ld_out, 0,
           part);
}

// Without eps: the block's cnt initial windows, tau[n, e] = s z(seed, first + n, K + 1)[e] (s the
// temperature's noise scale), or warm-started at st = level k_w's floats, the shifted previous
// window re-noised. With eps: the planner update with noise s z(seed, first + n, step); step 0 =
// the last step, no noise.
__device__ void noise_update(const PlanParams& p, float* tau, int first, int cnt, int step, const float* eps,
                             const math::StepFloats* st) {
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
          v = math::renoised(p.r.warm[math::shifted_row(e / D, p.r.shift, p.horizon) * D + e % D], z, *st);
        }
        continue;
      }
      const float cond = eps[n * p.ld_out + e];
      const float g = p.r.guided ? math::guided(cond, eps[(n + cnt) * p.ld_out + e], p.r.guidance) : cond;
      v = step > 0 ? math::planner_update(v, g, *st, z) : math::posterior_mean(v, g, *st);
    }
  }
  __syncthreads();
}

// Row tail [x_0, c or 0, emb(k)] element i (0-based within the tail) of row r.
__device__ float tail_at(const PlanParams& p, const float* x0, int r, int cnt, int i, const float* emb) {
  if (i < p.dx) return x0[i];
  i -= p.dx;
  if (i < p.cond_dim) return r < cnt ? p.r.cond[i] : 0.0f;
  return emb[i - p.cond_dim];
}

// kUnet: planner and dynamics model of the unet family (CPB = 1), through unet_forward with the
// block's global scratch; the ranker is an MLP in either family.
template <int CPB, bool kUnet>
__global__ void __launch_bounds__(kThreads) plan_kernel(const PlanParams p) {
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  const int H = p.horizon, dx = p.dx, du = p.du, D = dx + du, HD = H * D, K = p.num_steps;
  const int first = blockIdx.x * CPB;
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
  float* scratch = kUnet ? p.unet_scratch + static_cast<size_t>(blockIdx.x) * p.unets[0].scratch.total : nullptr;

  for (int i = threadIdx.x; i < l.total; i += blockDim.x) smem[i] = 0.0f;
  __syncthreads();
  for (int i = threadIdx.x; i < dx; i += blockDim.x) {
    x0[i] = static_cast<float>(math::normalize(p.r.state[i], p.state_quantiles + i * p.quantiles, p.quantiles,
                                               p.state_mid[i], p.state_half[i]));
  }
  for (int t = threadIdx.x; t < H; t += blockDim.x) gamma[t] = static_cast<float>(pow(p.r.discount, static_cast<double>(t)));
  noise_update(p, tau, first, cnt, K + 1, nullptr, p.steps + (p.r.start_level - 1));

  for (int k = p.r.start_level; k >= 1; --k) {
    const math::StepFloats st = p.steps[k - 1];
    const float* emb = p.embeddings + (k - 1) * 32;
    if (math::dynamics_at(k, p.r.lambda, p.r.dynamics_every, p.r.dynamics_last)) {
      const int dynamics_rows = p.r.dynamics_guided ? 2 * cnt : cnt;
      if constexpr (kUnet) {
        unet_forward(p.unets[1], dynamics_rows, tau, p.ld_tau, cnt, k - 1, x0, p.r.cond, eps, p.ld_out, scratch);
      } else {
      // [flatten(X^k), flatten(U^k), x_0, c, emb(k)]
      const int in_dim = p.dynamics.dims[0];
      for (int q = threadIdx.x; q < dynamics_rows * in_dim; q += blockDim.x) {
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
        in[r * p.ld_in + i] = v;
      }
      __syncthreads();
      mlp<2 * CPB>(p.dynamics, in, p.ld_in, dynamics_rows, h0, h1, p.ld_h, eps, p.ld_out, part);
      }
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
    }
    if constexpr (kUnet) {
      unet_forward(p.unets[0], rows, tau, p.ld_tau, cnt, k - 1, x0, p.r.cond, eps, p.ld_out, scratch);
    } else {
      // [flatten(tau'), x_0, c, emb(k)]
      const int in_dim = p.planner.dims[0];
      for (int q = threadIdx.x; q < rows * in_dim; q += blockDim.x) {
        const int r = q / in_dim, i = q % in_dim;
        in[r * p.ld_in + i] = i < HD ? tau[(r % cnt) * p.ld_tau + i] : tail_at(p, x0, r, cnt, i - HD, emb);
      }
      __syncthreads();
      mlp<2 * CPB>(p.planner, in, p.ld_in, rows, h0, h1, p.ld_h, eps, p.ld_out, part);
    }
    noise_update(p, tau, first, cnt, k > 1 ? k : 0, eps, &st);
  }

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
      mlp<kRankRows>(p.reward, in, p.ld_rin, rr, h0, h1, p.ld_rh, eps, p.ld_rout, part);
      if (threadIdx.x == 0) {
        for (int r = 0; r < rr; ++r) {
          const int t = t0 + r;
          value_acc += eps[r * p.ld_rout] * gamma[t];
          if (p.reward_outputs == 2 && fell < 0 && eps[r * p.ld_rout + 1] > 0.0f) fell = t;
        }
      }
      __syncthreads();
      if (p.has_cost) {
        mlp<kRankRows>(p.cost, in, p.ld_rin, rr, h0, h1, p.ld_rh, eps, p.ld_rout, part);
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

// The kernel variants: candidates per thread block. The answer does not depend on the variant
// (each row's arithmetic is the same); only the weight traffic and the parallelism do.
constexpr int kVariants = 3;
constexpr int kCandidatesPerBlock[kVariants] = {1, 2, 4};
using PlanKernel = void (*)(PlanParams);
constexpr PlanKernel kPlanKernels[kVariants] = {plan_kernel<1, false>, plan_kernel<2, false>, plan_kernel<4, false>};
constexpr PlanKernel kUnetPlanKernel = plan_kernel<1, true>;  // the unet family: one candidate per block

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

class CudaBackend final : public Backend {
 public:
  struct Impl;
  explicit CudaBackend(std::unique_ptr<Impl> impl);
  ~CudaBackend() override;
  uint32_t max_candidates() const override;
  mpd_status plan(const PlanRequest& r, mpd_plan_output* output, bool host_staged, void* stream) override {
    return host_staged ? plan_host(r, output, stream) : plan_device(r, output, stream);
  }

 private:
  // Asynchronous on the stream; every pointer device memory; index only through index_ptr.
  mpd_status plan_device(const PlanRequest& r, mpd_plan_output* output, void* stream);
  // From host memory: state in and every requested output back through the backend's own device
  // buffers, then the stream synchronized; the index's sentinels become statuses.
  mpd_status plan_host(const PlanRequest& r, mpd_plan_output* output, void* stream);
  std::unique_ptr<Impl> impl_;
};

struct CudaBackend::Impl {
  ModelConfig config;
  bool unet = false;             // the unet family: kUnetPlanKernel, one candidate per block
  int max_candidates = 0;
  int capacity[kVariants] = {};  // blocks of each variant resident at once (0: does not fit)
  int forced = -1;               // variant forced by MPD_CUDA_CANDIDATES_PER_BLOCK, else -1
  size_t shared_bytes[kVariants] = {};  // dynamic shared memory of each variant
  float* arena = nullptr;      // weights, steps, embeddings, then plan buffers
  double* norms = nullptr;     // state mid, half; action mid, half
  PlanParams params{};         // the fixed part of every launch
  SelectParams select{};
  // Device buffers of plan_host: state, actions, index, values, costs, windows.
  float* host_state = nullptr;
  float* host_actions = nullptr;
  uint32_t* host_index = nullptr;
  float* host_values = nullptr;
  float* host_costs = nullptr;
  float* host_windows = nullptr;
  float* host_warm = nullptr;    // [H, D] plan_host's copy of the previous window
  float* host_window = nullptr;  // [H, D] plan_host's chosen window

  ~Impl() {
    cudaFree(arena);
    cudaFree(norms);
  }
};

CudaBackend::CudaBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaBackend::~CudaBackend() = default;

uint32_t CudaBackend::max_candidates() const { return static_cast<uint32_t>(impl_->max_candidates); }

mpd_status make_backend(const ModelFile& file, int max_candidates, std::unique_ptr<Backend>* out) {
  int device = 0, devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0 || cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return MPD_ERR_NOT_AVAILABLE;
  }
  const ModelConfig& c = file.config;
  const MlpWeights* nets[4] = {&file.planner, &file.dynamics, &file.reward, &file.cost};
  const int num_nets = c.has_cost ? 4 : 3;
  for (int i = 0; i < num_nets; ++i) {
    if (static_cast<int>(nets[i]->layers.size()) > kMaxDense) return MPD_ERR_NOT_AVAILABLE;
  }
  auto impl = std::make_unique<CudaBackend::Impl>();
  impl->config = c;
  impl->max_candidates = max_candidates;
  const int H = c.horizon, D = c.window_dim(), HD = H * D, K = c.num_steps;

  // Host image of the arena: every network's transposed layers, steps, embeddings; then the
  // plan buffers (windows, values, costs, plan_host staging) that need no initial contents.
  std::vector<float> image;
  auto align = [&image] { image.resize((image.size() + 31) / 32 * 32, 0.0f); };  // 128-byte rows
  std::vector<size_t> offsets;  // per network and layer: weight offset, bias offset
  for (int i = 0; i < num_nets; ++i) {
    for (const DenseWeights& layer : nets[i]->layers) {
      align();
      offsets.push_back(image.size());
      for (int r = 0; r < round4(layer.in); ++r) {  // [round4(in), round4(out)], zero padded
        for (int j = 0; j < round4(layer.out); ++j) {
          image.push_back(r < layer.in && j < layer.out ? layer.weight[static_cast<size_t>(j) * layer.in + r] : 0.0f);
        }
      }
      align();
      offsets.push_back(image.size());
      image.insert(image.end(), layer.bias.begin(), layer.bias.end());
    }
  }
  // The unet family's planner and dynamics tensors as stored (PyTorch layouts), by name.
  const bool unet = c.architecture == MPD_ARCH_UNET;
  std::vector<std::pair<std::string, size_t>> unet_at;  // tensor name -> offset in the image
  for (const std::vector<NamedTensor>* tensors : {&file.planner_unet, &file.dynamics_unet}) {
    for (const NamedTensor& t : *tensors) {
      align();
      unet_at.emplace_back(t.name, image.size());
      image.insert(image.end(), t.data.begin(), t.data.end());
    }
  }
  UnetShape shape{};
  if (unet) {
    if (c.unet_mults.size() > static_cast<size_t>(kMaxUnetLevels)) return MPD_ERR_NOT_AVAILABLE;
    shape = {H, D, D, c.unet_dim, c.unet_embed_dim, static_cast<int>(c.unet_mults.size()), {}};
    for (size_t i = 0; i < c.unet_mults.size(); ++i) shape.mults[i] = c.unet_mults[i];
  }
  const UnetScratch unet_scratch_layout = unet_scratch(shape, kUnetRows);  // the planner's: D >= dx outputs
  align();
  const size_t steps_at = image.size();
  for (int k = 1; k <= K; ++k) {
    const math::StepCoefficients s = math::cosine_step(k, K);
    const math::StepFloats f{static_cast<float>(s.sqrt_alpha_bar), static_cast<float>(s.sqrt_one_minus_alpha_bar),
                             static_cast<float>(s.posterior_c1), static_cast<float>(s.posterior_c2),
                             static_cast<float>(s.posterior_sigma), c.prediction == MPD_PREDICT_SAMPLE ? 1 : 0};
    static_assert(sizeof(math::StepFloats) == 6 * sizeof(float), "StepFloats is five floats and an int");
    float as_floats[6];
    std::memcpy(as_floats, &f, sizeof f);
    image.insert(image.end(), as_floats, as_floats + 6);
  }
  align();
  const size_t emb_at = image.size();
  image.resize(image.size() + static_cast<size_t>(K) * 32);
  for (int k = 1; k <= K; ++k) math::step_embedding(k, image.data() + emb_at + static_cast<size_t>(k - 1) * 32);
  align();
  const size_t quantiles_at = image.size();  // CDF tables: states [dx, Q], then actions [du, Q]
  image.insert(image.end(), file.state_quantiles.begin(), file.state_quantiles.end());
  image.insert(image.end(), file.action_quantiles.begin(), file.action_quantiles.end());
  align();
  const size_t N = static_cast<size_t>(max_candidates);
  const size_t buffers_at = image.size();
  const size_t windows_at = buffers_at, values_at = windows_at + N * HD, costs_at = values_at + N;
  const size_t host_state_at = costs_at + N, host_actions_at = host_state_at + round4(c.state_dim);
  const size_t host_index_at = host_actions_at + static_cast<size_t>(H) * c.action_dim;
  const size_t host_values_at = host_index_at + 4, host_costs_at = host_values_at + N;
  const size_t host_windows_at = host_costs_at + N, host_warm_at = host_windows_at + N * HD;
  const size_t host_window_at = host_warm_at + HD;
  // The unet family: its two DevUnet structs, then every block's scratch.
  const size_t unets_at = (host_window_at + HD + 31) / 32 * 32;
  const size_t unet_scratch_at = unets_at + (unet ? (2 * sizeof(DevUnet) / sizeof(float) + 32) / 32 * 32 : 0);
  const size_t total = unet_scratch_at + (unet ? N * static_cast<size_t>(unet_scratch_layout.total) : 0);

  if (cudaMalloc(&impl->arena, total * sizeof(float)) != cudaSuccess ||
      cudaMalloc(&impl->norms, 2 * static_cast<size_t>(D) * sizeof(double)) != cudaSuccess) {
    cudaGetLastError();
    return MPD_ERR_OUT_OF_MEMORY;
  }
  std::vector<double> norms;  // the file's: state mid, half; action mid, half
  for (const auto* v : {&file.state_mid, &file.state_half, &file.action_mid, &file.action_half}) {
    norms.insert(norms.end(), v->begin(), v->end());
  }
  if (cudaMemcpy(impl->arena, image.data(), image.size() * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess ||
      cudaMemcpy(impl->norms, norms.data(), norms.size() * sizeof(double), cudaMemcpyHostToDevice) != cudaSuccess) {
    cudaGetLastError();
    return MPD_ERR_DEVICE;
  }

  float* a = impl->arena;
  PlanParams& p = impl->params;
  DeviceMlp* device_nets[4] = {&p.planner, &p.dynamics, &p.reward, &p.cost};
  size_t o = 0;
  const int* dims[4] = {};
  int dense[4] = {};
  for (int i = 0; i < num_nets; ++i) {
    DeviceMlp& m = *device_nets[i];
    m.dense = static_cast<int>(nets[i]->layers.size());
    for (int l = 0; l < m.dense; ++l) {
      const DenseWeights& layer = nets[i]->layers[static_cast<size_t>(l)];
      m.weight[l] = a + offsets[o++];
      m.bias[l] = a + offsets[o++];
      m.dims[l] = layer.in;
      m.dims[l + 1] = layer.out;
    }
    dims[i] = m.dims;
    dense[i] = m.dense;
  }
  // The unet family's planner and dynamics take no MLP rows: their outputs [H, D] and [H, dx]
  // land in the eps rows, so the strides hold H D.
  const int unet_dims[2][2] = {{HD, HD}, {HD, H * c.state_dim}};
  if (unet) {
    for (int i = 0; i < 2; ++i) {
      dims[i] = unet_dims[i];
      dense[i] = 1;
    }
  }
  const Strides strides = plan_strides(c.state_dim, c.action_dim, H, dims, dense, num_nets);
  p.steps = reinterpret_cast<const math::StepFloats*>(a + steps_at);
  p.embeddings = a + emb_at;
  p.state_mid = impl->norms;
  p.state_half = impl->norms + c.state_dim;
  p.quantiles = c.quantiles;
  p.state_quantiles = a + quantiles_at;
  p.windows = a + windows_at;
  p.values = a + values_at;
  p.costs = a + costs_at;
  p.horizon = H;
  p.dx = c.state_dim;
  p.du = c.action_dim;
  p.cond_dim = c.cond_dim;
  p.num_steps = K;
  p.reward_outputs = c.reward_outputs;
  p.has_cost = c.has_cost ? 1 : 0;
  p.ld_tau = strides.ld_tau;
  p.ld_in = strides.ld_in;
  p.ld_h = strides.ld_h;
  p.ld_out = strides.ld_out;
  p.ld_rin = strides.ld_rin;
  p.ld_rh = strides.ld_rh;
  p.ld_rout = strides.ld_rout;
  p.part_cols = strides.part_cols;

  SelectParams& s = impl->select;
  s.windows = p.windows;
  s.values = p.values;
  s.costs = p.costs;
  s.state_mid = impl->norms;
  s.state_half = impl->norms + c.state_dim;
  s.action_mid = impl->norms + 2 * c.state_dim;
  s.action_half = s.action_mid + c.action_dim;
  s.quantiles = c.quantiles;
  s.action_quantiles = a + quantiles_at + file.state_quantiles.size();
  s.horizon = H;
  s.dx = c.state_dim;
  s.du = c.action_dim;

  impl->host_state = a + host_state_at;
  impl->host_actions = a + host_actions_at;
  impl->host_index = reinterpret_cast<uint32_t*>(a + host_index_at);
  impl->host_values = a + host_values_at;
  impl->host_costs = a + host_costs_at;
  impl->host_windows = a + host_windows_at;
  impl->host_warm = a + host_warm_at;
  impl->host_window = a + host_window_at;

  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return MPD_ERR_DEVICE;
  if (unet) {
    DevUnet nets_host[2];
    for (int i = 0; i < 2; ++i) {
      if (!device_unet(c, i == 0 ? "planner" : "dynamics", unet_at, a, unet_scratch_layout, &nets_host[i])) {
        return MPD_ERR_BAD_MODEL_FILE;  // the reader checked every tensor: not reached
      }
    }
    if (cudaMemcpy(a + unets_at, nets_host, sizeof nets_host, cudaMemcpyHostToDevice) != cudaSuccess) {
      cudaGetLastError();
      return MPD_ERR_DEVICE;
    }
    p.unets = reinterpret_cast<const DevUnet*>(a + unets_at);
    p.unet_scratch = a + unet_scratch_at;
    impl->unet = true;
    impl->shared_bytes[0] = static_cast<size_t>(plan_layout(p, 1).total) * sizeof(float);
    if (impl->shared_bytes[0] > prop.sharedMemPerBlockOptin ||
        cudaFuncSetAttribute(kUnetPlanKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(impl->shared_bytes[0])) != cudaSuccess) {
      cudaGetLastError();
      return MPD_ERR_NOT_AVAILABLE;
    }
    out->reset(new CudaBackend(std::move(impl)));
    return MPD_OK;
  }
  bool fits[kVariants] = {};
  for (int v = 0; v < kVariants; ++v) {
    impl->shared_bytes[v] = static_cast<size_t>(plan_layout(p, kCandidatesPerBlock[v]).total) * sizeof(float);
    fits[v] = impl->shared_bytes[v] <= prop.sharedMemPerBlockOptin &&
              cudaFuncSetAttribute(kPlanKernels[v], cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   static_cast<int>(impl->shared_bytes[v])) == cudaSuccess;
    cudaGetLastError();
  }
  if (!fits[0]) return MPD_ERR_NOT_AVAILABLE;
  for (int v = 0; v < kVariants; ++v) {
    int per_sm = 0;
    if (fits[v] && cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kPlanKernels[v], kThreads,
                                                                 impl->shared_bytes[v]) == cudaSuccess) {
      impl->capacity[v] = per_sm * prop.multiProcessorCount;
    }
    cudaGetLastError();
  }
  // Tuning override (benchmarks): MPD_CUDA_CANDIDATES_PER_BLOCK = 1, 2 or 4 for every plan.
  if (const char* env = std::getenv("MPD_CUDA_CANDIDATES_PER_BLOCK")) {
    for (int v = 0; v < kVariants; ++v) {
      if (std::atoi(env) == kCandidatesPerBlock[v] && fits[v]) impl->forced = v;
    }
  }
  cudaGetLastError();
  out->reset(new CudaBackend(std::move(impl)));
  return MPD_OK;
}

mpd_status CudaBackend::plan_device(const PlanRequest& r, mpd_plan_output* output, void* stream_ptr) {
  Impl& m = *impl_;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const int N = r.num_candidates;
  PlanParams p = m.params;
  p.r = r;
  // The fewest candidates per block whose blocks all run at once (one wave): a block's time grows
  // with its candidates, a second wave doubles the plan's (measured on an H100/H200, N = 16..1024).
  // Past four candidates per block, the largest variant that fits. The answer does not depend on it.
  int v = m.unet ? 0 : m.forced;
  for (int i = 0; v < 0 && i < kVariants; ++i) {
    if (m.capacity[i] > 0 && (N + kCandidatesPerBlock[i] - 1) / kCandidatesPerBlock[i] <= m.capacity[i]) v = i;
  }
  for (int i = kVariants - 1; v < 0; --i) {
    if (i == 0 || m.capacity[i] > 0) v = i;
  }
  const int cpb = kCandidatesPerBlock[v];
  const unsigned grid = static_cast<unsigned>((N + cpb - 1) / cpb);
  (m.unet ? kUnetPlanKernel : kPlanKernels[v])<<<grid, kThreads, m.shared_bytes[v], stream>>>(p);
  SelectParams s = m.select;
  s.r = r;
  s.window = output->window;
  s.actions = output->actions;
  s.index = output->index_ptr;
  select_kernel<<<1, 32, 0, stream>>>(s);
  const size_t n = static_cast<size_t>(N), HD = static_cast<size_t>(m.config.horizon) * m.config.window_dim();
  bool ok = cudaGetLastError() == cudaSuccess;
  if (ok && output->values) {
    ok = cudaMemcpyAsync(output->values, p.values, n * sizeof(float), cudaMemcpyDefault, stream) == cudaSuccess;
  }
  if (ok && output->costs && m.config.has_cost) {
    ok = cudaMemcpyAsync(output->costs, p.costs, n * sizeof(float), cudaMemcpyDefault, stream) == cudaSuccess;
  }
  if (ok && output->windows) {
    ok = cudaMemcpyAsync(output->windows, p.windows, n * HD * sizeof(float), cudaMemcpyDefault, stream) ==
         cudaSuccess;
  }
  if (!ok) cudaGetLastError();
  return ok ? MPD_OK : MPD_ERR_DEVICE;
}

mpd_status CudaBackend::plan_host(const PlanRequest& r, mpd_plan_output* output, void* stream_ptr) {
  Impl& m = *impl_;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const ModelConfig& c = m.config;
  const size_t n = static_cast<size_t>(r.num_candidates), HD = static_cast<size_t>(c.horizon) * c.window_dim();
  if (cudaMemcpyAsync(m.host_state, r.state, sizeof(float) * c.state_dim, cudaMemcpyHostToDevice, stream) !=
          cudaSuccess ||
      (r.warm != nullptr &&
       cudaMemcpyAsync(m.host_warm, r.warm, sizeof(float) * HD, cudaMemcpyHostToDevice, stream) != cudaSuccess)) {
    cudaGetLastError();
    return MPD_ERR_DEVICE;
  }
  PlanRequest staged = r;
  staged.state = m.host_state;
  staged.warm = r.warm != nullptr ? m.host_warm : nullptr;
  mpd_plan_output device{m.host_actions, 0, output->values ? m.host_values : nullptr,
                         output->costs ? m.host_costs : nullptr, output->windows ? m.host_windows : nullptr,
                         m.host_index, output->window ? m.host_window : nullptr};
  mpd_status status = plan_device(staged, &device, stream);
  if (status != MPD_OK) return status;
  uint32_t index = 0;
  bool ok = cudaMemcpyAsync(output->actions, m.host_actions, sizeof(float) * r.actions_per_plan * c.action_dim,
                            cudaMemcpyDeviceToHost, stream) == cudaSuccess &&
            cudaMemcpyAsync(&index, m.host_index, sizeof index, cudaMemcpyDeviceToHost, stream) == cudaSuccess;
  if (ok && output->values) {
    ok = cudaMemcpyAsync(output->values, m.host_values, n * sizeof(float), cudaMemcpyDeviceToHost, stream) ==
         cudaSuccess;
  }
  if (ok && output->costs && c.has_cost) {
    ok = cudaMemcpyAsync(output->costs, m.host_costs, n * sizeof(float), cudaMemcpyDeviceToHost, stream) ==
         cudaSuccess;
  }
  if (ok && output->windows) {
    ok = cudaMemcpyAsync(output->windows, m.host_windows, n * HD * sizeof(float), cudaMemcpyDeviceToHost,
                         stream) == cudaSuccess;
  }
  if (ok && output->window) {
    ok = cudaMemcpyAsync(output->window, m.host_window, HD * sizeof(float), cudaMemcpyDeviceToHost, stream) ==
         cudaSuccess;
  }
  ok = ok && cudaStreamSynchronize(stream) == cudaSuccess;
  if (!ok) {
    cudaGetLastError();
    return MPD_ERR_DEVICE;
  }
  if (index == MPD_INDEX_NON_FINITE_INPUT) return MPD_ERR_NON_FINITE;
  if (index == MPD_INDEX_NON_FINITE_PLAN) return MPD_ERR_NON_FINITE_PLAN;
  if (index == MPD_INDEX_STATE_OUT_OF_RANGE) return MPD_ERR_STATE_OUT_OF_RANGE;
  output->index = index;
  if (output->index_ptr) *output->index_ptr = index;
  return MPD_OK;
}

}  // namespace mpd::cuda
