// The CPU backend behind the seam (backend/backend.h): checks and normalizes the state, runs the
// CpuSampler, selects the candidate and writes its de-normalized actions, synchronously.
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/backend.h"
#include "cpu/sampler.h"
#include "math/normalizer.h"
#include "math/update.h"

namespace mpd::cpu {

namespace {

class CpuBackend final : public Backend {
 public:
  CpuBackend(const ModelFile& file, std::shared_ptr<const CpuModel> model, int max_candidates, int threads)
      : file_(file),
        model_(std::move(model)),
        sampler_(*model_, max_candidates, threads),
        x0_(static_cast<size_t>(file.config.state_dim)) {}

  uint32_t max_candidates() const override { return static_cast<uint32_t>(sampler_.max_candidates()); }

  mpd_status cancel() override {
    sampler_.cancel();
    return MPD_OK;
  }

  mpd_status plan(const PlanRequest& r, mpd_plan_output* output, void*) override {
    const ModelConfig& c = file_.config;
    const int H = c.horizon, dx = c.state_dim, du = c.action_dim, D = c.window_dim(), Q = c.quantiles;
    for (int i = 0; i < dx; ++i) {
      if (!std::isfinite(r.state[i])) return MPD_ERR_NON_FINITE;
    }
    for (int i = 0; i < dx; ++i) {
      if (!math::state_in_range(r.state[i], file_.state_mid[i], file_.state_half[i])) {
        return MPD_ERR_STATE_OUT_OF_RANGE;
      }
    }
    if (r.warm != nullptr) {
      for (int i = 0; i < H * D; ++i) {
        if (!std::isfinite(r.warm[i])) return MPD_ERR_NON_FINITE;
      }
    }
    for (int i = 0; i < dx; ++i) {
      x0_[i] = static_cast<float>(math::normalize(r.state[i], file_.state_quantiles.data() + i * Q, Q,
                                                  file_.state_mid[i], file_.state_half[i]));
    }
    if (!sampler_.plan(r, x0_.data())) return MPD_ERR_CANCELLED;

    const int N = r.num_candidates;
    const float* values = sampler_.values();
    const float* costs = sampler_.costs();
    const int best = math::best_candidate(values, costs, r.budget, r.cost_budget, 0, N, 1);
    const float* window = sampler_.windows() + static_cast<size_t>(best) * H * D;
    for (int t = 0; t < r.actions_per_plan; ++t) {
      for (int j = 0; j < du; ++j) {
        output->actions[t * du + j] = static_cast<float>(math::denormalize(
            window[t * D + dx + j], file_.action_quantiles.data() + j * Q, Q, file_.action_mid[j], file_.action_half[j]));
      }
    }
    output->index = static_cast<uint32_t>(best);
    if (output->index_ptr) *output->index_ptr = static_cast<uint32_t>(best);
    if (output->values) std::memcpy(output->values, values, sizeof(float) * N);
    if (output->costs && c.has_cost) std::memcpy(output->costs, costs, sizeof(float) * N);
    if (output->windows) {
      std::memcpy(output->windows, sampler_.windows(), sizeof(float) * static_cast<size_t>(N) * H * D);
    }
    if (output->window) std::memcpy(output->window, window, sizeof(float) * static_cast<size_t>(H) * D);
    // A NaN value makes the selection meaningless and a NaN window or action must never reach a
    // motor; the check reads N + H D + a du floats, against the K network passes of the plan.
    bool finite = true;
    for (int n = 0; n < N; ++n) finite = finite && std::isfinite(values[n]);
    for (int i = 0; i < H * D; ++i) finite = finite && std::isfinite(window[i]);
    for (int i = 0; i < r.actions_per_plan * du; ++i) finite = finite && std::isfinite(output->actions[i]);
    return finite ? MPD_OK : MPD_ERR_NON_FINITE_PLAN;
  }

 private:
  const ModelFile& file_;  // the model outlives its workspaces (mpd_workspace_free first)
  std::shared_ptr<const CpuModel> model_;
  CpuSampler sampler_;
  std::vector<float> x0_;  // [dx] this plan's normalized state
};

}  // namespace

namespace {

std::shared_ptr<const void> prepare(const ModelFile& file) { return std::make_shared<const CpuModel>(file); }

mpd_status make(const ModelFile& file, const std::shared_ptr<const void>& prepared, int max_candidates, int threads,
                std::unique_ptr<Backend>* out) {
  *out = std::make_unique<CpuBackend>(file, std::static_pointer_cast<const CpuModel>(prepared), max_candidates,
                                      threads);
  return MPD_OK;
}

size_t bytes(const std::shared_ptr<const void>& prepared, int max_candidates, int threads) {
  return CpuSampler::workspace_bytes(*static_cast<const CpuModel*>(prepared.get()), max_candidates, threads);
}

bool always() { return true; }

}  // namespace

const BackendRecord kRecord{MPD_BACKEND_CPU, "cpu", true, &prepare, &make, &bytes, &always, nullptr};

}  // namespace mpd::cpu
