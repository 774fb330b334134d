// The CUDA backend (backend/backend.h): one fused kernel runs all K denoising steps of the
// dynamics model and the planner plus the ranker for a group of candidates per thread block
// (activations in shared memory, transposed weights read through L2, Philox noise generated in
// the kernel); a second one-warp kernel checks the state, selects the candidate and writes its
// de-normalized actions. Two launches per plan (the unet family first launches its FiLM kernel;
// when a candidate is shared by several blocks, a cluster or a cooperative grid, their barriers
// are zeroed first: group_sync.h), no host synchronization and no allocation after make_backend,
// so a plan can be captured in a CUDA graph.
// A refused input cannot return a status without a synchronization: the chosen index says why
// (MPD_INDEX_*) and the actions are NaN.
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
#include <cuda.h>  // the driver's types for context_sms's entry points (no link to the driver library)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "cuda/arena.h"
#include "cuda/noise_kernel.h"
#include "cuda/plan_kernel.cuh"

namespace mpd::cuda {

class CudaBackend final : public Backend {
 public:
  struct Impl;
  explicit CudaBackend(std::unique_ptr<Impl> impl);
  ~CudaBackend() override;
  uint32_t max_candidates() const override;
  mpd_status plan(const PlanRequest& r, mpd_plan_output* output, void* stream) override {
    return r.host_staged ? plan_host(r, output, stream) : plan_device(r, output, stream);
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
  const FamilyKernels* kernels = nullptr;  // the denoiser family's plan kernels (family_kernels)
  int max_candidates = 0;
  int capacity[kVariants] = {};  // blocks of each variant resident at once (0: does not fit)
  int forced = -1;               // variant forced by MPD_CUDA_CANDIDATES_PER_BLOCK, else -1
  // Dynamic shared memory of each variant for groups of one block [0] and of several [1], and
  // where those keep the unet family's scratch (layout.h; the mlp family's has no tail).
  size_t shared_bytes[kVariants][2] = {};
  int placement[kVariants][2] = {};
  size_t prologue_bytes = 0;     // the family's prologue kernel's dynamic shared memory
  int max_group = 1;             // blocks per candidate at most (MPD_CUDA_BLOCKS_PER_CANDIDATE sets it)
  bool clusters = false;         // a candidate's blocks as a thread-block cluster (sm_90), else a cooperative grid
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

// The SMs the current context may use: fewer than the device's in a green context (a partition
// of the GPU; mpd_bench_cuda --sms makes one as a 16-SM stand-in for an Orin), and the blocks
// that run at once, so the candidates' group sizes, follow from them. The device's count where
// the driver cannot say (before CUDA 12.4) or the toolkit cannot ask (before 12.5, as JetPack 6.0's).
static int context_sms(int device_sms) {
#if CUDART_VERSION < 12050
  return device_sms;
#else
  using GetCurrent = CUresult (*)(CUcontext*);
  using GetResource = CUresult (*)(CUcontext, CUdevResource*, CUdevResourceType);
  void* get_current = nullptr;
  void* get_resource = nullptr;
  cudaDriverEntryPointQueryResult found[2] = {};
  if (cudaGetDriverEntryPointByVersion("cuCtxGetCurrent", &get_current, 12040, cudaEnableDefault, &found[0]) !=
          cudaSuccess ||
      cudaGetDriverEntryPointByVersion("cuCtxGetDevResource", &get_resource, 12040, cudaEnableDefault, &found[1]) !=
          cudaSuccess ||
      found[0] != cudaDriverEntryPointSuccess || found[1] != cudaDriverEntryPointSuccess) {
    cudaGetLastError();
    return device_sms;
  }
  CUcontext context = nullptr;
  CUdevResource sms{};
  if (reinterpret_cast<GetCurrent>(get_current)(&context) != CUDA_SUCCESS || context == nullptr ||
      reinterpret_cast<GetResource>(get_resource)(context, &sms, CU_DEV_RESOURCE_TYPE_SM) != CUDA_SUCCESS ||
      sms.sm.smCount == 0) {
    return device_sms;
  }
  return std::min(device_sms, static_cast<int>(sms.sm.smCount));
#endif
}

// MPD_ERR_NOT_AVAILABLE without a device, when the model's rows do not fit a block's shared
// memory, or for an architecture the CUDA backend does not run.
static mpd_status make_backend(const ModelFile& file, int max_candidates, std::unique_ptr<Backend>* out) {
  int device = 0, devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0 || cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return MPD_ERR_NOT_AVAILABLE;
  }
  Arena arena;
  if (!build_arena(file, max_candidates, &arena)) return MPD_ERR_NOT_AVAILABLE;
  auto impl = std::make_unique<CudaBackend::Impl>();
  impl->config = file.config;
  impl->max_candidates = max_candidates;
  if (cudaMalloc(&impl->arena, arena.total * sizeof(float)) != cudaSuccess ||
      cudaMalloc(&impl->norms, arena.norms.size() * sizeof(double)) != cudaSuccess) {
    cudaGetLastError();
    return MPD_ERR_OUT_OF_MEMORY;
  }
  if (cudaMemcpy(impl->arena, arena.image.data(), arena.image.size() * sizeof(float), cudaMemcpyHostToDevice) !=
          cudaSuccess ||
      cudaMemcpy(impl->norms, arena.norms.data(), arena.norms.size() * sizeof(double), cudaMemcpyHostToDevice) !=
          cudaSuccess) {
    cudaGetLastError();
    return MPD_ERR_DEVICE;
  }
  float* a = impl->arena;
  std::vector<unsigned char> structs;  // the family's device structs (arena.h)
  if (!arena_params(file, arena, a, impl->norms, &impl->params, &impl->select, &structs)) {
    return MPD_ERR_BAD_MODEL_FILE;  // the reader checked every tensor: not reached
  }
  PlanParams& p = impl->params;
  impl->host_state = a + arena.host_state_at;
  impl->host_actions = a + arena.host_actions_at;
  impl->host_index = reinterpret_cast<uint32_t*>(a + arena.host_index_at);
  impl->host_values = a + arena.host_values_at;
  impl->host_costs = a + arena.host_costs_at;
  impl->host_windows = a + arena.host_windows_at;
  impl->host_warm = a + arena.host_warm_at;
  impl->host_window = a + arena.host_window_at;
  const FamilyKernels& family = family_kernels(file.config.architecture);
  impl->kernels = &family;

  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return MPD_ERR_DEVICE;
  if (!structs.empty() &&
      cudaMemcpy(a + arena.structs_at, structs.data(), structs.size(), cudaMemcpyHostToDevice) != cudaSuccess) {
    cudaGetLastError();
    return MPD_ERR_DEVICE;
  }
  // A candidate shares blocks only when they run at once: as a thread-block cluster on sm_90
  // (unless MPD_CUDA_GROUP_BARRIER=grid), else in a cooperative launch (group_sync.h).
  const char* barrier = std::getenv("MPD_CUDA_GROUP_BARRIER");
  impl->clusters = prop.major >= 9 && !(barrier != nullptr && std::strcmp(barrier, "grid") == 0);
  const bool together = impl->clusters || prop.cooperativeLaunch;
  bool fits[kVariants] = {};
  const int sms = context_sms(prop.multiProcessorCount);  // after cudaMalloc: the context exists
  // Where the unet family's scratch goes (layout.h): the most of it that fits shared memory;
  // MPD_CUDA_UNET_SCRATCH=global keeps it all in global memory, =own no replicas in clusters
  // (benchmarks).
  const char* scratch = std::getenv("MPD_CUDA_UNET_SCRATCH");
  const bool all_global = scratch != nullptr && std::strcmp(scratch, "global") == 0;
  const bool replicas = impl->clusters && !(scratch != nullptr && std::strcmp(scratch, "own") == 0);
  const long limit = all_global ? 0 : static_cast<long>(prop.sharedMemPerBlockOptin / sizeof(float));
  // MPD_CUDA_UNET_SPLIT=off: no convolution sums its input channels in slices (layout.h; benchmarks).
  const char* split = std::getenv("MPD_CUDA_UNET_SPLIT");
  if (split != nullptr && std::strcmp(split, "off") == 0) p.unet_split_work = 0;
  for (int v = 0; v < family.variants; ++v) {
    const Layout layout = plan_layout(p, family.candidates_per_block[v]);
    for (int several = 0; several < 2; ++several) {
      const int placement = unet_placement(layout, arena.unet_layout, several ? 2 : 1, limit, replicas);
      impl->placement[v][several] = placement;
      impl->shared_bytes[v][several] = static_cast<size_t>(shared_floats(layout, arena.unet_layout, placement)) *
                                       sizeof(float);
    }
    // Blocks resident at once with the larger of the two (the fewer), on the context's SMs.
    const size_t most = std::max(impl->shared_bytes[v][0], impl->shared_bytes[v][1]);
    fits[v] = most <= prop.sharedMemPerBlockOptin &&
              cudaFuncSetAttribute(family.kernels[v], cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   static_cast<int>(most)) == cudaSuccess;
    int per_sm = 0;
    if (fits[v] && cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, family.kernels[v], kThreads, most) ==
                       cudaSuccess) {
      impl->capacity[v] = per_sm * sms;
    }
    cudaGetLastError();
  }
  if (!fits[0]) return MPD_ERR_NOT_AVAILABLE;
  if (family.prologue != nullptr) {
    impl->prologue_bytes = static_cast<size_t>(arena.prologue_floats) * sizeof(float);
    if (impl->prologue_bytes > prop.sharedMemPerBlock) return MPD_ERR_NOT_AVAILABLE;
  }
  // Tuning overrides (benchmarks): MPD_CUDA_CANDIDATES_PER_BLOCK = 1, 2 or 4 for every plan;
  // MPD_CUDA_BLOCKS_PER_CANDIDATE = 1, 2, 4 or 8, the most blocks a candidate may share (default:
  // the family's, FamilyKernels).
  if (const char* env = std::getenv("MPD_CUDA_CANDIDATES_PER_BLOCK")) {
    for (int v = 0; v < family.variants; ++v) {
      if (std::atoi(env) == family.candidates_per_block[v] && fits[v]) impl->forced = v;
    }
  }
  impl->max_group = family.default_blocks_per_candidate;
  if (const char* env = std::getenv("MPD_CUDA_BLOCKS_PER_CANDIDATE")) {
    impl->max_group = std::max(1, std::min(family.max_blocks_per_candidate, std::atoi(env)));
  }
  if (!together) impl->max_group = 1;
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
  const FamilyKernels& family = *m.kernels;
  int v = m.forced;
  for (int i = 0; v < 0 && i < family.variants; ++i) {
    if (m.capacity[i] > 0 &&
        (N + family.candidates_per_block[i] - 1) / family.candidates_per_block[i] <= m.capacity[i]) {
      v = i;
    }
  }
  for (int i = family.variants - 1; v < 0; --i) {
    if (i == 0 || m.capacity[i] > 0) v = i;
  }
  const int cpb = family.candidates_per_block[v];
  const int blocks = (N + cpb - 1) / cpb;
  // Blocks per candidate (a variant of one candidate per block): the most, a power of two up to
  // max_group, whose grid runs at once; their barriers zeroed first.
  int group = 1;
  while (cpb == 1 && 2 * group <= m.max_group && static_cast<long>(blocks) * 2 * group <= m.capacity[v]) {
    group *= 2;
  }
  p.blocks_per_candidate = group;
  p.cluster_groups = group > 1 && m.clusters ? 1 : 0;
  p.unet_placement = m.placement[v][group > 1];
  const size_t shared = m.shared_bytes[v][group > 1];
  bool launched = group == 1 ||
                  cudaMemsetAsync(p.group_arrivals, 0, sizeof(unsigned) * static_cast<size_t>(blocks), stream) ==
                      cudaSuccess;
  if (family.prologue != nullptr) {
    family.prologue<<<static_cast<unsigned>(4 * r.start_level), kThreads, m.prologue_bytes, stream>>>(p);
  }
  const unsigned grid = static_cast<unsigned>(blocks * group);
  if (group == 1) {
    family.kernels[v]<<<grid, kThreads, shared, stream>>>(p);
  } else if (launched) {  // the group's blocks resident at once (group_sync.h)
    launched = launch_groups(family.kernels[v], grid, kThreads, shared, stream, group, m.clusters, p) == cudaSuccess;
  }
  SelectParams s = m.select;
  s.r = r;
  s.window = output->window;
  s.actions = output->actions;
  s.index = output->index_ptr;
  select_kernel<<<1, 32, 0, stream>>>(s);
  const size_t n = static_cast<size_t>(N), HD = static_cast<size_t>(m.config.horizon) * m.config.window_dim();
  bool ok = cudaGetLastError() == cudaSuccess && launched;
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

namespace {

mpd_status make(const ModelFile& file, const std::shared_ptr<const void>&, int max_candidates, int,
                std::unique_ptr<Backend>* out) {
  return make_backend(file, max_candidates, out);
}

}  // namespace

const BackendRecord kRecord{MPD_BACKEND_CUDA, "cuda", true, nullptr, &make, nullptr, &device_available,
                            &fill_normal_host_via_device};

}  // namespace mpd::cuda
