// A firmware-style MPC loop: load a model file, plan at a fixed control rate, report latency.
//
//   mpd_firmware_example MODEL.safetensors [--rate HZ] [--steps N] [--candidates N]
//                        [--threads N] [--max-miss N]
//
// A real robot reads its state from sensors; this loop feeds back a slowly varying synthetic
// state so it runs anywhere. Everything after set-up is allocation-free: mpd_plan writes into
// buffers made once.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "mpdiffuser/mpdiffuser.hpp"

namespace {

int arg_int(int argc, char** argv, const char* name, int fallback) {
  for (int i = 2; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return std::atoi(argv[i + 1]);
  }
  return fallback;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.safetensors [--rate HZ] [--steps N] [--candidates N] "
                         "[--threads N] [--max-miss N]\n", argv[0]);
    return 2;
  }
  const int rate = arg_int(argc, argv, "--rate", 50), steps = arg_int(argc, argv, "--steps", 200);
  const int threads = arg_int(argc, argv, "--threads", 0);
  const int max_miss = arg_int(argc, argv, "--max-miss", steps);
  if (rate < 1 || steps < 1 || threads < 0) {
    std::fprintf(stderr, "--rate and --steps must be >= 1, --threads >= 0\n");
    return 2;
  }
  try {
    mpd::Model model(argv[1]);
    const mpd_model_info& info = model.info();
    mpd_options options = model.default_options();
    options.num_candidates = static_cast<uint32_t>(arg_int(argc, argv, "--candidates", static_cast<int>(options.num_candidates)));
    if (info.has_cost && !options.has_cost_limit) {
      options.has_cost_limit = 1;  // a cost model needs a limit: take a 1000-step budget of 20
      options.cost_limit = 20.0;
    }
    mpd::Sampler sampler(model, MPD_BACKEND_CPU, options.num_candidates, static_cast<uint32_t>(threads));

    std::vector<float> state(info.state_dim, 0.0f), actions(options.actions_per_plan * info.action_dim);
    std::vector<double> latency_ms(static_cast<size_t>(steps));
    mpd_plan_output out{actions.data(), 0, nullptr, nullptr, nullptr, nullptr};
    const auto period = std::chrono::nanoseconds(1000000000LL / rate);
    auto deadline = std::chrono::steady_clock::now() + period;
    int missed = 0;
    for (int step = 0; step < steps; ++step) {
      for (uint32_t i = 0; i < info.state_dim; ++i) state[i] = 0.1f * std::sin(0.05f * static_cast<float>(step + i));
      const auto start = std::chrono::steady_clock::now();
      const mpd_status s = sampler.plan(state.data(), static_cast<uint64_t>(step), &options, &out);
      const auto end = std::chrono::steady_clock::now();
      if (s != MPD_OK) {
        std::fprintf(stderr, "step %d: mpd_plan failed: %s\n", step, mpd_status_string(s));
        return 1;
      }
      latency_ms[static_cast<size_t>(step)] = std::chrono::duration<double, std::milli>(end - start).count();
      if (end > deadline) {
        ++missed;
        deadline = end;  // resynchronize instead of bursting to catch up
      }
      std::this_thread::sleep_until(deadline);
      deadline += period;
    }
    std::printf("model %s: env %s, N=%u, H=%u, K=%u, %d Hz, %d steps\n", argv[1],
                info.env_id[0] ? info.env_id : "-", options.num_candidates, info.horizon, info.num_steps,
                rate, steps);
    std::printf("latency_ms p50=%.3f p90=%.3f p99=%.3f max=%.3f missed_deadlines=%d last_action[0]=%.4f\n",
                percentile(latency_ms, 0.5), percentile(latency_ms, 0.9), percentile(latency_ms, 0.99),
                percentile(latency_ms, 1.0), missed, static_cast<double>(actions[0]));
    return missed > max_miss ? 1 : 0;
  } catch (const mpd::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
