// Plan latency of the CUDA backend from C++: per plan, CUDA events around mpd_plan on a stream
// (the GPU time of the two launches), the same plan replayed from a captured CUDA graph, and the
// host's end-to-end time of mpd_plan_host (copies in and out plus the synchronization: what a
// control loop holding its state in host memory waits for). Warm-up, percentiles, achieved
// GFLOP/s and the weight bytes the blocks read per plan, written as JSON.
//
// --sms S runs everything in a green context of S SMs (a partition of the GPU: a 16-SM stand-in
// for an Orin-class GPU on an H100/H200; CUDA 12.4 and up).
//
//   mpd_bench_cuda MODEL.safetensors [--candidates 16,64,256,1024] [--iters I] [--warmup W] [--sms S] [--json F]
#include <cuda.h>  // the driver's types; its functions through cudaGetDriverEntryPointByVersion
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "mpdiffuser/mpdiffuser.hpp"

namespace {

const char* arg(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 2; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return fallback;
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

double mlp_flops(double in, double width, double layers, double out) {
  return 2.0 * (in * width + (layers - 1) * width * width + width * out);
}

double mlp_params(double in, double width, double layers, double out) {
  return in * width + (layers - 1) * width * width + width * out + layers * width + out;
}

int dynamics_steps(const mpd_model_info& m, const mpd_options& o) {
  int n = 0;
  for (uint32_t k = 1; k <= m.num_steps; ++k) {
    n += o.dynamics_weight != 0.0 && !(o.dynamics_last && k > o.dynamics_last) && (k - 1) % o.dynamics_every == 0;
  }
  return n;
}

// FLOPs of one plan, as mpdiffuser.bench.plan_flops counts them.
double plan_flops(const mpd_model_info& m, const mpd_options& o) {
  const double H = m.horizon, D = m.state_dim + m.action_dim, in = H * D + m.state_dim + m.cond_dim + 32;
  const double rows = o.guidance == 1.0 ? o.num_candidates : 2.0 * o.num_candidates;
  double ranker = mlp_flops(D, m.ranker_width, m.ranker_layers, m.reward_outputs);
  if (m.has_cost) ranker += mlp_flops(D, m.ranker_width, m.ranker_layers, 1);
  return rows * (m.num_steps * mlp_flops(in, m.width, m.layers, H * D) +
                 dynamics_steps(m, o) * mlp_flops(in, m.width, m.layers, H * m.state_dim)) +
         o.num_candidates * H * ranker;
}

// Candidates per thread block, as the sampler chooses them: the fewest of 1, 2, 4 whose blocks
// run in one wave (one 512-thread block per SM, as on an H100/H200), else 4; or the one that
// MPD_CUDA_CANDIDATES_PER_BLOCK forces.
double candidates_per_block(const mpd_options& o, int sms) {
  if (const char* env = std::getenv("MPD_CUDA_CANDIDATES_PER_BLOCK")) {
    const int forced = std::atoi(env);
    if (forced == 1 || forced == 2 || forced == 4) return forced;
  }
  for (int cpb : {1, 2, 4}) {
    if ((o.num_candidates + cpb - 1) / cpb <= static_cast<unsigned>(sms)) return cpb;
  }
  return 4;
}

// Weight bytes read per plan: every block reads a network's weights once per evaluation.
double weight_bytes(const mpd_model_info& m, const mpd_options& o, int sms) {
  const double H = m.horizon, D = m.state_dim + m.action_dim, in = H * D + m.state_dim + m.cond_dim + 32;
  const double cpb = candidates_per_block(o, sms);
  const double blocks = (o.num_candidates + cpb - 1) / cpb;
  const double chunks = std::ceil(H / 8.0);  // ranker batches per candidate (8 window rows each)
  double ranker = mlp_params(D, m.ranker_width, m.ranker_layers, m.reward_outputs);
  if (m.has_cost) ranker += mlp_params(D, m.ranker_width, m.ranker_layers, 1);
  return 4.0 * blocks * (m.num_steps * mlp_params(in, m.width, m.layers, H * D) +
                         dynamics_steps(m, o) * mlp_params(in, m.width, m.layers, H * m.state_dim) +
                         cpb * chunks * ranker);
}

#if CUDART_VERSION >= 12050
// A driver function by name (no link to the driver library; CUDA 12.5's runtime and up).
template <typename F>
F driver(const char* name) {
  void* f = nullptr;
  cudaDriverEntryPointQueryResult found{};
  if (cudaGetDriverEntryPointByVersion(name, &f, 12040, cudaEnableDefault, &found) != cudaSuccess ||
      found != cudaDriverEntryPointSuccess || f == nullptr) {
    throw std::runtime_error(std::string("the driver has no ") + name + " (green contexts need CUDA 12.4)");
  }
  return reinterpret_cast<F>(f);
}

void check(CUresult r, const char* what) {
  if (r != CUDA_SUCCESS) throw std::runtime_error(std::string(what) + " failed: CUresult " + std::to_string(r));
}

// Makes a green context of at least `sms` SMs of device 0 current on this thread (the runtime's
// allocations, streams and launches then run on those SMs alone); returns its SM count.
int enter_green_context(int sms) {
  check(cudaFree(nullptr), "cudaFree (runtime start)");
  using GetResource = CUresult (*)(CUdevice, CUdevResource*, CUdevResourceType);
  using Split = CUresult (*)(CUdevResource*, unsigned*, const CUdevResource*, CUdevResource*, unsigned, unsigned);
  using Describe = CUresult (*)(CUdevResourceDesc*, CUdevResource*, unsigned);
  using Create = CUresult (*)(CUgreenCtx*, CUdevResourceDesc, CUdevice, unsigned);
  using Convert = CUresult (*)(CUcontext*, CUgreenCtx);
  using SetCurrent = CUresult (*)(CUcontext);
  CUdevResource all{}, part{}, rest{};
  check(driver<GetResource>("cuDeviceGetDevResource")(0, &all, CU_DEV_RESOURCE_TYPE_SM), "cuDeviceGetDevResource");
  unsigned groups = 1;
  check(driver<Split>("cuDevSmResourceSplitByCount")(&part, &groups, &all, &rest, 0, static_cast<unsigned>(sms)),
        "cuDevSmResourceSplitByCount");
  if (groups != 1) throw std::runtime_error("the device has fewer SMs than --sms asks for");
  CUdevResourceDesc desc{};
  check(driver<Describe>("cuDevResourceGenerateDesc")(&desc, &part, 1), "cuDevResourceGenerateDesc");
  CUgreenCtx green{};
  check(driver<Create>("cuGreenCtxCreate")(&green, desc, 0, CU_GREEN_CTX_DEFAULT_STREAM), "cuGreenCtxCreate");
  CUcontext context{};
  check(driver<Convert>("cuCtxFromGreenCtx")(&context, green), "cuCtxFromGreenCtx");
  check(driver<SetCurrent>("cuCtxSetCurrent")(context), "cuCtxSetCurrent");
  return static_cast<int>(part.sm.smCount);
}
#else
int enter_green_context(int) { throw std::runtime_error("--sms needs a CUDA 12.5 toolkit or newer"); }
#endif

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(pos), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.safetensors [--candidates 16,64,256,1024] [--iters I] [--warmup W] [--sms S] "
                 "[--json F]\n",
                 argv[0]);
    return 2;
  }
  const int iters = std::max(1, std::atoi(arg(argc, argv, "--iters", "200")));
  const int warmup = std::max(0, std::atoi(arg(argc, argv, "--warmup", "10")));  // untimed plans before each series
  std::vector<uint32_t> counts;
  std::stringstream list(arg(argc, argv, "--candidates", "16,64,256,1024"));
  for (std::string item; std::getline(list, item, ',');) counts.push_back(static_cast<uint32_t>(std::atoi(item.c_str())));
  try {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      std::fprintf(stderr, "no CUDA device\n");
      return 77;
    }
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    // The SMs the plans may use: the device's, or a green context's (--sms).
    const int asked_sms = std::atoi(arg(argc, argv, "--sms", "0"));
    const int sms = asked_sms > 0 ? enter_green_context(asked_sms) : prop.multiProcessorCount;
    mpd::Model model(argv[1]);
    const mpd_model_info& info = model.info();
    const uint32_t max_n = *std::max_element(counts.begin(), counts.end());
    mpd::Sampler sampler(model, MPD_BACKEND_CUDA, max_n);
    cudaStream_t stream;
    check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
    cudaEvent_t start, stop;
    check(cudaEventCreate(&start), "event");
    check(cudaEventCreate(&stop), "event");
    float *state = nullptr, *actions = nullptr;
    uint32_t* index = nullptr;
    check(cudaMalloc(&state, info.state_dim * sizeof(float)), "cudaMalloc");
    check(cudaMalloc(&actions, info.horizon * info.action_dim * sizeof(float)), "cudaMalloc");
    check(cudaMalloc(&index, sizeof(uint32_t)), "cudaMalloc");
    std::vector<float> host_state(info.state_dim, 0.1f), host_actions(info.horizon * info.action_dim);
    check(cudaMemcpy(state, host_state.data(), info.state_dim * sizeof(float), cudaMemcpyHostToDevice), "copy");
    mpd_plan_output out{actions, 0, nullptr, nullptr, nullptr, index, nullptr};
    mpd_plan_output host_out{host_actions.data(), 0, nullptr, nullptr, nullptr, nullptr, nullptr};

    std::string rows;
    std::printf("%s, %d of %d SMs, %.0f MB L2\n", prop.name, sms, prop.multiProcessorCount, prop.l2CacheSize / 1e6);
    std::printf("%6s %9s %11s %11s %11s %11s %9s %10s\n", "N", "GFLOP", "kernel p50", "kernel p99", "graph p50",
                "host p50", "GFLOP/s", "weight GB");
    for (uint32_t n : counts) {
      mpd_options o = model.default_options();
      o.num_candidates = n;
      if (info.has_cost && !o.has_cost_limit) o.has_cost_limit = 1, o.cost_limit = 10.0;
      std::vector<double> kernel_ms, graph_ms, host_ms;
      for (int i = 0; i < warmup + iters; ++i) {  // stream launches, timed by events
        check(cudaEventRecord(start, stream), "record");
        const mpd_status s = sampler.plan(state, static_cast<uint64_t>(i), &o, &out, stream);
        check(cudaEventRecord(stop, stream), "record");
        check(cudaEventSynchronize(stop), "sync");
        if (s != MPD_OK) throw mpd::Error(s, "mpd_plan");
        float ms = 0.0f;
        check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
        if (i >= warmup) kernel_ms.push_back(ms);
      }
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
      const mpd_status captured = sampler.plan(state, 1, &o, &out, stream);
      check(cudaStreamEndCapture(stream, &graph), "end capture");
      if (captured != MPD_OK) throw mpd::Error(captured, "mpd_plan (capture)");
      check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
      for (int i = 0; i < warmup + iters; ++i) {
        check(cudaEventRecord(start, stream), "record");
        check(cudaGraphLaunch(exec, stream), "graph launch");
        check(cudaEventRecord(stop, stream), "record");
        check(cudaEventSynchronize(stop), "sync");
        float ms = 0.0f;
        check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
        if (i >= warmup) graph_ms.push_back(ms);
      }
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
      for (int i = 0; i < warmup + iters; ++i) {  // host memory in and out, synchronized
        const auto begin = std::chrono::steady_clock::now();
        const mpd_status s = mpd_plan_host(model.get(), sampler.get(), host_state.data(), static_cast<uint64_t>(i),
                                           &o, &host_out, stream);
        const auto end = std::chrono::steady_clock::now();
        if (s != MPD_OK) throw mpd::Error(s, "mpd_plan_host");
        if (i >= warmup) host_ms.push_back(std::chrono::duration<double, std::milli>(end - begin).count());
      }
      const double flops = plan_flops(info, o), bytes = weight_bytes(info, o, sms);
      const double k50 = percentile(kernel_ms, 0.5), k99 = percentile(kernel_ms, 0.99);
      const double g50 = percentile(graph_ms, 0.5), h50 = percentile(host_ms, 0.5), h99 = percentile(host_ms, 0.99);
      std::printf("%6u %9.4f %8.3f ms %8.3f ms %8.3f ms %8.3f ms %9.1f %10.3f\n", n, flops / 1e9, k50, k99, g50, h50,
                  flops / k50 / 1e6, bytes / 1e9);
      char row[512];
      std::snprintf(row, sizeof row,
                    "%s{\"num_candidates\": %u, \"gflop_per_plan\": %.6f, \"kernel_ms_p50\": %.5f, "
                    "\"kernel_ms_p99\": %.5f, \"graph_ms_p50\": %.5f, \"host_ms_p50\": %.5f, \"host_ms_p99\": %.5f, "
                    "\"gflops\": %.1f, \"weight_gb_read\": %.4f, \"weight_tb_per_s\": %.3f, "
                    "\"candidates_per_block\": %d}",
                    rows.empty() ? "" : ", ", n, flops / 1e9, k50, k99, g50, h50, h99, flops / k50 / 1e6, bytes / 1e9,
                    bytes / k50 / 1e9, static_cast<int>(candidates_per_block(o, sms)));
      rows += row;
    }
    const char* json = arg(argc, argv, "--json", nullptr);
    if (json) {
      std::FILE* f = std::fopen(json, "w");
      if (!f) throw std::runtime_error(std::string("cannot write ") + json);
      // The unet family's cap on blocks per candidate (MPD_CUDA_BLOCKS_PER_CANDIDATE; 0: the sampler's
      // choice, up to 8) and their barrier (MPD_CUDA_GROUP_BARRIER=grid, else the sampler's choice).
      const char* cap = std::getenv("MPD_CUDA_BLOCKS_PER_CANDIDATE");
      const char* barrier = std::getenv("MPD_CUDA_GROUP_BARRIER");
      const char* scratch = std::getenv("MPD_CUDA_UNET_SCRATCH");
      const char* split = std::getenv("MPD_CUDA_UNET_SPLIT");
      std::fprintf(f, "{\"benchmark\": \"cuda_plan_latency_cxx\", \"device\": \"%s\", \"sms\": %d, "
                      "\"device_sms\": %d, \"green_context\": %s, \"model_file\": \"%s\", "
                      "\"iters\": %d, \"horizon\": %u, \"num_steps\": %u, \"width\": %u, \"layers\": %u, "
                      "\"max_blocks_per_candidate\": %d, \"group_barrier\": \"%s\", \"unet_scratch\": \"%s\", \"unet_split\": \"%s\", "
                      "\"rows\": [%s]}\n",
                   prop.name, sms, prop.multiProcessorCount, asked_sms > 0 ? "true" : "false", argv[1], iters, info.horizon, info.num_steps, info.width,
                   info.layers, cap ? std::atoi(cap) : 0, barrier ? barrier : "default",
                   scratch ? scratch : "default", split ? split : "default", rows.c_str());
      std::fclose(f);
    }
    cudaFree(state), cudaFree(actions), cudaFree(index);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
