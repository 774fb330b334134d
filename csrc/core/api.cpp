// The C API of the sampler (mpdiffuser.h): argument checks, normalization, backend dispatch and
// candidate selection. Nothing here throws across the C boundary or allocates inside mpd_plan.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "core/model.h"
#include "math/normalizer.h"
#include "math/update.h"

namespace {

void set_message(char* message, size_t size, const std::string& text) {
  if (message == nullptr || size == 0) return;
  const size_t n = std::min(size - 1, text.size());
  std::memcpy(message, text.data(), n);
  message[n] = '\0';
}

// mid = (high + low) / 2 and half = (high - low) / 2 (1 where high == low), in double as the
// Python normalizer computes them.
void normalizer(const std::vector<float>& low, const std::vector<float>& high, std::vector<double>* mid,
                std::vector<double>* half) {
  for (size_t i = 0; i < low.size(); ++i) {
    mid->push_back((static_cast<double>(high[i]) + low[i]) / 2.0);
    const double h = (static_cast<double>(high[i]) - low[i]) / 2.0;
    half->push_back(h > 0.0 ? h : 1.0);
  }
}

// The sizes mpd_workspace_create and mpd_workspace_bytes take.
bool workspace_sizes_valid(uint32_t max_candidates, uint32_t num_threads) {
  return max_candidates >= 1 && max_candidates <= mpd::kMaxCandidates && num_threads <= 1024;
}

// num_threads = 0: every hardware thread.
int resolved_threads(uint32_t num_threads) {
  return num_threads > 0 ? static_cast<int>(num_threads)
                         : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

}  // namespace

mpd_model::mpd_model(mpd::ModelFile f) : file(std::move(f)), cpu(file) {
  normalizer(file.state_low, file.state_high, &state_mid, &state_half);
  normalizer(file.action_low, file.action_high, &action_mid, &action_half);
}

extern "C" mpd_status mpd_model_load_memory(const void* data, size_t size, mpd_model** model,
                                            char* message, size_t message_size) {
  if (model == nullptr) return MPD_ERR_NULL_POINTER;
  *model = nullptr;
  if (data == nullptr && size > 0) return MPD_ERR_NULL_POINTER;
  std::string error;
  try {
    mpd::ModelFile file;
    const mpd_status status =
        mpd::read_model_file(static_cast<const uint8_t*>(data), size, &file, &error);
    if (status != MPD_OK) {
      set_message(message, message_size, error);
      return status;
    }
    *model = new mpd_model(std::move(file));
  } catch (const std::bad_alloc&) {
    set_message(message, message_size, "out of memory while loading the model");
    return MPD_ERR_OUT_OF_MEMORY;
  }
  set_message(message, message_size, "");
  return MPD_OK;
}

extern "C" mpd_status mpd_model_load(const char* path, mpd_model** model, char* message,
                                     size_t message_size) {
  if (model == nullptr) return MPD_ERR_NULL_POINTER;
  *model = nullptr;
  if (path == nullptr) return MPD_ERR_NULL_POINTER;
  std::FILE* f = std::fopen(path, "rb");
  if (f == nullptr) {
    set_message(message, message_size, std::string("cannot open ") + path);
    return MPD_ERR_IO;
  }
  std::vector<uint8_t> bytes;
  mpd_status status = MPD_OK;
  try {
    uint8_t buffer[1 << 16];
    size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof buffer, f)) > 0) bytes.insert(bytes.end(), buffer, buffer + n);
    if (std::ferror(f)) status = MPD_ERR_IO;
  } catch (const std::bad_alloc&) {
    status = MPD_ERR_OUT_OF_MEMORY;
  }
  std::fclose(f);
  if (status != MPD_OK) {
    set_message(message, message_size, std::string("cannot read ") + path);
    return status;
  }
  status = mpd_model_load_memory(bytes.data(), bytes.size(), model, message, message_size);
  if (status == MPD_ERR_BAD_MODEL_FILE && message != nullptr && message_size > 0) {
    set_message(message, message_size, std::string(path) + ": " + message);
  }
  return status;
}

extern "C" void mpd_model_free(mpd_model* model) { delete model; }

extern "C" mpd_status mpd_model_get_info(const mpd_model* model, mpd_model_info* info) {
  if (model == nullptr || info == nullptr) return MPD_ERR_NULL_POINTER;
  const mpd::ModelConfig& c = model->file.config;
  std::memset(info, 0, sizeof *info);
  info->state_dim = static_cast<uint32_t>(c.state_dim);
  info->action_dim = static_cast<uint32_t>(c.action_dim);
  info->cond_dim = static_cast<uint32_t>(c.cond_dim);
  info->horizon = static_cast<uint32_t>(c.horizon);
  info->num_steps = static_cast<uint32_t>(c.num_steps);
  const bool mlp = c.architecture == MPD_ARCH_MLP;
  info->width = mlp ? static_cast<uint32_t>(c.width) : 0u;
  info->layers = mlp ? static_cast<uint32_t>(c.layers) : 0u;
  info->architecture = c.architecture;
  info->ranker_width = static_cast<uint32_t>(c.ranker_width);
  info->ranker_layers = static_cast<uint32_t>(c.ranker_layers);
  info->reward_outputs = static_cast<uint32_t>(c.reward_outputs);
  info->has_cost = c.has_cost ? 1u : 0u;
  std::strncpy(info->env_id, c.env_id.c_str(), sizeof info->env_id - 1);
  info->format_version = static_cast<uint32_t>(c.format_version);
  info->prediction = c.prediction;
  info->digest_verified = model->file.digest_verified ? 1u : 0u;
  return MPD_OK;
}

extern "C" mpd_status mpd_model_default_options(const mpd_model* model, mpd_options* options) {
  if (model == nullptr || options == nullptr) return MPD_ERR_NULL_POINTER;
  *options = model->file.defaults;
  return MPD_OK;
}

extern "C" mpd_status mpd_options_check(const mpd_model* model, const mpd_options* options,
                                        char* message, size_t message_size) {
  if (model == nullptr || options == nullptr) return MPD_ERR_NULL_POINTER;
  std::string error;
  const mpd_status status = mpd::check_options(model->file.config, *options, &error);
  set_message(message, message_size, error);
  return status;
}

extern "C" mpd_status mpd_workspace_create(const mpd_model* model, mpd_backend backend,
                                           uint32_t max_candidates, uint32_t num_threads,
                                           mpd_workspace** workspace) {
  if (workspace == nullptr) return MPD_ERR_NULL_POINTER;
  *workspace = nullptr;
  if (model == nullptr) return MPD_ERR_NULL_POINTER;
  if (!workspace_sizes_valid(max_candidates, num_threads)) return MPD_ERR_INVALID_ARGUMENT;
  if (backend != MPD_BACKEND_CPU && backend != MPD_BACKEND_CUDA) return MPD_ERR_INVALID_ARGUMENT;
  // The CUDA backend does not plan the unet family yet (the CPU backend does).
  if (backend == MPD_BACKEND_CUDA && model->file.config.architecture != MPD_ARCH_MLP) return MPD_ERR_NOT_AVAILABLE;
#ifndef MPD_WITH_CUDA
  if (backend == MPD_BACKEND_CUDA) return MPD_ERR_NOT_AVAILABLE;
#endif
  try {
    auto ws = std::make_unique<mpd_workspace>();
    ws->model = model;
    ws->backend = backend;
#ifdef MPD_WITH_CUDA
    if (backend == MPD_BACKEND_CUDA) {
      const mpd_status status =
          mpd::cuda::CudaSampler::create(model->file, static_cast<int>(max_candidates), &ws->cuda);
      if (status != MPD_OK) return status;
      ws->max_candidates = max_candidates;
    }
#endif
    if (backend == MPD_BACKEND_CPU) {
      ws->cpu = std::make_unique<mpd::cpu::CpuSampler>(model->cpu, static_cast<int>(max_candidates),
                                                       resolved_threads(num_threads));
      ws->max_candidates = max_candidates;
    }
    ws->x0.resize(static_cast<size_t>(model->file.config.state_dim));
    ws->cond.resize(static_cast<size_t>(model->file.config.cond_dim));
    *workspace = ws.release();
  } catch (const std::bad_alloc&) {
    return MPD_ERR_OUT_OF_MEMORY;
  } catch (const std::system_error&) {
    return MPD_ERR_OUT_OF_MEMORY;  // threads could not be started
  }
  return MPD_OK;
}

extern "C" void mpd_workspace_free(mpd_workspace* workspace) { delete workspace; }

extern "C" mpd_status mpd_workspace_bytes(const mpd_model* model, mpd_backend backend, uint32_t max_candidates,
                                          uint32_t num_threads, size_t* bytes) {
  if (model == nullptr || bytes == nullptr) return MPD_ERR_NULL_POINTER;
  if (!workspace_sizes_valid(max_candidates, num_threads)) return MPD_ERR_INVALID_ARGUMENT;
  if (backend != MPD_BACKEND_CPU) return backend == MPD_BACKEND_CUDA ? MPD_ERR_NOT_AVAILABLE : MPD_ERR_INVALID_ARGUMENT;
  *bytes = mpd::cpu::CpuSampler::workspace_bytes(model->cpu, static_cast<int>(max_candidates),
                                                 resolved_threads(num_threads));
  return MPD_OK;
}

extern "C" mpd_status mpd_workspace_cancel(mpd_workspace* workspace) {
  if (workspace == nullptr) return MPD_ERR_NULL_POINTER;
  if (workspace->backend != MPD_BACKEND_CPU || !workspace->cpu) return MPD_ERR_NOT_AVAILABLE;
  workspace->cpu->cancel();
  return MPD_OK;
}

extern "C" mpd_status mpd_plan(const mpd_model* model, mpd_workspace* workspace, const float* state,
                               uint64_t seed, const mpd_options* options, mpd_plan_output* output,
                               void* stream) {
  return mpd_plan_warm(model, workspace, state, nullptr, seed, options, output, stream);
}

extern "C" mpd_status mpd_plan_warm(const mpd_model* model, mpd_workspace* workspace, const float* state,
                                    const float* previous_window, uint64_t seed, const mpd_options* options,
                                    mpd_plan_output* output, void* stream) {
  if (model == nullptr || workspace == nullptr || state == nullptr || output == nullptr ||
      output->actions == nullptr) {
    return MPD_ERR_NULL_POINTER;
  }
  if (workspace->model != model) return MPD_ERR_MODEL_MISMATCH;
  const mpd_options& o = options != nullptr ? *options : model->file.defaults;
  const mpd::ModelConfig& c = model->file.config;
  // check_options builds its message only on failure; success allocates nothing.
  std::string unused;
  if (o.num_candidates > workspace->max_candidates) return MPD_ERR_INVALID_ARGUMENT;
  if (mpd::check_options(c, o, &unused) != MPD_OK) return MPD_ERR_INVALID_ARGUMENT;
  workspace->cond[0] = static_cast<float>(o.return_target);
  if (c.has_cost) workspace->cond[1] = static_cast<float>(o.cost_limit * c.cost_scale);
  const float* warm = o.warm_start_level > 0 ? previous_window : nullptr;  // k_w = 0: cold
#ifdef MPD_WITH_CUDA
  if (workspace->backend == MPD_BACKEND_CUDA) {  // device pointers, asynchronous on the stream
    return workspace->host_staged
               ? workspace->cuda->plan_host(state, warm, seed, o, workspace->cond.data(), output, stream)
               : workspace->cuda->plan(state, warm, seed, o, workspace->cond.data(), output, stream);
  }
#endif
  (void)stream;  // the CPU backend runs synchronously
  for (int i = 0; i < c.state_dim; ++i) {
    if (!std::isfinite(state[i])) return MPD_ERR_NON_FINITE;
  }
  for (int i = 0; i < c.state_dim; ++i) {
    if (!mpd::math::state_in_range(state[i], model->state_mid[i], model->state_half[i])) {
      return MPD_ERR_STATE_OUT_OF_RANGE;
    }
  }
  const int H = c.horizon, dx = c.state_dim, du = c.action_dim, D = c.window_dim();
  if (warm != nullptr) {
    for (int i = 0; i < H * D; ++i) {
      if (!std::isfinite(warm[i])) return MPD_ERR_NON_FINITE;
    }
  }
  for (size_t i = 0; i < workspace->x0.size(); ++i) {
    const int Q = c.quantiles;
    workspace->x0[i] = static_cast<float>(
        Q ? mpd::math::cdf_forward(model->file.state_quantiles.data() + i * Q, Q, state[i])
          : mpd::math::minmax_forward(state[i], model->state_mid[i], model->state_half[i]));
  }
  const float w = static_cast<float>(o.guidance), lambda = static_cast<float>(o.dynamics_weight);
  mpd::cpu::PlanRequest request{workspace->x0.data(), workspace->cond.data(), seed,
                                static_cast<int>(o.num_candidates), w != 1.0f, w, lambda,
                                static_cast<float>(1.0 - o.dynamics_weight), o.dynamics_every,
                                o.dynamics_last, o.discount, std::sqrt(static_cast<float>(o.temperature)),
                                warm, warm != nullptr ? static_cast<int>(o.warm_start_level) : c.num_steps,
                                static_cast<int>(o.actions_per_plan),
                                static_cast<float>(o.dynamics_guidance) != 1.0f,
                                static_cast<float>(o.dynamics_guidance)};
  mpd::cpu::CpuSampler& sampler = *workspace->cpu;
  if (!sampler.plan(request)) return MPD_ERR_CANCELLED;

  const int N = static_cast<int>(o.num_candidates);
  const float* values = sampler.values();
  const float* costs = sampler.costs();
  const bool budget = c.has_cost && o.has_cost_budget;
  const float b = static_cast<float>(o.cost_budget);
  int best = 0;
  for (int n = 1; n < N; ++n) {
    const float cost_n = budget ? costs[n] : 0.0f, cost_best = budget ? costs[best] : 0.0f;
    if (mpd::math::better_candidate(values[n], cost_n, !budget || cost_n <= b, values[best],
                                    cost_best, !budget || cost_best <= b)) {
      best = n;
    }
  }
  const float* window = sampler.windows() + static_cast<size_t>(best) * H * D;
  for (uint32_t t = 0; t < o.actions_per_plan; ++t) {
    for (int j = 0; j < du; ++j) {
      const double y = window[t * D + dx + j];
      const int Q = c.quantiles;
      output->actions[t * du + j] = static_cast<float>(
          Q ? mpd::math::cdf_inverse(model->file.action_quantiles.data() + j * Q, Q, y)
            : mpd::math::minmax_inverse(y, model->action_mid[j], model->action_half[j]));
    }
  }
  output->index = static_cast<uint32_t>(best);
  if (output->index_ptr) *output->index_ptr = static_cast<uint32_t>(best);
  if (output->values) std::memcpy(output->values, values, sizeof(float) * N);
  if (output->costs && c.has_cost) std::memcpy(output->costs, costs, sizeof(float) * N);
  if (output->windows) {
    std::memcpy(output->windows, sampler.windows(), sizeof(float) * static_cast<size_t>(N) * H * D);
  }
  if (output->window) std::memcpy(output->window, window, sizeof(float) * static_cast<size_t>(H) * D);
  // A NaN value makes the selection meaningless and a NaN window or action must never reach a
  // motor; the check reads N + H D + a du floats, against the K network passes of the plan.
  bool finite = true;
  for (int n = 0; n < N; ++n) finite = finite && std::isfinite(values[n]);
  for (int i = 0; i < H * D; ++i) finite = finite && std::isfinite(window[i]);
  for (uint32_t i = 0; i < o.actions_per_plan * static_cast<uint32_t>(du); ++i) {
    finite = finite && std::isfinite(output->actions[i]);
  }
  return finite ? MPD_OK : MPD_ERR_NON_FINITE_PLAN;
}

extern "C" mpd_status mpd_plan_warm_host(const mpd_model* model, mpd_workspace* workspace, const float* state,
                                         const float* previous_window, uint64_t seed, const mpd_options* options,
                                         mpd_plan_output* output, void* stream) {
  if (workspace == nullptr) return MPD_ERR_NULL_POINTER;
  workspace->host_staged = true;
  const mpd_status status = mpd_plan_warm(model, workspace, state, previous_window, seed, options, output, stream);
  workspace->host_staged = false;
  return status;
}

extern "C" mpd_status mpd_plan_host(const mpd_model* model, mpd_workspace* workspace, const float* state,
                                    uint64_t seed, const mpd_options* options, mpd_plan_output* output,
                                    void* stream) {
  return mpd_plan_warm_host(model, workspace, state, nullptr, seed, options, output, stream);
}
