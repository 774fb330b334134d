// The cosine diffusion schedule and its posterior coefficients (design section 3).
//
//   abar(s) = cos^2(((s / K) + 0.008) / 1.008 * pi / 2)
//   beta_k  = min(1 - abar(k) / abar(k - 1), 0.999),  alpha_k = 1 - beta_k,  abar_k = prod alpha
//   c1_k = beta_k sqrt(abar_{k-1}) / (1 - abar_k),  c2_k = sqrt(alpha_k) (1 - abar_{k-1}) / (1 - abar_k)
//   sigma_k = sqrt(beta_k (1 - abar_{k-1}) / (1 - abar_k))
// Computed in double, stored in float by the callers. k runs 1..K; abar_0 = 1.
#pragma once

#include <cmath>

#include "host_device.h"

namespace mpd::math {

// Coefficients of one denoising step k (1..K), everything the update rule needs.
struct StepCoefficients {
  double beta;
  double alpha;
  double alpha_bar;       // abar_k
  double alpha_bar_prev;  // abar_{k-1}
  double sqrt_alpha_bar;            // sqrt(abar_k): divides out of the clean estimate
  double sqrt_one_minus_alpha_bar;  // sqrt(1 - abar_k): scales the predicted noise
  double posterior_c1;
  double posterior_c2;
  double posterior_sigma;
};

MPD_HOST_DEVICE double cosine_alpha_bar_continuous(double s, int num_steps) {
  const double half_pi = 1.5707963267948966;
  const double c = cos(((s / num_steps) + 0.008) / 1.008 * half_pi);
  return c * c;
}

MPD_HOST_DEVICE double cosine_beta(int k, int num_steps) {
  const double b = 1.0 - cosine_alpha_bar_continuous(k, num_steps) /
                             cosine_alpha_bar_continuous(k - 1, num_steps);
  return b < 0.999 ? b : 0.999;
}

// Precondition: 1 <= k <= num_steps. O(k): schedules are precomputed once per model.
MPD_HOST_DEVICE StepCoefficients cosine_step(int k, int num_steps) {
  double alpha_bar_prev = 1.0;
  for (int i = 1; i < k; ++i) alpha_bar_prev *= 1.0 - cosine_beta(i, num_steps);
  StepCoefficients s;
  s.beta = cosine_beta(k, num_steps);
  s.alpha = 1.0 - s.beta;
  s.alpha_bar_prev = alpha_bar_prev;
  s.alpha_bar = alpha_bar_prev * s.alpha;
  s.sqrt_alpha_bar = sqrt(s.alpha_bar);
  s.sqrt_one_minus_alpha_bar = sqrt(1.0 - s.alpha_bar);
  s.posterior_c1 = s.beta * sqrt(alpha_bar_prev) / (1.0 - s.alpha_bar);
  s.posterior_c2 = sqrt(s.alpha) * (1.0 - alpha_bar_prev) / (1.0 - s.alpha_bar);
  s.posterior_sigma = sqrt(s.beta * (1.0 - alpha_bar_prev) / (1.0 - s.alpha_bar));
  return s;
}

}  // namespace mpd::math
