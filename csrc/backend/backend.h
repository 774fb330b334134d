// The seam between the C API and the backends (design section 2). The API checks a plan's options
// once and resolves them into one PlanRequest; a backend (CPU: cpu/backend.cpp, CUDA:
// cuda/sampler.cu) runs it behind one interface: it checks and normalizes the state, samples and
// ranks the candidates, selects one (math::best_candidate) and writes its de-normalized actions
// (math::denormalize), each by the same math/ functions. Layers: format/ (the model file) below
// the backends, core/ (the C API) above them.
#pragma once

#include <cstdint>
#include <memory>

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
};

// The request of options `o` (checked by check_options) for model `c`.
PlanRequest resolve_plan(const ModelConfig& c, const mpd_options& o, const float* state, const float* warm,
                         uint64_t seed);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual uint32_t max_candidates() const = 0;
  // One plan into `output` (mpd_plan_output's contract). CUDA: asynchronous on `stream`, device
  // pointers unless host_staged (then host memory, copied through the backend's own buffers and
  // synchronized); the CPU backend ignores both.
  virtual mpd_status plan(const PlanRequest& request, mpd_plan_output* output, bool host_staged, void* stream) = 0;
  // Stops the running (or next) plan at its next denoising step (MPD_ERR_CANCELLED); thread-safe.
  virtual mpd_status cancel() { return MPD_ERR_NOT_AVAILABLE; }
};

namespace cpu {
struct CpuModel;  // the CPU backend's packed networks, shared by a model's workspaces
std::shared_ptr<const CpuModel> pack_model(const ModelFile& file);  // throws std::bad_alloc
std::unique_ptr<Backend> make_backend(const ModelFile& file, std::shared_ptr<const CpuModel> model,
                                      int max_candidates, int threads);  // throws bad_alloc, system_error
size_t workspace_bytes(const CpuModel& model, int max_candidates, int threads);
}  // namespace cpu

namespace cuda {
// MPD_ERR_NOT_AVAILABLE without a device, when the model's rows do not fit a block's shared
// memory, or for an architecture the CUDA backend does not run.
mpd_status make_backend(const ModelFile& file, int max_candidates, std::unique_ptr<Backend>* out);
}  // namespace cuda

}  // namespace mpd
