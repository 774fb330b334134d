#include <cmath>

#include "backend/backend.h"

namespace mpd {

PlanRequest resolve_plan(const ModelConfig& c, const mpd_options& o, const float* state, const float* warm,
                         uint64_t seed) {
  PlanRequest r{};
  r.state = state;
  r.warm = o.warm_start_level > 0 ? warm : nullptr;  // k_w = 0: cold
  r.seed = seed;
  r.num_candidates = static_cast<int>(o.num_candidates);
  r.cond[0] = static_cast<float>(o.return_target);
  r.cond[1] = c.has_cost ? static_cast<float>(o.cost_limit * c.cost_scale) : 0.0f;
  r.guidance = static_cast<float>(o.guidance);
  r.guided = r.guidance != 1.0f;
  r.dynamics_guidance = static_cast<float>(o.dynamics_guidance);
  r.dynamics_guided = r.dynamics_guidance != 1.0f;
  r.lambda = static_cast<float>(o.dynamics_weight);
  r.one_minus_lambda = static_cast<float>(1.0 - o.dynamics_weight);
  r.dynamics_every = o.dynamics_every;
  r.dynamics_last = o.dynamics_last;
  r.discount = o.discount;
  r.noise_scale = std::sqrt(static_cast<float>(o.temperature));
  r.start_level = r.warm != nullptr ? static_cast<int>(o.warm_start_level) : c.num_steps;
  r.actions_per_plan = static_cast<int>(o.actions_per_plan);
  r.budget = c.has_cost && o.has_cost_budget;
  r.cost_budget = static_cast<float>(o.cost_budget);
  r.fast_numerics = o.fast_numerics != 0;
  return r;
}

}  // namespace mpd
