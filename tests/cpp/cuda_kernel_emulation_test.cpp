// The CUDA backend's plan kernels (csrc/cuda/plan_kernel.cuh) run on the CPU, each block a host
// thread running as a block of one thread (all of a grid's blocks at once, as a cooperative launch
// has them), with its parameters and arena built by the backend's own host code (csrc/cuda/arena.h)
// in host memory: windows and values against the CPU backend's mpd_plan on the same model file,
// seed and options, for both families, every kernel variant, the unet family's FiLM kernel and
// groups of blocks per candidate (the same bits for every group size), guidance of each model,
// lambda and its schedule, both prediction targets and normalizers, the cost model, temperature
// and a warm start. What it cannot check: the kernels' 512-thread work split and warp reductions,
// the selection kernel, launches and copies (tests/cpp/cuda_plan_test.cpp on a GPU).
//
// Tolerances: two float32 evaluations in different summation orders; by the triangle inequality
// at most twice one backend's deviation from exact arithmetic, measured on these models by
// benchmarks/diagnostics/float32_error.py (benchmarks/results/float32_error_tiny*.json): up to
// 1.04e-4 for the mlp at N <= 64 and 6.71e-5 for the unet (the difference of two float32 orders
// with a dynamics schedule), so twice those, the GPU test's tolerances. The fast numeric mode
// (inputs of every layer rounded to bfloat16) is held to twice the distance between its plan and
// the exact mode's instead, with the reasoning of cuda_unet_emulation_test.cpp (a float32
// difference can land a rounded input on the other side of a bfloat16 boundary), and must move the
// plan away from the exact mode's (the mode is on).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>

// CUDA's device dialect for a host compiler: a block of one thread per host thread, shared memory
// (and the block index) the thread's own.
#define __device__
#define __noinline__
#define __global__
#define __shared__ thread_local
#define __launch_bounds__(n)
#define __forceinline__ inline
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
template <class T>
T __ldg(const T* p) {
  return *p;
}
struct ThreadIndex {
  unsigned x;
};
static const ThreadIndex threadIdx{0}, blockDim{1};
static thread_local ThreadIndex blockIdx{0};
inline void __syncthreads() {}
inline bool __all_sync(unsigned, bool predicate) { return predicate; }
template <class T>
T __shfl_down_sync(unsigned, T value, int) {
  return value;
}
template <class T>
T __shfl_sync(unsigned, T value, int) {
  return value;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
using std::isfinite;

// A block's dynamic shared memory: 1 MiB, more than any layout here; 128-byte aligned, as the
// kernels declare theirs.
alignas(128) thread_local float4 emulated_shared[1 << 16];
#define MPD_DYNAMIC_SHARED(name) float4* name = emulated_shared
// Every emulated block's shared memory by grid index, for a cluster's replicas (group_sync.h).
std::vector<float4*> emulated_blocks;
#define MPD_PEER_SHARED(local, member, block)            \
  (reinterpret_cast<float*>(emulated_blocks[(block)]) + \
   ((local) - reinterpret_cast<float*>(static_cast<float4*>(emulated_shared))))

#include "backend/backend.h"
#include "check.h"
#include "wmma_emulation.h"  // before the kernels: their tensor-core layers
#include "cuda/arena.h"
#include "model_writer.h"


namespace {

struct Plan {
  std::vector<float> windows, values;
};

// The CPU backend's plan (host API).
Plan cpu_plan(const mpd_model* model, const float* state, const float* warm, uint64_t seed, const mpd_options& o,
              size_t HD) {
  mpd_workspace* ws = nullptr;
  CHECK(mpd_workspace_create(model, MPD_BACKEND_CPU, o.num_candidates, 1, &ws) == MPD_OK);
  Plan p{std::vector<float>(o.num_candidates * HD), std::vector<float>(o.num_candidates)};
  std::vector<float> actions(64);
  mpd_plan_output out{actions.data(), 0, p.values.data(), nullptr, p.windows.data(), nullptr, nullptr};
  CHECK(mpd_plan_warm(model, ws, state, warm, seed, &o, &out, nullptr) == MPD_OK);
  mpd_workspace_free(ws);
  return p;
}

// An H100's opt-in shared memory per block (227 KiB), in floats: where the sampler would place the
// unet family's scratch on one (sampler.cu).
constexpr long kH100SharedFloats = 232448 / 4;
constexpr int kSamplerPlacement = -1;

// The plan kernels' plan, CPB candidates per block; the unet family with `group` blocks per
// candidate, after its FiLM kernel, its scratch placed as the sampler would on an H100 or as
// `placement` says (layout.h).
template <int CPB, bool kUnet>
Plan kernel_plan(const mpd::ModelFile& file, const float* state, const float* warm, uint64_t seed,
                 const mpd_options& o, int group = 1, int placement = kSamplerPlacement) {
  using namespace mpd::cuda;
  Arena arena;
  CHECK(build_arena(file, static_cast<int>(o.num_candidates), &arena));
  std::vector<float> memory(arena.total, NAN);  // the arena in host memory; the plan buffers unset
  std::copy(arena.image.begin(), arena.image.end(), memory.begin());
  PlanParams p;
  SelectParams s;
  std::vector<unsigned char> structs;  // the family's device structs, as make_backend copies them
  CHECK(arena_params(file, arena, memory.data(), arena.norms.data(), &p, &s, &structs));
  CHECK(structs.size() == (kUnet ? 2 * sizeof(DevUnet) : 0));
  if (!structs.empty()) std::memcpy(memory.data() + arena.structs_at, structs.data(), structs.size());
  p.r = mpd::resolve_plan(file.config, o, state, warm, seed);
  const Layout layout = plan_layout(p, CPB);
  // The sampler's on an H100 (clusters: replicas) unless a placement is given; the replicas'
  // groups are clusters.
  p.unet_placement = placement != kSamplerPlacement
                         ? placement
                         : unet_placement(layout, arena.unet_layout, group, kH100SharedFloats, true);
  p.cluster_groups = group > 1 && p.unet_placement == kUnetReplicated ? 1 : 0;
  CHECK(static_cast<size_t>(shared_floats(layout, arena.unet_layout, p.unet_placement)) * sizeof(float) <=
        sizeof emulated_shared);
  const int blocks = (static_cast<int>(o.num_candidates) + CPB - 1) / CPB;
  // The family's kernels, as family_kernels (plan_kernel.cuh) picks them for the model's architecture.
  const FamilyKernels& family = family_kernels(file.config.architecture);
  CHECK(family.kernels[0] == (kUnet ? kUnetKernels.kernels[0] : kMlpKernels.kernels[0]));
  CHECK(group <= family.max_blocks_per_candidate);
  if (kUnet) {
    for (int row = 0; row < 4 * p.r.start_level; ++row) {  // the FiLM kernel, one block per row
      blockIdx.x = static_cast<unsigned>(row);
      std::memset(emulated_shared, 0xff, sizeof emulated_shared);
      CHECK(family.prologue == unet_film_kernel);
      unet_film_kernel(p);
    }
  }
  p.blocks_per_candidate = group;
  if (group > 1) std::fill(p.group_arrivals, p.group_arrivals + blocks, 0u);  // the launch's memset (sampler.cu)
  std::vector<std::thread> grid;
  emulated_blocks.assign(static_cast<size_t>(blocks * group), nullptr);
  for (int b = 0; b < blocks * group; ++b) {
    grid.emplace_back([&p, b] {
      blockIdx.x = static_cast<unsigned>(b);
      emulated_blocks[static_cast<size_t>(b)] = emulated_shared;   // before the kernel's first barrier
      std::memset(emulated_shared, 0xff, sizeof emulated_shared);  // NaN: the kernel zeroes what it uses
      using Family = std::conditional_t<kUnet, UnetFamily, MlpFamily<CPB>>;
      plan_kernel<CPB, Family>(p);
    });
  }
  for (std::thread& t : grid) t.join();
  const size_t HD = static_cast<size_t>(file.config.horizon) * file.config.window_dim();
  return {std::vector<float>(p.windows, p.windows + o.num_candidates * HD),
          std::vector<float>(p.values, p.values + o.num_candidates)};
}

float max_abs(const std::vector<float>& a, const std::vector<float>& b) {
  float m = a.size() == b.size() ? 0.0f : INFINITY;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::isfinite(a[i]) ? std::fmax(m, std::fabs(a[i] - b[i])) : INFINITY;
  return m;
}

float max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) {
    m = std::isfinite(a[i]) ? std::fmax(m, std::fabs(a[i] - b[i]) / std::fmax(1.0f, std::fabs(b[i]))) : INFINITY;
  }
  return m;
}

void check_model(const testing::TinyModel& spec, float tolerance) {
  const std::vector<uint8_t> bytes = testing::write_model(spec);
  mpd::ModelFile file;
  std::string error;
  CHECK(mpd::read_model_file(bytes.data(), bytes.size(), &file, &error) == MPD_OK);
  mpd_model* model = nullptr;
  CHECK(mpd_model_load_memory(bytes.data(), bytes.size(), &model, nullptr, 0) == MPD_OK);
  if (model == nullptr) return;
  const bool unet = spec.architecture == "unet";
  const size_t HD = static_cast<size_t>(file.config.horizon) * file.config.window_dim();
  const float state[3] = {0.3f, -1.1f, 1.7f};
  float worst_window = 0.0f, worst_value = 0.0f;
  int plans = 0;
  for (uint32_t n : {1u, 5u, 16u}) {
    for (double w : {1.0, 1.7}) {
      for (double lambda : {0.0, 0.5, 1.0}) {
        mpd_options o;
        mpd_model_default_options(model, &o);
        o.num_candidates = n;
        o.guidance = w;
        o.dynamics_weight = lambda;
        o.dynamics_guidance = lambda == 0.5 ? 1.0 : 2.5;
        o.dynamics_every = lambda == 1.0 ? 2 : 1;
        o.temperature = w == 1.0 ? 1.0 : 0.05;
        o.actions_per_plan = 2;
        if (spec.has_cost) {
          o.has_cost_limit = 1;
          o.cost_limit = 3.0;
        }
        const Plan want = cpu_plan(model, state, nullptr, 7, o, HD);
        if (!file.config.fixed_state_dims.empty()) {  // every planned state keeps x_0's fixed dimensions
          const int D = file.config.window_dim();
          for (size_t e = 0; e < want.windows.size(); ++e) {
            for (int j : file.config.fixed_state_dims) {
              if (static_cast<int>(e % D) == j) CHECK(want.windows[e] == want.windows[j]);
            }
          }
        }
        std::vector<Plan> got;
        if (unet) {
          got.push_back(kernel_plan<1, true>(file, state, nullptr, 7, o));
          got.push_back(kernel_plan<1, true>(file, state, nullptr, 7, o, n == 16 ? 2 : 8));
          // Blocks per candidate change who computes which channels, not the arithmetic.
          CHECK(got[1].windows == got[0].windows && got[1].values == got[0].values);
        } else {
          got.push_back(kernel_plan<1, false>(file, state, nullptr, 7, o));
          got.push_back(kernel_plan<2, false>(file, state, nullptr, 7, o));
          got.push_back(kernel_plan<4, false>(file, state, nullptr, 7, o));
          got.push_back(kernel_plan<1, false>(file, state, nullptr, 7, o, n == 16 ? 2 : 8));
          // The variants and groups differ in the grid only: bit for bit the same (as on a GPU).
          for (size_t i = 1; i < got.size(); ++i) {
            CHECK(got[i].windows == got[0].windows && got[i].values == got[0].values);
          }
        }
        worst_window = std::fmax(worst_window, max_abs(got[0].windows, want.windows));
        worst_value = std::fmax(worst_value, max_rel(got[0].values, want.values));
        ++plans;
        if (n == 5 && lambda == 1.0) {  // warm-started from the last candidate's window at k_w = 2
          o.warm_start_level = 2;
          const float* previous = want.windows.data() + (n - 1) * HD;
          const Plan warm_want = cpu_plan(model, state, previous, 9, o, HD);
          const Plan warm_got = unet ? kernel_plan<1, true>(file, state, previous, 9, o, 4)
                                     : kernel_plan<1, false>(file, state, previous, 9, o);
          worst_window = std::fmax(worst_window, max_abs(warm_got.windows, warm_want.windows));
          ++plans;
        }
      }
    }
  }
  // The fast numeric mode: kernel against the CPU backend, and against the exact mode.
  float worst_fast = 0.0f, fast_moved = 0.0f;
  for (uint32_t n : {1u, 5u}) {
    mpd_options o;
    mpd_model_default_options(model, &o);
    o.num_candidates = n;
    o.guidance = 1.7;
    o.dynamics_weight = 0.5;
    o.temperature = 0.05;
    const Plan exact = cpu_plan(model, state, nullptr, 11, o, HD);
    o.fast_numerics = 1;
    const Plan want = cpu_plan(model, state, nullptr, 11, o, HD);
    const Plan got = unet ? kernel_plan<1, true>(file, state, nullptr, 11, o, 4)
                          : kernel_plan<1, false>(file, state, nullptr, 11, o);
    if (!unet) {
      const Plan got4 = kernel_plan<4, false>(file, state, nullptr, 11, o);
      const Plan got8 = kernel_plan<1, false>(file, state, nullptr, 11, o, 8);
      CHECK(got4.windows == got.windows && got4.values == got.values);
      CHECK(got8.windows == got.windows && got8.values == got.values);
    } else {  // tensor-core layers or not, the group's size and the scratch's placement change no bit
      const Plan got1 = kernel_plan<1, true>(file, state, nullptr, 11, o, 1);
      CHECK(got1.windows == got.windows && got1.values == got.values);
      for (int placement : {mpd::cuda::kUnetGlobal, mpd::cuda::kUnetOwnShared, mpd::cuda::kUnetAllShared,
                            mpd::cuda::kUnetReplicated}) {
        for (int group : {1, 4, 8}) {
          // The whole scratch in one block's shared memory is for a group of one, replicas for groups.
          if ((placement == mpd::cuda::kUnetAllShared && group > 1) ||
              (placement == mpd::cuda::kUnetReplicated && group == 1)) {
            continue;
          }
          const Plan placed = kernel_plan<1, true>(file, state, nullptr, 11, o, group, placement);
          CHECK(placed.windows == got.windows && placed.values == got.values);
        }
      }
    }
    worst_fast = std::fmax(worst_fast, max_abs(got.windows, want.windows));
    fast_moved = std::fmax(fast_moved, max_abs(want.windows, exact.windows));
  }
  std::printf("  fast numeric mode: windows differ by <= %.3g, %.3g from the exact mode's\n", worst_fast, fast_moved);
  CHECK(worst_fast <= 2.0f * fast_moved);
  CHECK(fast_moved > tolerance);
  std::printf("%s %s%s%s%s: %d plans, windows differ by <= %.3g (tolerance %.3g), values by <= %.3g relative\n",
              spec.architecture.c_str(), spec.prediction.c_str(), spec.quantiles ? " cdf" : "",
              spec.has_cost ? " cost" : "", file.config.fixed_state_dims.empty() ? "" : " fixed dims", plans,
              worst_window, tolerance, worst_value);
  CHECK(worst_window <= tolerance);
  CHECK(worst_value <= 1e-4f);
  mpd_model_free(model);
}

}  // namespace

int main() {
  for (const char* architecture : {"mlp", "unet"}) {
    for (const char* prediction : {"epsilon", "sample"}) {
      for (bool cost : {false, true}) {
        testing::TinyModel spec;
        spec.architecture = architecture;
        spec.prediction = prediction;
        spec.quantiles = std::strcmp(prediction, "sample") == 0 ? 9 : 0;
        spec.has_cost = cost;
        if (cost) {  // a format-4 file whose states keep dimensions 0 and 2 at x_0's values
          spec.metadata_overrides = {{"format_version", "4"}, {"default.max_plan_ms", "0"}, {"fixed_state_dims", "0,2"}};
        }
        check_model(spec, std::strcmp(architecture, "unet") == 0 ? 2 * 6.71e-5f : 2 * 1.04e-4f);
      }
    }
  }
  // A unet file with bfloat16 weights and 16-channel layers: the fast mode's tensor-core layers.
  testing::TinyModel bf16;
  bf16.architecture = "unet";
  bf16.unet_dim = 16;
  bf16.horizon = 16;
  bf16.bf16_values = true;
  check_model(bf16, 2 * 6.71e-5f);
  return check::exit_code();
}
