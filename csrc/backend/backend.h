// The seam between the C API and the backends (design section 2). The API checks a plan's options
// once and resolves them into one PlanRequest; a backend (CPU: cpu/backend.cpp, CUDA:
// cuda/sampler.cu) runs it behind one interface: it checks and normalizes the state, samples and
// ranks the candidates, selects one (math::best_candidate) and writes its de-normalized actions
// (math::denormalize), each by the same math/ functions. Layers: format/ (the model file) below
// the backends, core/ (the C API) above them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "format/model_file.h"
#include "mpdiffuser/mpdiffuser.h"

namespace mpd {

// One plan, every option checked and converted once for the backends (the one resolved form of
// mpd_options; the options themselves are declared in mpdiffuser/options.def).
struct PlanRequest {
  const float* state;  // [dx] raw state (device memory for CUDA unless host-staged)
  const float* warm;   // [H, D] previous normalized window, or nullptr (cold)
  uint64_t seed;
  int num_candidates;
  float cond[2];          // c: return target, cost limit * s_c (cost models)
  bool guided;            // planner w != 1: conditional and unconditional rows, 2N per network call
  float guidance;         // w
  bool dynamics_guided;   // w_d != 1: 2N rows per dynamics call
  float dynamics_guidance;
  float lambda, one_minus_lambda;
  unsigned dynamics_every, dynamics_last;
  double discount;        // gamma of the ranker's value and cost
  float noise_scale;      // sqrt(temperature), float32
  int start_level;        // K cold; k_w warm
  int actions_per_plan;   // actions returned; a warm window is shifted by as many rows (executed)
  bool budget;            // a cost model with a cost budget: selection keeps C <= cost_budget
  float cost_budget;
  bool fast_numerics;     // every network layer's inputs rounded to bfloat16 (math/bf16.h) before its products
  bool host_staged;       // CUDA: state and outputs are host memory (mpd_plan_host), copied through
                          // the backend's own buffers and synchronized; the CPU backend ignores it
};

// The request of options `o` (checked by check_options) for model `c`.
PlanRequest resolve_plan(const ModelConfig& c, const mpd_options& o, const float* state, const float* warm,
                         uint64_t seed);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual uint32_t max_candidates() const = 0;
  // One plan into `output` (mpd_plan_output's contract). CUDA: asynchronous on `stream`, device
  // pointers unless request.host_staged; the CPU backend ignores both.
  virtual mpd_status plan(const PlanRequest& request, mpd_plan_output* output, void* stream) = 0;
  // Stops the running (or next) plan at its next denoising step (MPD_ERR_CANCELLED); thread-safe.
  virtual mpd_status cancel() { return MPD_ERR_NOT_AVAILABLE; }
};

// A backend's record in the registry (backend/registry.cpp, the one list of backends), which the
// C API and the binding look backends up in instead of naming them: a third backend adds its
// folder, its record and one line there.
struct BackendRecord {
  mpd_backend id;
  const char* name;  // "cpu", "cuda": the binding's and the command line's name
  bool compiled;     // built into this library (a backend built without is listed, never available)
  // What the backend keeps per model, shared by the model's workspaces, made when the model loads
  // (the CPU backend's packed networks); nullptr: nothing. May throw std::bad_alloc.
  std::shared_ptr<const void> (*prepare)(const ModelFile& file);
  // A workspace's backend for up to max_candidates candidates (threads: the CPU backend's);
  // MPD_ERR_NOT_AVAILABLE where it cannot run here. May throw std::bad_alloc, std::system_error.
  mpd_status (*make)(const ModelFile& file, const std::shared_ptr<const void>& prepared, int max_candidates,
                     int threads, std::unique_ptr<Backend>* out);
  // The bytes such a workspace takes; nullptr: the backend cannot say before it makes one.
  size_t (*workspace_bytes)(const std::shared_ptr<const void>& prepared, int max_candidates, int threads);
  bool (*device_available)();  // whether it can run on this machine now
  // z(seed, candidate, step) from the backend's own noise code into host memory (self-checks);
  // nullptr: the backend has no noise code of its own.
  mpd_status (*fill_normal_host)(uint64_t seed, uint32_t candidate, uint32_t step, float* out, size_t count);
};

constexpr int kBackendCount = 2;              // records in the registry, ids 0 .. kBackendCount - 1
const BackendRecord* find_backend(int id);    // nullptr: no such backend
const BackendRecord* find_backend(const std::string& name);
std::string backend_names();                  // "'cpu' or 'cuda'", for messages

namespace cpu {
extern const BackendRecord kRecord;
}  // namespace cpu
namespace cuda {
extern const BackendRecord kRecord;  // a record with compiled false when the library has no CUDA
}  // namespace cuda

}  // namespace mpd
