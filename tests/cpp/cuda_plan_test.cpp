// mpd_plan on the CUDA backend against the CPU backend on the same tiny models and seeds: the
// same chosen index, actions and windows within the tolerances below, values within 1e-4
// relative; bit-identical repeats; the plan captured in a CUDA graph and replayed on new state
// contents; no allocation visible to the caller; bad input answered with a status or the
// documented index; the unet family with every option against the CPU backend. Skips (exit 77)
// without a GPU.
//
// The window tolerances are derived, not fitted. Two float32 implementations of one plan differ
// by at most the sum of their deviations from the plan in exact arithmetic (triangle inequality).
// benchmarks/diagnostics/float32_error.py measures that deviation on this file's tiny models and
// options, for the CPU backend and the PyTorch reference (another summation order, as the
// kernels have theirs) against the design's equations in float64
// (benchmarks/results/float32_error_tiny*.json). The mlp: the largest deviation grows with the
// candidates (the max over more of them; epsilon-prediction's 1 / sqrt(abar) amplifies a rounding
// of the network's output at high noise), 1.04e-4 up to N = 64 and 2.04e-4 at N = 1100 (w = 1.7,
// lambda = 0.5, cost model: the case that differed by 3.11e-4 on an H200 against the 2e-4 used
// before). So kMlpWindowTolerance = 2 x 2.04e-4. The unet with the options its loop below plans
// (float32_error.py --unet-options): 2.42e-5 from float64 where the equations cover the options,
// and the CPU backend and the reference differ by up to 6.71e-5 with a dynamics schedule (which
// the float64 equations do not cover); bounding each backend's deviation by that difference,
// kUnetWindowTolerance = 2 x 6.71e-5.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <initializer_list>
#include <vector>

#include "check.h"
#include "cuda/noise_kernel.h"
#include "model_writer.h"
#include "mpdiffuser/mpdiffuser.h"

namespace {

constexpr float kMlpWindowTolerance = 2 * 2.04e-4f;
constexpr float kUnetWindowTolerance = 2 * 6.71e-5f;
constexpr float kActionRange = 4.0f;  // actions are windows scaled to env units: the tiny models' range is 4

struct Result {
  std::vector<float> actions, values, costs, windows;
  uint32_t index = 0;
  mpd_status status = MPD_OK;
};

mpd_model* load(const testing::TinyModel& m) {
  const std::vector<uint8_t> bytes = testing::write_model(m);
  mpd_model* model = nullptr;
  char message[256];
  if (mpd_model_load_memory(bytes.data(), bytes.size(), &model, message, sizeof message) != MPD_OK) {
    std::printf("load failed: %s\n", message);
  }
  return model;
}

struct Sizes {
  size_t actions, n, windows, dx;
};

Sizes sizes(const mpd_model* model, const mpd_options& o) {
  mpd_model_info info;
  mpd_model_get_info(model, &info);
  return {static_cast<size_t>(o.actions_per_plan) * info.action_dim, o.num_candidates,
          static_cast<size_t>(o.num_candidates) * info.horizon * (info.state_dim + info.action_dim), info.state_dim};
}

Result cpu_plan(const mpd_model* model, const float* state, uint64_t seed, const mpd_options& o) {
  const Sizes s = sizes(model, o);
  mpd_workspace* ws = nullptr;
  CHECK(mpd_workspace_create(model, MPD_BACKEND_CPU, o.num_candidates, 2, &ws) == MPD_OK);
  Result r;
  r.actions.assign(s.actions, 0.0f);
  r.values.assign(s.n, 0.0f);
  r.costs.assign(s.n, 0.0f);
  r.windows.assign(s.windows, 0.0f);
  mpd_plan_output out{r.actions.data(), 0, r.values.data(), r.costs.data(), r.windows.data(), nullptr};
  r.status = mpd_plan(model, ws, state, seed, &o, &out, nullptr);
  r.index = out.index;
  mpd_workspace_free(ws);
  return r;
}

// Device buffers of one plan's inputs and outputs.
struct DevicePlan {
  float *state = nullptr, *actions = nullptr, *values = nullptr, *costs = nullptr, *windows = nullptr;
  uint32_t* index = nullptr;
  Sizes s{};
  explicit DevicePlan(Sizes sz) : s(sz) {
    cudaMalloc(&state, s.dx * sizeof(float));
    cudaMalloc(&actions, s.actions * sizeof(float));
    cudaMalloc(&values, s.n * sizeof(float));
    cudaMalloc(&costs, s.n * sizeof(float));
    cudaMalloc(&windows, s.windows * sizeof(float));
    cudaMalloc(&index, sizeof(uint32_t));
  }
  ~DevicePlan() {
    cudaFree(state), cudaFree(actions), cudaFree(values), cudaFree(costs), cudaFree(windows), cudaFree(index);
  }
  mpd_plan_output output() { return {actions, 0, values, costs, windows, index}; }
  Result fetch() const {
    Result r;
    r.actions.resize(s.actions), r.values.resize(s.n), r.costs.resize(s.n), r.windows.resize(s.windows);
    cudaMemcpy(r.actions.data(), actions, s.actions * sizeof(float), cudaMemcpyDeviceToHost);
    cudaMemcpy(r.values.data(), values, s.n * sizeof(float), cudaMemcpyDeviceToHost);
    cudaMemcpy(r.costs.data(), costs, s.n * sizeof(float), cudaMemcpyDeviceToHost);
    cudaMemcpy(r.windows.data(), windows, s.windows * sizeof(float), cudaMemcpyDeviceToHost);
    cudaMemcpy(&r.index, index, sizeof(uint32_t), cudaMemcpyDeviceToHost);
    return r;
  }
};

Result cuda_plan(const mpd_model* model, mpd_workspace* ws, const float* state, uint64_t seed, const mpd_options& o,
                 cudaStream_t stream) {
  DevicePlan d(sizes(model, o));
  cudaMemcpy(d.state, state, d.s.dx * sizeof(float), cudaMemcpyHostToDevice);
  mpd_plan_output out = d.output();
  const mpd_status status = mpd_plan(model, ws, d.state, seed, &o, &out, stream);
  cudaStreamSynchronize(stream);
  Result r = d.fetch();
  r.status = status;
  return r;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = a.size() == b.size() ? 0.0f : INFINITY;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::fmax(m, std::fabs(a[i] - b[i]));
  return m;
}

float max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) m = std::fmax(m, std::fabs(a[i] - b[i]) / std::fmax(1.0f, std::fabs(b[i])));
  return m;
}

bool same_bits(const Result& a, const Result& b) {
  return a.index == b.index && a.actions == b.actions && a.values == b.values && a.windows == b.windows;
}

// The plan captured in a CUDA graph once (on d's buffers) and replayed on the contents of each
// state: the same bits as a direct plan of that state.
void check_graph_replay(const mpd_model* model, mpd_workspace* ws, const mpd_options& o, DevicePlan& d,
                        std::initializer_list<const float*> states, cudaStream_t stream) {
  cudaMemcpy(d.state, *states.begin(), d.s.dx * sizeof(float), cudaMemcpyHostToDevice);
  mpd_plan_output out = d.output();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  const mpd_status captured = mpd_plan(model, ws, d.state, 11, &o, &out, stream);
  CHECK(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
  CHECK(captured == MPD_OK);
  CHECK(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  for (const float* s : states) {
    cudaMemcpy(d.state, s, d.s.dx * sizeof(float), cudaMemcpyHostToDevice);
    CHECK(cudaGraphLaunch(exec, stream) == cudaSuccess);
    CHECK(cudaStreamSynchronize(stream) == cudaSuccess);
    CHECK(same_bits(d.fetch(), cuda_plan(model, ws, s, 11, o, stream)));
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

// The options of the comparison grids: N candidates, guidance w, lambda, two actions per plan, and
// with a cost model a cost limit and budget. unet_grid also varies w_d (one dynamics row or two),
// the dynamics schedule and the temperature with the other settings.
mpd_options grid_options(const mpd_model* model, uint32_t n, double w, double lambda, bool has_cost, bool unet_grid) {
  mpd_options o;
  mpd_model_default_options(model, &o);
  o.num_candidates = n;
  o.guidance = w;
  o.dynamics_weight = lambda;
  o.actions_per_plan = 2;
  if (unet_grid) {
    o.dynamics_guidance = lambda == 0.5 ? 1.0 : 2.5;
    o.dynamics_every = lambda == 1.0 ? 2 : 1;
    o.temperature = w == 1.0 ? 1.0 : 0.01;
  }
  if (has_cost) {
    o.has_cost_limit = 1;
    o.cost_limit = 3.0;
    o.has_cost_budget = 1;
    o.cost_budget = 0.05;
  }
  return o;
}

// One plan on both backends: the same index, windows within `tolerance` (actions scaled to env
// units), values and costs within 1e-4 relative, and a bit-identical CUDA repeat.
void compare_backends(const mpd_model* model, mpd_workspace* ws, const float* state, const mpd_options& o,
                      cudaStream_t stream, float tolerance, bool has_cost, const char* label) {
  const Result cpu = cpu_plan(model, state, 7, o);
  const Result gpu = cuda_plan(model, ws, state, 7, o, stream);
  CHECK(cpu.status == MPD_OK && gpu.status == MPD_OK);
  CHECK(gpu.index == cpu.index);
  CHECK(max_abs_diff(gpu.windows, cpu.windows) <= tolerance);
  CHECK(max_abs_diff(gpu.actions, cpu.actions) <= tolerance * kActionRange);
  CHECK(max_rel_diff(gpu.values, cpu.values) <= 1e-4f);
  if (has_cost) CHECK(max_rel_diff(gpu.costs, cpu.costs) <= 1e-4f);
  CHECK(same_bits(cuda_plan(model, ws, state, 7, o, stream), gpu));
  if (gpu.index != cpu.index || max_abs_diff(gpu.windows, cpu.windows) > tolerance) {
    std::printf("%s n=%u w=%g lambda=%g cost=%d: index %u vs %u, windows max diff %g\n", label, o.num_candidates,
                o.guidance, o.dynamics_weight, has_cost, gpu.index, cpu.index, max_abs_diff(gpu.windows, cpu.windows));
  }
}

}  // namespace

int main() {
  if (!mpd::cuda::device_available()) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  const float state[3] = {0.3f, -1.1f, 1.7f};
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);

  for (bool has_cost : {false, true}) {
    testing::TinyModel spec;
    spec.has_cost = has_cost;
    mpd_model* model = load(spec);
    CHECK(model != nullptr);
    if (!model) return check::exit_code();
    mpd_workspace* ws = nullptr;
    CHECK(mpd_workspace_create(model, MPD_BACKEND_CUDA, 2048, 0, &ws) == MPD_OK);
    for (uint32_t n : {1u, 7u, 64u, 1100u}) {  // 1100: four candidates per block on every GPU
      for (double w : {1.0, 1.7}) {
        for (double lambda : {0.0, 0.5, 1.0}) {
          compare_backends(model, ws, state, grid_options(model, n, w, lambda, has_cost, false), stream,
                           kMlpWindowTolerance, has_cost, "mlp");
        }
      }
    }

    // The recipe options (host-staged API): sample-prediction with the CDF normalizer, low temperature, warm start from a
    // previous window, the chosen window written out; CUDA equals the CPU backend.
    for (const char* prediction : {"epsilon", "sample"}) {
      testing::TinyModel rspec = spec;
      rspec.prediction = prediction;
      rspec.quantiles = std::strcmp(prediction, "sample") == 0 ? 9 : 0;  // the CDF normalizer too
      mpd_model* rmodel = load(rspec);
      mpd_workspace *gws = nullptr, *cws = nullptr;
      CHECK(mpd_workspace_create(rmodel, MPD_BACKEND_CUDA, 64, 0, &gws) == MPD_OK);
      CHECK(mpd_workspace_create(rmodel, MPD_BACKEND_CPU, 64, 2, &cws) == MPD_OK);
      mpd_options o;
      mpd_model_default_options(rmodel, &o);
      o.num_candidates = 64;
      o.temperature = 0.01;
      o.dynamics_guidance = std::strcmp(prediction, "sample") == 0 ? 1.0 : 2.5;  // one dynamics pass, or 2N rows
      if (has_cost) o.has_cost_limit = 1, o.cost_limit = 3.0;
      const Sizes sz = sizes(rmodel, o);
      const size_t HD = sz.windows / sz.n;
      std::vector<float> previous(HD), ca(sz.actions), ga(sz.actions), cw(sz.windows), gw(sz.windows), cc(HD), gc(HD);
      mpd_plan_output first{ca.data(), 0, nullptr, nullptr, nullptr, nullptr, previous.data()};
      CHECK(mpd_plan(rmodel, cws, state, 3, &o, &first, nullptr) == MPD_OK);
      for (uint32_t level : {0u, 2u, 4u}) {
        o.warm_start_level = level;
        mpd_plan_output cout_{ca.data(), 0, nullptr, nullptr, cw.data(), nullptr, cc.data()};
        mpd_plan_output gout{ga.data(), 0, nullptr, nullptr, gw.data(), nullptr, gc.data()};
        CHECK(mpd_plan_warm(rmodel, cws, state, previous.data(), 9, &o, &cout_, nullptr) == MPD_OK);
        CHECK(mpd_plan_warm_host(rmodel, gws, state, previous.data(), 9, &o, &gout, stream) == MPD_OK);
        CHECK(gout.index == cout_.index);
        CHECK(max_abs_diff(gw, cw) <= 5e-4f && max_abs_diff(gc, cc) <= 5e-4f);
        if (gout.index != cout_.index || max_abs_diff(gw, cw) > 5e-4f) {
          std::printf("%s k_w=%u cost=%d: index %u vs %u, windows max diff %g\n", prediction, level, has_cost,
                      gout.index, cout_.index, max_abs_diff(gw, cw));
        }
      }
      std::vector<float> bad = previous;
      bad[1] = NAN;
      mpd_plan_output bout{ga.data(), 0, nullptr, nullptr, nullptr, nullptr, nullptr};
      CHECK(mpd_plan_warm_host(rmodel, gws, state, bad.data(), 9, &o, &bout, stream) == MPD_ERR_NON_FINITE);
      mpd_workspace_free(gws);
      mpd_workspace_free(cws);
      mpd_model_free(rmodel);
    }

    // Graph capture: the two launches and copies recorded once, replayed on new state contents.
    mpd_options o;
    mpd_model_default_options(model, &o);
    o.num_candidates = 64;
    if (has_cost) {
      o.has_cost_limit = 1;
      o.cost_limit = 3.0;
    }
    DevicePlan d(sizes(model, o));
    const float other_state[3] = {-0.4f, 0.9f, 0.1f};
    check_graph_replay(model, ws, o, d, {state, other_state}, stream);
    mpd_plan_output out = d.output();

    // Bad input: too many candidates, a workspace of another model, a non-finite state.
    o.num_candidates = 4096;
    CHECK(mpd_plan(model, ws, d.state, 1, &o, &out, stream) == MPD_ERR_INVALID_ARGUMENT);
    o.num_candidates = 8;
    const float nan_state[3] = {0.0f, NAN, 1.0f};
    const Result bad = cuda_plan(model, ws, nan_state, 1, o, stream);
    CHECK(bad.status == MPD_OK && bad.index == MPD_INDEX_NON_FINITE_INPUT && std::isnan(bad.actions[0]));
    const float far_state[3] = {0.0f, 500.0f, 1.0f};  // 250 half-ranges of the tiny model's [-2, 2]
    const Result far = cuda_plan(model, ws, far_state, 1, o, stream);
    CHECK(far.status == MPD_OK && far.index == MPD_INDEX_STATE_OUT_OF_RANGE && std::isnan(far.actions[0]));
    CHECK(cpu_plan(model, far_state, 1, o).status == MPD_ERR_STATE_OUT_OF_RANGE);
    {
      std::vector<float> host_actions(sizes(model, o).actions);
      mpd_plan_output host{host_actions.data(), 0, nullptr, nullptr, nullptr, nullptr, nullptr};
      CHECK(mpd_plan_host(model, ws, far_state, 1, &o, &host, stream) == MPD_ERR_STATE_OUT_OF_RANGE);
    }
    CHECK(cuda_plan(model, ws, state, 1, o, stream).index < 8);  // the workspace is still usable
    mpd_workspace_free(ws);
    mpd_model_free(model);
  }
  // The unet family: every option against the CPU backend (both predictions, both normalizers,
  // guidance of each model, lambda and its schedule, temperature, the cost condition and budget,
  // actions per plan, warm start), the device API and the host-staged one, a captured graph.
  for (bool has_cost : {false, true}) {
    for (const char* prediction : {"epsilon", "sample"}) {
      testing::TinyModel spec;
      spec.architecture = "unet";
      spec.has_cost = has_cost;
      spec.prediction = prediction;
      spec.quantiles = std::strcmp(prediction, "sample") == 0 ? 9 : 0;
      mpd_model* model = load(spec);
      CHECK(model != nullptr);
      if (!model) continue;
      mpd_workspace* ws = nullptr;
      CHECK(mpd_workspace_create(model, MPD_BACKEND_CUDA, 64, 0, &ws) == MPD_OK);
      const float state[3] = {0.3f, -1.1f, 1.7f};
      for (uint32_t n : {1u, 7u, 64u}) {
        for (double w : {1.0, 1.7}) {
          for (double lambda : {0.0, 0.5, 1.0}) {
            compare_backends(model, ws, state, grid_options(model, n, w, lambda, has_cost, true), stream,
                             kUnetWindowTolerance, has_cost, prediction);
          }
        }
      }
      // Warm start through the host-staged API, against the CPU backend's.
      mpd_workspace* cws = nullptr;
      CHECK(mpd_workspace_create(model, MPD_BACKEND_CPU, 64, 2, &cws) == MPD_OK);
      mpd_options o;
      mpd_model_default_options(model, &o);
      o.num_candidates = 16;
      o.temperature = 0.01;
      if (has_cost) o.has_cost_limit = 1, o.cost_limit = 3.0;
      const Sizes sz = sizes(model, o);
      const size_t HD = sz.windows / sz.n;
      std::vector<float> previous(HD), ca(sz.actions), ga(sz.actions), cw(sz.windows), gw(sz.windows);
      mpd_plan_output first{ca.data(), 0, nullptr, nullptr, nullptr, nullptr, previous.data()};
      CHECK(mpd_plan(model, cws, state, 3, &o, &first, nullptr) == MPD_OK);
      o.warm_start_level = 2;
      mpd_plan_output cout_{ca.data(), 0, nullptr, nullptr, cw.data(), nullptr, nullptr};
      mpd_plan_output gout{ga.data(), 0, nullptr, nullptr, gw.data(), nullptr, nullptr};
      CHECK(mpd_plan_warm(model, cws, state, previous.data(), 9, &o, &cout_, nullptr) == MPD_OK);
      CHECK(mpd_plan_warm_host(model, ws, state, previous.data(), 9, &o, &gout, stream) == MPD_OK);
      CHECK(gout.index == cout_.index && max_abs_diff(gw, cw) <= kUnetWindowTolerance);
      // Captured in a CUDA graph and replayed: the same bits as a direct plan.
      o.warm_start_level = 0;
      DevicePlan d(sizes(model, o));
      check_graph_replay(model, ws, o, d, {state}, stream);
      mpd_workspace_free(cws);
      mpd_workspace_free(ws);
      mpd_model_free(model);
    }
  }

  // Finite weights that overflow: the device plan marks the index and NaNs the actions, the host
  // plan returns MPD_ERR_NON_FINITE_PLAN, as the CPU backend does.
  {
    testing::TinyModel huge;
    huge.scaled_net = "reward";
    huge.scale = 1e6f;  // within the file's weight limit (kWeightLimit): loads; nine layers still overflow
    huge.ranker_layers = 8;
    mpd_model* bad = load(huge);
    mpd_workspace* ws = nullptr;
    CHECK(bad != nullptr && mpd_workspace_create(bad, MPD_BACKEND_CUDA, 4, 0, &ws) == MPD_OK);
    mpd_options o;
    mpd_model_default_options(bad, &o);
    o.num_candidates = 4;
    const float state[3] = {0.3f, -1.1f, 1.7f};
    const Result device = cuda_plan(bad, ws, state, 1, o, stream);
    CHECK(device.status == MPD_OK && device.index == MPD_INDEX_NON_FINITE_PLAN && std::isnan(device.actions[0]));
    CHECK(cpu_plan(bad, state, 1, o).status == MPD_ERR_NON_FINITE_PLAN);
    float actions[2];
    mpd_plan_output host{actions, 0, nullptr, nullptr, nullptr, nullptr, nullptr};
    CHECK(mpd_plan_host(bad, ws, state, 1, &o, &host, stream) == MPD_ERR_NON_FINITE_PLAN);
    mpd_workspace_free(ws);
    mpd_model_free(bad);
  }
  // The unet family's fast numeric mode on tensor cores (a file of bfloat16 weights, 16-channel
  // layers): against the CPU backend's fast mode, held to twice the distance between the fast and
  // exact modes' plans (a float32 difference can move a rounded input across a bfloat16 boundary,
  // cuda_unet_emulation_test.cpp); and one, two or eight blocks per candidate give the same bits.
  {
    testing::TinyModel spec;
    spec.architecture = "unet";
    spec.unet_dim = 16;
    spec.horizon = 16;
    spec.bf16_values = true;
    mpd_model* model = load(spec);
    CHECK(model != nullptr);
    const float state[3] = {0.3f, -1.1f, 1.7f};
    mpd_options o = grid_options(model, 4, 1.7, 0.5, false, true);
    const Result exact = cpu_plan(model, state, 5, o);
    o.fast_numerics = 1;
    const Result want = cpu_plan(model, state, 5, o);
    std::vector<Result> got;
    for (const char* cap : {"1", "2", "8"}) {
      setenv("MPD_CUDA_BLOCKS_PER_CANDIDATE", cap, 1);
      mpd_workspace* ws = nullptr;
      CHECK(mpd_workspace_create(model, MPD_BACKEND_CUDA, 4, 0, &ws) == MPD_OK);
      got.push_back(cuda_plan(model, ws, state, 5, o, stream));
      mpd_workspace_free(ws);
    }
    unsetenv("MPD_CUDA_BLOCKS_PER_CANDIDATE");
    const float moved = max_abs_diff(want.windows, exact.windows), diff = max_abs_diff(got[0].windows, want.windows);
    std::printf("unet fast mode on tensor cores: windows within %.3g of the CPU's, %.3g from the exact mode's\n", diff,
                moved);
    CHECK(moved > kUnetWindowTolerance && diff <= 2.0f * moved);
    CHECK(same_bits(got[1], got[0]) && same_bits(got[2], got[0]));
    mpd_model_free(model);
  }
  cudaStreamDestroy(stream);
  return check::exit_code();
}
