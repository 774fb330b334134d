// The normalizers of design section 3, one dimension at a time, shared by the CPU backend and the
// CUDA kernels; computed in double from the file's float32 tables, in the order of the Python
// normalizers (python/mpdiffuser/data/normalizer.py), so every backend maps a state alike.
#pragma once

#include <cmath>

#include "host_device.h"

namespace mpd::math {

// A raw state is refused (MPD_ERR_STATE_OUT_OF_RANGE) when some dimension lies more than
// kStateRangeLimit half-ranges of the training data from the data's middle, the half-range taken
// as at least kMinHalfRange env units so that a dimension nearly constant in the data still admits
// small deviations. Such a state is a sensor fault or a unit error: the models never saw anything
// near it, and the min-max map would feed the networks values in the hundreds (a CDF normalizer
// would clamp it to the edge without a word). python/mpdiffuser/config.py holds the same numbers.
constexpr double kStateRangeLimit = 100.0;
constexpr double kMinHalfRange = 1e-3;
MPD_HOST_DEVICE bool state_in_range(double x, double mid, double half) {
  return fabs(x - mid) <= kStateRangeLimit * fmax(half, kMinHalfRange);
}

// Min-max: y = (x - mid) / half (half = 1 where the range is empty).
MPD_HOST_DEVICE double minmax_forward(double x, double mid, double half) { return (x - mid) / half; }
MPD_HOST_DEVICE double minmax_inverse(double y, double mid, double half) { return y * half + mid; }

// CDF: y = 2 F(x) - 1 with F piecewise linear between the Q non-decreasing quantiles q[0..Q),
// F(q_j) = j / (Q - 1), 0 below q_0 and 1 above q_{Q-1}; at a value that several quantiles share,
// F is the middle of their run (a constant dimension maps to 0).
MPD_HOST_DEVICE double cdf_forward(const float* q, int Q, double x) {
  int lo = 0, hi = Q;  // a: the first index with q[a] >= x
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (q[mid] < x) lo = mid + 1; else hi = mid;
  }
  const int a = lo;
  lo = 0;
  hi = Q;  // b: the last index with q[b] <= x
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (q[mid] <= x) lo = mid + 1; else hi = mid;
  }
  const int b = lo - 1, last = Q - 1;
  if (b < 0) return -1.0;
  if (a > last) return 1.0;
  const double f = a > b ? (b + (x - q[b]) / (static_cast<double>(q[a]) - q[b])) / last : (a + b) / 2.0 / last;
  return 2.0 * f - 1.0;
}

// The exact piecewise-linear inverse of cdf_forward (y clamped to [-1, 1]).
MPD_HOST_DEVICE double cdf_inverse(const float* q, int Q, double y) {
  const int last = Q - 1;
  double p = (y + 1.0) / 2.0;
  p = p < 0.0 ? 0.0 : (p > 1.0 ? 1.0 : p);
  const double t = p * last;
  int j = static_cast<int>(floor(t));
  if (j > last - 1) j = last - 1;
  return q[j] + (t - j) * (static_cast<double>(q[j + 1]) - q[j]);
}

// One dimension through the model's normalizer, the one every backend calls: the CDF normalizer
// when the model has Q > 0 quantiles per dimension (q: this dimension's), else min-max.
MPD_HOST_DEVICE double normalize(double x, const float* q, int Q, double mid, double half) {
  return Q ? cdf_forward(q, Q, x) : minmax_forward(x, mid, half);
}
MPD_HOST_DEVICE double denormalize(double y, const float* q, int Q, double mid, double half) {
  return Q ? cdf_inverse(q, Q, y) : minmax_inverse(y, mid, half);
}

}  // namespace mpd::math
