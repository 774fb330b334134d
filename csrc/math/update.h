// The per-element update rules of the alternating sampler (design section 3), written once and
// used by the CPU backend and the CUDA kernels. Float32 throughout, in the reference's order of
// operations, so backends differ from the PyTorch reference by float rounding only.
#pragma once

#include <cmath>

#include "host_device.h"
#include "schedule.h"

namespace mpd::math {

// The float32 coefficients of one denoising step k, as the reference holds them, and how the
// networks' output maps to the clean window (the model's prediction target).
struct StepFloats {
  float sqrt_alpha_bar;            // sqrt(abar_k)
  float sqrt_one_minus_alpha_bar;  // sqrt(1 - abar_k)
  float c1, c2;                    // posterior mean coefficients
  float sigma;                     // posterior standard deviation
  int sample_prediction;           // 1: the output is the clean window; 0: it is the noise
};

// Step k (1..K) of the cosine schedule as every backend holds it: the float64 coefficients cast
// to float32 (the reference's casts), and the model's prediction target.
MPD_HOST_DEVICE StepFloats step_floats(int k, int num_steps, bool sample_prediction) {
  const StepCoefficients c = cosine_step(k, num_steps);
  return StepFloats{static_cast<float>(c.sqrt_alpha_bar), static_cast<float>(c.sqrt_one_minus_alpha_bar),
                    static_cast<float>(c.posterior_c1), static_cast<float>(c.posterior_c2),
                    static_cast<float>(c.posterior_sigma), sample_prediction ? 1 : 0};
}

// The clean window element implied by network output o at this step, clipped to [-1, 1]:
// (v - sqrt(1 - abar) o) / sqrt(abar) for epsilon-prediction, o for sample-prediction.
MPD_HOST_DEVICE float clean_estimate(float v, float o, const StepFloats& s) {
  float clean = s.sample_prediction ? o : (v - s.sqrt_one_minus_alpha_bar * o) / s.sqrt_alpha_bar;
  return clean < -1.0f ? -1.0f : (clean > 1.0f ? 1.0f : clean);
}

// mu_k(v, o) = c1 clean_estimate(v, o) + c2 v.
MPD_HOST_DEVICE float posterior_mean(float v, float eps, const StepFloats& s) {
  return s.c1 * clean_estimate(v, eps, s) + s.c2 * v;
}

// A warm start's window element at level k_w (s = that step's floats): sqrt(abar) S + sqrt(1 -
// abar) z, with S the shifted previous window and z the temperature-scaled draw.
MPD_HOST_DEVICE float renoised(float shifted, float scaled_z, const StepFloats& s) {
  return s.sqrt_alpha_bar * shifted + s.sqrt_one_minus_alpha_bar * scaled_z;
}

// Row i of the warm start's shifted window: previous row i + shift, the last row past the end.
MPD_HOST_DEVICE int shifted_row(int i, int shift, int horizon) {
  return i + shift < horizon ? i + shift : horizon - 1;
}

// Classifier-free guidance: eps(., 0) + w (eps(., c) - eps(., 0)).
MPD_HOST_DEVICE float guided(float eps_cond, float eps_uncond, float w) {
  return eps_uncond + w * (eps_cond - eps_uncond);
}

// Dynamics update of one state element: X' = (1 - lambda) X + lambda mu_k(X, eps_d).
MPD_HOST_DEVICE float dynamics_update(float x, float eps, const StepFloats& s, float one_minus_lambda,
                                      float lambda) {
  return one_minus_lambda * x + lambda * posterior_mean(x, eps, s);
}

// Planner update of one window element: tau^{k-1} = mu_k(tau', eps_p) + sigma_k z (z = 0 at k = 1;
// z is the temperature-scaled draw).
MPD_HOST_DEVICE float planner_update(float v, float eps, const StepFloats& s, float z) {
  return posterior_mean(v, eps, s) + s.sigma * z;
}

// Whether the dynamics update runs at step k (1..K): (k - 1) % every == 0, and k <= last when
// last > 0; never when lambda = 0 (the planner-only baseline).
MPD_HOST_DEVICE bool dynamics_at(int k, float lambda, unsigned every, unsigned last) {
  if (lambda == 0.0f) return false;
  if (last > 0 && static_cast<unsigned>(k) > last) return false;
  return static_cast<unsigned>(k - 1) % every == 0;
}

// emb(k)[j] = sin(k f_j), emb(k)[16 + j] = cos(k f_j), f_j = exp(-ln(10000) j / 16), j = 0..15.
// out: [32].
MPD_HOST_DEVICE void step_embedding(int k, float* out) {
  for (int j = 0; j < 16; ++j) {
    const double f = exp(-9.210340371976184 * j / 16.0);
    const float angle = static_cast<float>(k) * static_cast<float>(f);
    out[j] = sinf(angle);
    out[16 + j] = cosf(angle);
  }
}

// SiLU(x) = x sigmoid(x), the networks' activation (scalar form; the CPU backend vectorizes it).
MPD_HOST_DEVICE float silu(float x) { return x / (1.0f + expf(-x)); }

// Ranking (design section 3 step 3): true when candidate (value a, cost ca) beats the current best
// (value b, cost cb) under the selection rule; candidates are visited in index order, so ties
// keep the lower index. feasible_*: C <= budget (always true without a budget).
MPD_HOST_DEVICE bool better_candidate(float value_a, float cost_a, bool feasible_a, float value_b,
                                      float cost_b, bool feasible_b) {
  if (feasible_a != feasible_b) return feasible_a;
  if (feasible_a) return value_a > value_b;
  return cost_a < cost_b;
}

// The selection both backends run: the best of candidates n = begin, begin + step, ... < end
// (the first among equals), feasible when its cost is at most b under a budget; -1 when the range
// is empty. The CPU backend scans all of them; each lane of the CUDA selection scans every 32nd.
MPD_HOST_DEVICE int best_candidate(const float* values, const float* costs, bool budget, float b, int begin,
                                   int end, int step) {
  int best = -1;
  for (int n = begin; n < end; n += step) {
    const float cost_n = budget ? costs[n] : 0.0f, cost_best = budget && best >= 0 ? costs[best] : 0.0f;
    if (best < 0 || better_candidate(values[n], cost_n, !budget || cost_n <= b, values[best], cost_best,
                                     !budget || cost_best <= b)) {
      best = n;
    }
  }
  return best;
}

}  // namespace mpd::math
