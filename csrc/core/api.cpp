// The C API of the sampler (mpdiffuser.h): argument checks, options checked and resolved once
// (mpd::resolve_plan), dispatch to the workspace's backend through the seam (backend/backend.h).
// Nothing here throws across the C boundary or allocates inside mpd_plan.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "core/model.h"
#include "format/model_file.h"
#include "math/normalizer.h"
#include "math/update.h"

namespace {

void set_message(char* message, size_t size, const std::string& text) {
  if (message == nullptr || size == 0) return;
  const size_t n = std::min(size - 1, text.size());
  std::memcpy(message, text.data(), n);
  message[n] = '\0';
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
  // A regular file only, read to its size and no further: /dev/zero would be read until memory
  // runs out, and opening a FIFO would block forever.
  std::error_code code;
  const std::filesystem::file_status kind = std::filesystem::status(path, code);
  if (!code && std::filesystem::exists(kind) && !std::filesystem::is_regular_file(kind)) {
    set_message(message, message_size, std::string(path) + " is not a regular file");
    return MPD_ERR_IO;
  }
  const std::uintmax_t size = code ? 0 : std::filesystem::file_size(path, code);
  std::FILE* f = code ? nullptr : std::fopen(path, "rb");
  if (f == nullptr) {
    set_message(message, message_size, std::string("cannot open ") + path);
    return MPD_ERR_IO;
  }
  std::vector<uint8_t> bytes;
  mpd_status status = MPD_OK;
  try {
    // The header first (its length, then its JSON): a file larger than the header declares is
    // refused before the rest is read (a model file with gigabytes appended, say).
    auto read_to = [&](size_t n) {
      const size_t have = bytes.size();
      bytes.resize(n);
      return n == have || std::fread(bytes.data() + have, 1, n - have, f) == n - have;
    };
    const size_t total = static_cast<size_t>(size);
    if (!read_to(std::min<size_t>(total, 8))) status = MPD_ERR_IO;
    if (status == MPD_OK && total >= 8) {
      uint64_t header = 0;
      for (int i = 7; i >= 0; --i) header = (header << 8) | bytes[static_cast<size_t>(i)];
      if (header <= total - 8 && header <= (uint64_t{1} << 26) && !read_to(8 + static_cast<size_t>(header))) {
        status = MPD_ERR_IO;
      }
      const uint64_t declared = status == MPD_OK ? mpd::declared_file_size(bytes.data(), bytes.size()) : 0;
      if (declared != 0 && total > declared) {
        std::fclose(f);
        set_message(message, message_size, std::string(path) + ": the file holds " + std::to_string(total) +
                                               " bytes, its header declares " + std::to_string(declared) +
                                               " (data appended, or not a model file)");
        return MPD_ERR_BAD_MODEL_FILE;
      }
    }
    if (status == MPD_OK && !read_to(total)) status = MPD_ERR_IO;
  } catch (const std::bad_alloc&) {
    status = MPD_ERR_OUT_OF_MEMORY;
  } catch (const std::length_error&) {
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
  const mpd::BackendRecord* record = mpd::find_backend(static_cast<int>(backend));
  if (record == nullptr) return MPD_ERR_INVALID_ARGUMENT;
  if (!record->compiled) return MPD_ERR_NOT_AVAILABLE;
  try {
    auto ws = std::make_unique<mpd_workspace>();
    ws->model = model;
    ws->backend = backend;
    const mpd_status status = record->make(model->file, model->prepared[record->id], static_cast<int>(max_candidates),
                                           resolved_threads(num_threads), &ws->impl);
    if (status != MPD_OK) return status;
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
  const mpd::BackendRecord* record = mpd::find_backend(static_cast<int>(backend));
  if (record == nullptr) return MPD_ERR_INVALID_ARGUMENT;
  if (!record->compiled || record->workspace_bytes == nullptr) return MPD_ERR_NOT_AVAILABLE;
  *bytes = record->workspace_bytes(model->prepared[record->id], static_cast<int>(max_candidates),
                                   resolved_threads(num_threads));
  return MPD_OK;
}

extern "C" mpd_status mpd_workspace_cancel(mpd_workspace* workspace) {
  if (workspace == nullptr) return MPD_ERR_NULL_POINTER;
  return workspace->impl->cancel();
}

extern "C" mpd_status mpd_plan(const mpd_model* model, mpd_workspace* workspace, const float* state,
                               uint64_t seed, const mpd_options* options, mpd_plan_output* output,
                               void* stream) {
  return mpd_plan_warm(model, workspace, state, nullptr, seed, options, output, stream);
}

namespace {

mpd_status plan(const mpd_model* model, mpd_workspace* workspace, const float* state, const float* previous_window,
                uint64_t seed, const mpd_options* options, mpd_plan_output* output, void* stream, bool host_staged) {
  if (model == nullptr || workspace == nullptr || state == nullptr || output == nullptr ||
      output->actions == nullptr) {
    return MPD_ERR_NULL_POINTER;
  }
  if (workspace->model != model) return MPD_ERR_MODEL_MISMATCH;
  const mpd_options& o = options != nullptr ? *options : model->file.defaults;
  // check_options builds its message only on failure; success allocates nothing.
  std::string unused;
  if (o.num_candidates > workspace->impl->max_candidates()) return MPD_ERR_INVALID_ARGUMENT;
  if (mpd::check_options(model->file.config, o, &unused) != MPD_OK) return MPD_ERR_INVALID_ARGUMENT;
  mpd::PlanRequest request = mpd::resolve_plan(model->file.config, o, state, previous_window, seed);
  request.host_staged = host_staged;
  return workspace->impl->plan(request, output, stream);
}

}  // namespace

extern "C" mpd_status mpd_plan_warm(const mpd_model* model, mpd_workspace* workspace, const float* state,
                                    const float* previous_window, uint64_t seed, const mpd_options* options,
                                    mpd_plan_output* output, void* stream) {
  return plan(model, workspace, state, previous_window, seed, options, output, stream, false);
}

extern "C" mpd_status mpd_plan_warm_host(const mpd_model* model, mpd_workspace* workspace, const float* state,
                                         const float* previous_window, uint64_t seed, const mpd_options* options,
                                         mpd_plan_output* output, void* stream) {
  return plan(model, workspace, state, previous_window, seed, options, output, stream, true);
}

extern "C" mpd_status mpd_plan_host(const mpd_model* model, mpd_workspace* workspace, const float* state,
                                    uint64_t seed, const mpd_options* options, mpd_plan_output* output,
                                    void* stream) {
  return mpd_plan_warm_host(model, workspace, state, nullptr, seed, options, output, stream);
}
