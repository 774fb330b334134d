// mpdiffuser C++ wrapper: RAII over the C API of mpdiffuser.h, header-only. Errors become
// mpd::Error exceptions on the C++ side only; the C boundary below never throws.
//
//   mpd::Model model("hopper.safetensors");
//   mpd::Sampler sampler(model, MPD_BACKEND_CPU, /*max_candidates=*/64);
//   mpd::PlanResult r = sampler.plan(state, seed);   // r.actions: [a * du]
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "mpdiffuser/mpdiffuser.h"

namespace mpd {

class Error : public std::runtime_error {
 public:
  Error(mpd_status status, const std::string& what)
      : std::runtime_error(what + ": " + mpd_status_string(status)), status_(status) {}
  mpd_status status() const { return status_; }

 private:
  mpd_status status_;
};

// An immutable loaded model; share one between samplers and threads.
class Model {
 public:
  explicit Model(const std::string& path) {
    char message[512] = {0};
    const mpd_status s = mpd_model_load(path.c_str(), &model_, message, sizeof message);
    if (s != MPD_OK) throw Error(s, message[0] ? std::string(message) : "cannot load " + path);
    mpd_model_get_info(model_, &info_);
  }
  ~Model() { mpd_model_free(model_); }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const mpd_model* get() const { return model_; }
  const mpd_model_info& info() const { return info_; }
  mpd_options default_options() const {
    mpd_options o;
    mpd_model_default_options(model_, &o);
    return o;
  }

 private:
  mpd_model* model_ = nullptr;
  mpd_model_info info_{};
};

struct PlanResult {
  std::vector<float> actions;  // [actions_per_plan * action_dim], env units
  uint32_t index = 0;          // chosen candidate
  std::vector<float> values;   // [N]
  std::vector<float> costs;    // [N], empty without a cost model
  std::vector<float> window;   // [H * (state_dim + action_dim)] chosen normalized window (warm start)
};

// A workspace bound to one model; one thread plans with it at a time.
class Sampler {
 public:
  Sampler(const Model& model, mpd_backend backend, uint32_t max_candidates, uint32_t num_threads = 0)
      : model_(model) {
    const mpd_status s = mpd_workspace_create(model.get(), backend, max_candidates, num_threads, &ws_);
    if (s != MPD_OK) throw Error(s, "mpd_workspace_create");
  }
  ~Sampler() { mpd_workspace_free(ws_); }
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  mpd_workspace* get() const { return ws_; }

  // The allocation-free path: output buffers owned by the caller. Returns the status.
  mpd_status plan(const float* state, uint64_t seed, const mpd_options* options, mpd_plan_output* out,
                  void* stream = nullptr) {
    return mpd_plan(model_.get(), ws_, state, seed, options, out, stream);
  }

  // The same warm-started from previous_window [H, D] (the last plan's out->window), used when
  // options->warm_start_level > 0.
  mpd_status plan_warm(const float* state, const float* previous_window, uint64_t seed, const mpd_options* options,
                       mpd_plan_output* out, void* stream = nullptr) {
    return mpd_plan_warm(model_.get(), ws_, state, previous_window, seed, options, out, stream);
  }

  // Convenience from host memory on any backend (mpd_plan_host): allocates the result; throws
  // mpd::Error on failure.
  // previous_window: the last result's window, for a warm start (options.warm_start_level > 0).
  PlanResult plan(const std::vector<float>& state, uint64_t seed, const mpd_options& options,
                  const std::vector<float>* previous_window = nullptr) {
    const mpd_model_info& info = model_.info();
    if (state.size() != info.state_dim) throw Error(MPD_ERR_INVALID_ARGUMENT, "state size");
    const size_t window = static_cast<size_t>(info.horizon) * (info.state_dim + info.action_dim);
    if (previous_window != nullptr && previous_window->size() != window) {
      throw Error(MPD_ERR_INVALID_ARGUMENT, "previous window size");
    }
    PlanResult r;
    r.window.resize(window);
    r.actions.resize(static_cast<size_t>(options.actions_per_plan) * model_.info().action_dim);
    r.values.resize(options.num_candidates);
    if (model_.info().has_cost) r.costs.resize(options.num_candidates);
    mpd_plan_output out{r.actions.data(), 0, r.values.data(), r.costs.empty() ? nullptr : r.costs.data(),
                        nullptr, nullptr, r.window.data()};
    const mpd_status s = mpd_plan_warm_host(model_.get(), ws_, state.data(),
                                            previous_window ? previous_window->data() : nullptr, seed, &options,
                                            &out, nullptr);
    if (s != MPD_OK) throw Error(s, "mpd_plan_host");
    r.index = out.index;
    return r;
  }

 private:
  const Model& model_;
  mpd_workspace* ws_ = nullptr;
};

}  // namespace mpd
