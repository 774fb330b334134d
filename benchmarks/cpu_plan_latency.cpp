// Plan latency of the CPU backend from C++ (no Python in the loop): warm-up, then timed plans,
// percentiles and achieved GFLOP/s per candidate count, written as JSON. The ratio to the PyTorch
// reference comes from `mpdiffuser bench` / benchmarks/test_bench_sampler.py, which time both in
// one process; this harness gives the firmware's view of the same number.
//
//   mpd_bench_cpu MODEL.safetensors [--candidates 1,16,64,256] [--threads T] [--iters I] [--json F]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mpdiffuser/mpdiffuser.hpp"

namespace {

const char* arg(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 2; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return fallback;
}

double mlp_flops(double in, double width, double layers, double out) {
  return 2.0 * (in * width + (layers - 1) * width * width + width * out);
}

// FLOPs of one plan, as mpdiffuser.bench.plan_flops counts them.
double plan_flops(const mpd_model_info& m, const mpd_options& o) {
  const double H = m.horizon, D = m.state_dim + m.action_dim, in = H * D + m.state_dim + m.cond_dim + 32;
  const double rows = o.guidance == 1.0 ? o.num_candidates : 2.0 * o.num_candidates;
  int dyn_steps = 0;
  for (uint32_t k = 1; k <= m.num_steps; ++k) {
    const bool at = o.dynamics_weight != 0.0 && !(o.dynamics_last && k > o.dynamics_last) &&
                    (k - 1) % o.dynamics_every == 0;
    dyn_steps += at ? 1 : 0;
  }
  double ranker = mlp_flops(D, m.ranker_width, m.ranker_layers, m.reward_outputs);
  if (m.has_cost) ranker += mlp_flops(D, m.ranker_width, m.ranker_layers, 1);
  return rows * (m.num_steps * mlp_flops(in, m.width, m.layers, H * D) +
                 dyn_steps * mlp_flops(in, m.width, m.layers, H * m.state_dim)) +
         o.num_candidates * H * ranker;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(pos), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.safetensors [--candidates 1,16,64,256] [--threads T] [--iters I] [--json F]\n", argv[0]);
    return 2;
  }
  const int threads = std::atoi(arg(argc, argv, "--threads", "0"));
  const int iters = std::max(1, std::atoi(arg(argc, argv, "--iters", "50")));
  std::vector<uint32_t> counts;
  std::stringstream list(arg(argc, argv, "--candidates", "1,16,64,256"));
  for (std::string item; std::getline(list, item, ',');) counts.push_back(static_cast<uint32_t>(std::atoi(item.c_str())));
  try {
    mpd::Model model(argv[1]);
    const mpd_model_info& info = model.info();
    const uint32_t max_n = *std::max_element(counts.begin(), counts.end());
    mpd::Sampler sampler(model, MPD_BACKEND_CPU, max_n, static_cast<uint32_t>(threads));
    std::vector<float> state(info.state_dim, 0.1f), actions(info.horizon * info.action_dim);
    mpd_plan_output out{actions.data(), 0, nullptr, nullptr, nullptr, nullptr, nullptr};
    std::string rows;
    std::printf("%6s %10s %10s %10s %10s\n", "N", "GFLOP", "p50 ms", "p99 ms", "GFLOP/s");
    for (uint32_t n : counts) {
      mpd_options o = model.default_options();
      o.num_candidates = n;
      if (info.has_cost && !o.has_cost_limit) o.has_cost_limit = 1, o.cost_limit = 10.0;
      std::vector<double> ms;
      for (int i = 0; i < 3 + iters; ++i) {
        const auto begin = std::chrono::steady_clock::now();
        const mpd_status s = sampler.plan(state.data(), static_cast<uint64_t>(i), &o, &out);
        const auto end = std::chrono::steady_clock::now();
        if (s != MPD_OK) throw mpd::Error(s, "mpd_plan");
        if (i >= 3) ms.push_back(std::chrono::duration<double, std::milli>(end - begin).count());
      }
      const double flops = plan_flops(info, o), p50 = percentile(ms, 0.5), p99 = percentile(ms, 0.99);
      std::printf("%6u %10.4f %10.3f %10.3f %10.1f\n", n, flops / 1e9, p50, p99, flops / p50 / 1e6);
      char row[256];
      std::snprintf(row, sizeof row,
                    "%s{\"num_candidates\": %u, \"gflop_per_plan\": %.6f, \"ms_p50\": %.4f, \"ms_p99\": %.4f, \"gflops\": %.2f}",
                    rows.empty() ? "" : ", ", n, flops / 1e9, p50, p99, flops / p50 / 1e6);
      rows += row;
    }
    const char* json = arg(argc, argv, "--json", nullptr);
    if (json) {
      std::FILE* f = std::fopen(json, "w");
      if (!f) throw std::runtime_error(std::string("cannot write ") + json);
      std::fprintf(f, "{\"benchmark\": \"cpu_plan_latency_cxx\", \"model_file\": \"%s\", \"threads\": %d, "
                      "\"hardware_threads\": %u, \"iters\": %d, \"horizon\": %u, \"num_steps\": %u, \"width\": %u, "
                      "\"layers\": %u, \"rows\": [%s]}\n",
                   argv[1], threads, std::thread::hardware_concurrency(), iters, info.horizon, info.num_steps,
                   info.width, info.layers, rows.c_str());
      std::fclose(f);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
