// Cosine schedule coefficients against their definitions, recomputed here step by step.
#include <cmath>
#include <initializer_list>

#include "check.h"
#include "math/schedule.h"

namespace {

void test_against_definitions(int num_steps) {
  const double pi = 3.14159265358979323846;
  auto abar_cont = [&](double s) {
    const double c = std::cos((s / num_steps + 0.008) / 1.008 * pi / 2);
    return c * c;
  };
  double alpha_bar = 1.0;
  for (int k = 1; k <= num_steps; ++k) {
    const double beta = std::fmin(1.0 - abar_cont(k) / abar_cont(k - 1), 0.999);
    const double prev = alpha_bar;
    alpha_bar *= 1.0 - beta;
    const mpd::math::StepCoefficients s = mpd::math::cosine_step(k, num_steps);
    CHECK_NEAR(s.beta, beta, 1e-15);
    CHECK_NEAR(s.alpha_bar, alpha_bar, 1e-14);
    CHECK_NEAR(s.alpha_bar_prev, prev, 1e-14);
    CHECK_NEAR(s.posterior_c1, beta * std::sqrt(prev) / (1 - alpha_bar), 1e-12);
    CHECK_NEAR(s.posterior_c2, std::sqrt(1 - beta) * (1 - prev) / (1 - alpha_bar), 1e-12);
    CHECK_NEAR(s.posterior_sigma, std::sqrt(beta * (1 - prev) / (1 - alpha_bar)), 1e-12);
  }
}

// At k = 1 the posterior mean is the clean estimate itself and no noise is added.
void test_last_step_is_deterministic() {
  const mpd::math::StepCoefficients s = mpd::math::cosine_step(1, 20);
  CHECK_NEAR(s.posterior_c1, 1.0, 1e-12);
  CHECK_NEAR(s.posterior_c2, 0.0, 1e-12);
  CHECK_NEAR(s.posterior_sigma, 0.0, 1e-12);
}

// The cosine schedule ends near pure noise and beta is clipped at 0.999.
void test_end_points() {
  for (int num_steps : {5, 20, 100}) {
    const mpd::math::StepCoefficients last = mpd::math::cosine_step(num_steps, num_steps);
    CHECK(last.alpha_bar < 1e-3);
    CHECK(last.beta <= 0.999);
  }
}

}  // namespace

int main() {
  for (int num_steps : {1, 2, 5, 20, 100}) test_against_definitions(num_steps);
  test_last_step_is_deterministic();
  test_end_points();
  return check::exit_code();
}
