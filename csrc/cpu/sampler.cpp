// The CPU backend's alternating sampler; see sampler.h.
#include "cpu/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/normal.h"
#include "math/schedule.h"

namespace mpd::cpu {

CpuModel::CpuModel(const ModelFile& file)
    : config(file.config),
      planner(make_denoiser(file, true)),
      dynamics(make_denoiser(file, false)),
      reward(pack_mlp(file.reward)) {
  if (config.has_cost) cost = pack_mlp(file.cost);
  const int K = config.num_steps;
  steps.resize(static_cast<size_t>(K));
  for (int k = 1; k <= K; ++k) {
    steps[static_cast<size_t>(k - 1)] = math::step_floats(k, K, config.prediction == MPD_PREDICT_SAMPLE);
  }
}

CpuSampler::Layout CpuSampler::layout(const CpuModel& model, int max_candidates, int threads) {
  const ModelConfig& c = model.config;
  Layout l{};
  l.threads = std::min(threads, max_candidates);
  l.chunk_capacity = (max_candidates + l.threads - 1) / l.threads;
  const size_t H = static_cast<size_t>(c.horizon), D = static_cast<size_t>(c.window_dim());
  const size_t C = static_cast<size_t>(l.chunk_capacity);
  l.ld_hidden = static_cast<size_t>(model.reward.width_padded());
  l.ld_eps = std::max({model.planner->min_ldo(), model.dynamics->min_ldo(),
                       static_cast<size_t>(model.reward.out_padded())});
  if (c.has_cost) {
    l.ld_hidden = std::max(l.ld_hidden, static_cast<size_t>(model.cost.width_padded()));
    l.ld_eps = std::max(l.ld_eps, static_cast<size_t>(model.cost.out_padded()));
  }
  const size_t ranker_rows = C * H;
  l.input = ranker_rows * D;
  l.hidden = ranker_rows * l.ld_hidden;
  l.eps = std::max(2 * C, ranker_rows) * l.ld_eps;  // 2C denoiser or C H ranker rows
  l.noise = H * D;
  l.denoise = std::max(model.planner->scratch_floats(2 * l.chunk_capacity),
                       model.dynamics->scratch_floats(2 * l.chunk_capacity));
  l.prepared[0] = model.planner->prepared_floats();
  l.prepared[1] = model.dynamics->prepared_floats();
  l.candidates = static_cast<size_t>(max_candidates);
  l.windows = l.candidates * H * D;
  l.horizon = H;
  l.cond = static_cast<size_t>(std::max(c.cond_dim, 1));
  return l;
}

size_t CpuSampler::workspace_bytes(const CpuModel& model, int max_candidates, int threads) {
  const Layout l = layout(model, max_candidates, threads);
  const size_t per_thread = l.input + 2 * l.hidden + l.eps + l.noise + l.denoise + l.prepared[0] + l.prepared[1];
  return sizeof(float) * (static_cast<size_t>(l.threads) * per_thread + l.windows + 2 * l.candidates + l.horizon +
                          l.cond);
}

CpuSampler::CpuSampler(const CpuModel& model, int max_candidates, int threads)
    : model_(model), max_candidates_(max_candidates), pool_(std::min(threads, max_candidates)) {
  const Layout l = layout(model, max_candidates, threads);
  chunk_capacity_ = l.chunk_capacity;
  ld_hidden_ = l.ld_hidden;
  ld_eps_ = l.ld_eps;
  for (int t = 0; t < pool_.size(); ++t) {
    Scratch s;
    s.input = aligned_floats(l.input);
    s.h0 = aligned_floats(l.hidden);
    s.h1 = aligned_floats(l.hidden);
    s.eps = aligned_floats(l.eps);
    s.noise = aligned_floats(l.noise);
    s.denoise = aligned_floats(l.denoise);
    s.prepared[0] = aligned_floats(l.prepared[0]);
    s.prepared[1] = aligned_floats(l.prepared[1]);
    scratch_.push_back(std::move(s));
  }
  windows_ = aligned_floats(l.windows);
  values_ = aligned_floats(l.candidates);
  costs_ = aligned_floats(l.candidates);
  gammas_ = aligned_floats(l.horizon);
  zeros_ = aligned_floats(l.cond);
}

bool CpuSampler::plan(const PlanRequest& req, const float* x0) {
  x0_ = x0;
  request_ = &req;
  for (int t = 0; t < model_.config.horizon; ++t) {
    gammas_[static_cast<size_t>(t)] = static_cast<float>(std::pow(req.discount, t));
  }
  active_threads_ = std::min(pool_.size(), req.num_candidates);
  pool_.run(active_threads_, &CpuSampler::run_chunk, this);
  request_ = nullptr;
  return !cancel_.exchange(false, std::memory_order_relaxed);
}

void CpuSampler::run_chunk(void* self, int index) {
  auto* s = static_cast<CpuSampler*>(self);
  const int n = s->request_->num_candidates, threads = s->active_threads_;
  const int first = index * n / threads, last = (index + 1) * n / threads;
  Scratch& scratch = s->scratch_[static_cast<size_t>(index)];
  s->sample_chunk(first, last - first, scratch);
  if (!s->cancel_.load(std::memory_order_relaxed)) s->rank_chunk(first, last - first, scratch);
}

namespace {

enum class Update { kDynamics, kPlanner };

// v[e] for e < n: the dynamics update (X' = (1 - lambda) X + lambda mu_k(X, o)) or the planner
// update (mu_k(v, o) + sigma_k scale z[e], or mu_k alone at k = 1, z null), with o[e] =
// guided(cond[e], uncond[e], w) when uncond is given, else cond[e]. Each element's float
// operations are math/update.h's, in its order; straight loops over restrict pointers, so that
// they vectorize.
void update_row(Update kind, float* __restrict v, const float* __restrict cond, const float* __restrict uncond,
                float w, const float* __restrict z, float scale, const math::StepFloats& st, size_t n,
                float one_minus_lambda = 0.0f, float lambda = 1.0f) {
  const bool planner = kind == Update::kPlanner;
  for (size_t e = 0; e < n; ++e) {
    const float o = uncond != nullptr ? math::guided(cond[e], uncond[e], w) : cond[e];
    if (!planner) {
      v[e] = math::dynamics_update(v[e], o, st, one_minus_lambda, lambda);
    } else if (z != nullptr) {
      v[e] = math::planner_update(v[e], o, st, scale * z[e]);
    } else {
      v[e] = math::posterior_mean(v[e], o, st);
    }
  }
}

}  // namespace

// Candidates first..first+count: tau^K from noise (or a warm start's tau^{k_w}), then the steps
// of dynamics and planner updates down to k = 1.
void CpuSampler::sample_chunk(int first, int count, Scratch& s) {
  const PlanRequest& q = *request_;
  const ModelConfig& c = model_.config;
  const int H = c.horizon, dx = c.state_dim, D = c.window_dim(), K = c.num_steps;
  const size_t HD = static_cast<size_t>(H) * D;
  const int rows = q.guided ? 2 * count : count;  // planner rows
  const int dynamics_rows = q.dynamics_guided ? 2 * count : count;
  float* tau = windows_.get() + static_cast<size_t>(first) * HD;  // [count, H, D]

  // The fixed state dimensions of every planned state equal x_0's (design section 3: after the
  // initial window and after every update).
  const std::vector<int>& fixed = c.fixed_state_dims;
  auto pin = [&](float* win) {
    for (int t = 0; t < H; ++t) {
      for (int j : fixed) win[t * D + j] = x0_[j];
    }
  };
  const float scale = q.noise_scale;
  for (int n = 0; n < count; ++n) {
    float* win = tau + n * HD;
    fill_normal(q.seed, static_cast<uint32_t>(first + n), static_cast<uint32_t>(K + 1), win, HD);
    if (q.warm == nullptr) {
      for (size_t e = 0; e < HD; ++e) win[e] = scale * win[e];
    } else {
      const math::StepFloats& sw = model_.steps[static_cast<size_t>(q.start_level - 1)];
      for (int t = 0; t < H; ++t) {
        const float* prev = q.warm + static_cast<size_t>(math::shifted_row(t, q.actions_per_plan, H)) * D;
        for (int j = 0; j < D; ++j) win[t * D + j] = math::renoised(prev[j], scale * win[t * D + j], sw);
      }
    }
    pin(win);
  }
  const bool dynamics_runs = q.lambda != 0.0f;
  model_.planner->prepare(DenoisePlan{x0_, q.cond, zeros_.get(), q.start_level, q.guided, q.fast_numerics},
                          s.prepared[0].get(), s.denoise.get());
  if (dynamics_runs) {
    model_.dynamics->prepare(
        DenoisePlan{x0_, q.cond, zeros_.get(), q.start_level, q.dynamics_guided, q.fast_numerics},
        s.prepared[1].get(), s.denoise.get());
  }
  auto denoise = [&](const Denoiser& net, const float* prepared, int net_rows, int k) {
    net.run(DenoiseCall{tau, count, net_rows, k, x0_, q.cond, zeros_.get(), s.eps.get(), ld_eps_, q.fast_numerics,
                        prepared},
            s.denoise.get());
  };

  for (int k = q.start_level; k >= 1; --k) {
    if (cancel_.load(std::memory_order_relaxed)) return;  // mpd_workspace_cancel
    const math::StepFloats& st = model_.steps[static_cast<size_t>(k - 1)];
    if (math::dynamics_at(k, q.lambda, q.dynamics_every, q.dynamics_last)) {
      denoise(*model_.dynamics, s.prepared[1].get(), dynamics_rows, k);
      for (int n = 0; n < count; ++n) {
        float* win = tau + static_cast<size_t>(n) * HD;
        const float* out = s.eps.get() + static_cast<size_t>(n) * ld_eps_;
        for (int t = 0; t < H; ++t) {
          update_row(Update::kDynamics, win + static_cast<size_t>(t) * D, out + static_cast<size_t>(t) * dx,
                     q.dynamics_guided ? out + static_cast<size_t>(count) * ld_eps_ + static_cast<size_t>(t) * dx
                                       : nullptr,
                     q.dynamics_guidance, nullptr, 0.0f, st, dx, q.one_minus_lambda, q.lambda);
        }
        pin(win);
      }
    }
    denoise(*model_.planner, s.prepared[0].get(), rows, k);
    for (int n = 0; n < count; ++n) {
      float* win = tau + static_cast<size_t>(n) * HD;
      const float* out = s.eps.get() + static_cast<size_t>(n) * ld_eps_;
      if (k > 1) {
        fill_normal(q.seed, static_cast<uint32_t>(first + n), static_cast<uint32_t>(k), s.noise.get(), HD);
      }
      update_row(Update::kPlanner, win, out, q.guided ? out + static_cast<size_t>(count) * ld_eps_ : nullptr,
                 q.guidance, k > 1 ? s.noise.get() : nullptr, scale, st, HD);
      pin(win);
    }
  }
}

// V_n and C_n of the chunk's finished windows (design section 3 step 3).
void CpuSampler::rank_chunk(int first, int count, Scratch& s) {
  const ModelConfig& c = model_.config;
  const int H = c.horizon, dx = c.state_dim, du = c.action_dim, D = c.window_dim();
  const size_t HD = static_cast<size_t>(H) * D;
  const float* tau = windows_.get() + static_cast<size_t>(first) * HD;
  // Rows [x_t, u_t], t = 0..H-1, with x_0 the current state and x_t = the window's x_t.
  for (int n = 0; n < count; ++n) {
    for (int t = 0; t < H; ++t) {
      float* row = s.input.get() + static_cast<size_t>(n * H + t) * D;
      const float* x = t == 0 ? x0_ : tau + n * HD + static_cast<size_t>(t - 1) * D;
      std::memcpy(row, x, sizeof(float) * static_cast<size_t>(dx));
      std::memcpy(row + dx, tau + n * HD + static_cast<size_t>(t) * D + dx, sizeof(float) * static_cast<size_t>(du));
    }
  }
  const int rows = count * H;
  const float* gamma = gammas_.get();
  const bool fast = request_->fast_numerics;
  mlp_forward(model_.reward, s.input.get(), static_cast<size_t>(D), rows, s.h0.get(), s.h1.get(),
              s.eps.get(), ld_eps_, fast);
  for (int n = 0; n < count; ++n) {
    float value = 0.0f;
    int fell = -1;
    for (int t = 0; t < H; ++t) {
      const float* out = s.eps.get() + static_cast<size_t>(n * H + t) * ld_eps_;
      value += out[0] * gamma[t];
      if (c.reward_outputs == 2 && fell < 0 && out[1] > 0.0f) fell = t;
    }
    if (fell >= 0) value -= kTerminationPenalty * gamma[fell];
    values_[static_cast<size_t>(first + n)] = value;
  }
  if (!c.has_cost) return;
  mlp_forward(model_.cost, s.input.get(), static_cast<size_t>(D), rows, s.h0.get(), s.h1.get(),
              s.eps.get(), ld_eps_, fast);
  for (int n = 0; n < count; ++n) {
    float cost = 0.0f;
    for (int t = 0; t < H; ++t) cost += s.eps[static_cast<size_t>(n * H + t) * ld_eps_] * gamma[t];
    costs_[static_cast<size_t>(first + n)] = cost;
  }
}

}  // namespace mpd::cpu
