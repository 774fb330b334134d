// A minimal test harness for the C++ tests: CHECK records a failure and goes on, the test's
// main returns check::exit_code() so ctest sees the result. No third-party test framework is
// needed to build the core's tests on a robot's toolchain.
#pragma once

#include <cmath>
#include <cstdio>

namespace check {

inline int& failures() {
  static int count = 0;
  return count;
}

inline int exit_code() {
  if (failures() == 0) {
    std::printf("all checks passed\n");
    return 0;
  }
  std::printf("%d check(s) failed\n", failures());
  return 1;
}

}  // namespace check

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::printf("%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
      ++check::failures();                                                     \
    }                                                                          \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                  \
  do {                                                                         \
    const double check_a_ = (a), check_b_ = (b);                               \
    if (!(std::fabs(check_a_ - check_b_) <= (tol))) {                          \
      std::printf("%s:%d: CHECK_NEAR failed: %s = %.17g, %s = %.17g, tol %g\n", \
                  __FILE__, __LINE__, #a, check_a_, #b, check_b_, (double)(tol)); \
      ++check::failures();                                                     \
    }                                                                          \
  } while (0)
