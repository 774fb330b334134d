// A firmware-style MPC loop: load a model file, plan at a fixed control rate, report latency.
//
//   mpd_firmware_example MODEL.safetensors [--rate HZ] [--steps N] [--candidates N]
//                        [--threads N] [--max-miss N] [--warm-start-level K]
//
// A real robot reads its state from sensors; this loop feeds back a slowly varying synthetic
// state so it runs anywhere. Everything after set-up is allocation-free: mpd_plan writes into
// buffers made once. With a warm-start level k_w > 0 (the model file's default, or the flag) every
// plan after the first starts from the previous plan's chosen window (mpd_plan_warm).
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

constexpr const char* kUsage =
    "usage: %s MODEL.safetensors [--rate HZ] [--steps N] [--candidates N] [--threads N] [--max-miss N] "
    "[--warm-start-level K]\n"
    "  --rate HZ              control rate (default 50)\n"
    "  --steps N              control steps (default 200)\n"
    "  --candidates N         candidates per plan (default: the model file's)\n"
    "  --threads N            CPU threads, 0 = all (default 0)\n"
    "  --max-miss N           exit 1 when more deadlines are missed (default: steps)\n"
    "  --warm-start-level K   0 = cold plans; K in [1, num_steps) warm-starts (default: the model file's)\n";

const char* const kFlags[] = {"--rate", "--steps", "--candidates", "--threads", "--max-miss", "--warm-start-level"};

// The integer value of flag `name`, or fallback; *bad names the first malformed argument.
int arg_int(int argc, char** argv, const char* name, int fallback, std::string* bad) {
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], name) != 0) continue;
    char* end = nullptr;
    const long v = std::strtol(argv[i + 1], &end, 10);
    if (*argv[i + 1] == '\0' || *end != '\0') *bad = std::string(name) + " needs an integer, got '" + argv[i + 1] + "'";
    return static_cast<int>(v);
  }
  return fallback;
}

// Every argument after the model file must be a known flag followed by a value.
bool check_flags(int argc, char** argv, std::string* bad) {
  for (int i = 2; i < argc; i += 2) {
    bool known = false;
    for (const char* f : kFlags) known = known || std::strcmp(argv[i], f) == 0;
    if (!known) {
      *bad = std::string("unknown argument '") + argv[i] + "'";
      return false;
    }
    if (i + 1 >= argc) {
      *bad = std::string(argv[i]) + " needs a value";
      return false;
    }
  }
  return true;
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
  if (argc >= 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::printf(kUsage, argv[0]);
    return 0;
  }
  std::string bad;
  if (argc < 2 || argv[1][0] == '-' || !check_flags(argc, argv, &bad)) {
    if (!bad.empty()) std::fprintf(stderr, "%s: error: %s\n", argv[0], bad.c_str());
    std::fprintf(stderr, kUsage, argv[0]);
    return 2;
  }
  const int rate = arg_int(argc, argv, "--rate", 50, &bad), steps = arg_int(argc, argv, "--steps", 200, &bad);
  const int threads = arg_int(argc, argv, "--threads", 0, &bad);
  const int max_miss = arg_int(argc, argv, "--max-miss", steps, &bad);
  if (bad.empty() && rate < 1) bad = "--rate must be >= 1, got " + std::to_string(rate);
  if (bad.empty() && steps < 1) bad = "--steps must be >= 1, got " + std::to_string(steps);
  if (bad.empty() && threads < 0) bad = "--threads must be >= 0, got " + std::to_string(threads);
  if (!bad.empty()) {
    std::fprintf(stderr, "%s: error: %s\n", argv[0], bad.c_str());
    return 2;
  }
  try {
    mpd::Model model(argv[1]);
    const mpd_model_info& info = model.info();
    if (!info.digest_verified) {
      std::fprintf(stderr, "warning: %s has no content digest (written before digests): its integrity is not verified\n",
                   argv[1]);
    }
    mpd_options options = model.default_options();
    const int candidates = arg_int(argc, argv, "--candidates", static_cast<int>(options.num_candidates), &bad);
    const int warm = arg_int(argc, argv, "--warm-start-level", static_cast<int>(options.warm_start_level), &bad);
    if (bad.empty() && candidates < 1) bad = "--candidates must be >= 1, got " + std::to_string(candidates);
    if (bad.empty() && (warm < 0 || warm >= static_cast<int>(info.num_steps))) {
      bad = "--warm-start-level must be in [0, " + std::to_string(info.num_steps) + "), got " + std::to_string(warm);
    }
    if (!bad.empty()) {
      std::fprintf(stderr, "%s: error: %s\n", argv[0], bad.c_str());
      return 2;
    }
    options.num_candidates = static_cast<uint32_t>(candidates);
    options.warm_start_level = static_cast<uint32_t>(warm);
    if (info.has_cost && !options.has_cost_limit) {
      options.has_cost_limit = 1;  // a cost model needs a limit: take a 1000-step budget of 20
      options.cost_limit = 20.0;
    }
    mpd::Sampler sampler(model, MPD_BACKEND_CPU, options.num_candidates, static_cast<uint32_t>(threads));

    std::vector<float> state(info.state_dim, 0.0f), actions(options.actions_per_plan * info.action_dim);
    std::vector<double> latency_ms(static_cast<size_t>(steps));
    // The chosen window of each plan is the next one's warm start: two buffers, swapped per step.
    const size_t window_size = static_cast<size_t>(info.horizon) * (info.state_dim + info.action_dim);
    std::vector<float> previous(window_size), chosen(window_size);
    mpd_plan_output out{actions.data(), 0, nullptr, nullptr, nullptr, nullptr, chosen.data()};
    const auto period = std::chrono::nanoseconds(1000000000LL / rate);
    auto deadline = std::chrono::steady_clock::now() + period;
    int missed = 0;
    for (int step = 0; step < steps; ++step) {
      for (uint32_t i = 0; i < info.state_dim; ++i) state[i] = 0.1f * std::sin(0.05f * static_cast<float>(step + i));
      const auto start = std::chrono::steady_clock::now();
      const mpd_status s = sampler.plan_warm(state.data(), step > 0 ? previous.data() : nullptr,
                                             static_cast<uint64_t>(step), &options, &out);
      std::swap(previous, chosen);
      out.window = chosen.data();
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
    std::printf("model %s: env %s, N=%u, H=%u, K=%u, warm start level %u, %d Hz, %d steps\n", argv[1],
                info.env_id[0] ? info.env_id : "-", options.num_candidates, info.horizon, info.num_steps,
                options.warm_start_level, rate, steps);
    std::printf("latency_ms p50=%.3f p90=%.3f p99=%.3f max=%.3f missed_deadlines=%d last_action[0]=%.4f\n",
                percentile(latency_ms, 0.5), percentile(latency_ms, 0.9), percentile(latency_ms, 0.99),
                percentile(latency_ms, 1.0), missed, static_cast<double>(actions[0]));
    return missed > max_miss ? 1 : 0;
  } catch (const mpd::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
