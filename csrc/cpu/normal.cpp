// Vectorized standard-normal draws; see normal.h.
#include "cpu/normal.h"

#include <cstring>

#include "math/philox.h"

namespace mpd::cpu {

namespace {

constexpr int kLanes = 8;  // counter blocks per iteration
typedef uint32_t vu32 __attribute__((vector_size(kLanes * 4)));
typedef uint64_t vu64 __attribute__((vector_size(kLanes * 8)));
typedef int64_t vi64 __attribute__((vector_size(kLanes * 8)));
typedef double vf64 __attribute__((vector_size(kLanes * 8)));
typedef float vf32 __attribute__((vector_size(kLanes * 4)));

inline vf64 splat(double x) { return vf64{} + x; }
inline vu64 bits_of(vf64 x) {
  vu64 b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}
inline vf64 double_of(vu64 b) {
  vf64 x;
  std::memcpy(&x, &b, sizeof x);
  return x;
}

// math::philox_round and philox4x32_10 on eight counters.
inline void philox(vu32 v[4], uint32_t key0, uint32_t key1) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      key0 += 0x9E3779B9u;
      key1 += 0xBB67AE85u;
    }
    const vu64 p0 = __builtin_convertvector(v[0], vu64) * 0xD2511F53ull;
    const vu64 p1 = __builtin_convertvector(v[2], vu64) * 0xCD9E8D57ull;
    const vu32 hi0 = __builtin_convertvector(p0 >> 32, vu32), lo0 = __builtin_convertvector(p0, vu32);
    const vu32 hi1 = __builtin_convertvector(p1 >> 32, vu32), lo1 = __builtin_convertvector(p1, vu32);
    const vu32 n0 = hi1 ^ v[1] ^ key0, n2 = hi0 ^ v[3] ^ key1;
    v[0] = n0;
    v[1] = lo1;
    v[2] = n2;
    v[3] = lo0;
  }
}

// math::uint_to_open_unit: (v + 0.5) 2^-32, exact.
inline vf64 open_unit(vu32 v) { return (__builtin_convertvector(v, vf64) + 0.5) * 2.3283064365386963e-10; }

// log(x) for normal positive x: x = 2^e m, m in [sqrt(1/2), sqrt(2)), f = m - 1 (exact),
// s = f / (2 + f), log(m) = 2 atanh(s) = f - s (f - R), R = sum_k 2 s^(2k) / (2k + 1) (k >= 1, the
// series of 2 atanh(s) / s - 2 times s / s, truncated past 2^-60 of the result for |s| <= 0.1716),
// and log(x) = e ln2_hi + (log(m) + e ln2_lo) with ln2_hi exact in 32 bits.
inline vf64 vlog(vf64 x) {
  const vu64 b = bits_of(x);
  vi64 e = (vi64)((b >> 52) & 0x7ffu) - 1023;
  vf64 m = double_of((b & 0x000fffffffffffffull) | 0x3ff0000000000000ull);  // [1, 2)
  const auto big = m > 1.4142135623730951;
  m = big ? m * 0.5 : m;
  e = big ? e + 1 : e;
  const vf64 f = m - 1.0;
  const vf64 s = f / (2.0 + f);
  const vf64 z = s * s;
  vf64 r = splat(2.0 / 25.0);
  for (int k = 11; k >= 1; --k) r = r * z + 2.0 / (2 * k + 1);
  r = r * z;  // R = 2 z / 3 + 2 z^2 / 5 + ... + 2 z^12 / 25
  const vf64 ed = __builtin_convertvector(e, vf64);
  const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  return ed * ln2_hi + ((f - s * (f - r)) + ed * ln2_lo);
}

// sin and cos of a in [0, 2 pi]: k = nearest integer to a / (pi / 2), r = a - k pi / 2 (pi / 2 in
// two parts, the first exact times k), |r| <= pi / 4; Taylor series (sin to r^21, cos to r^20:
// the next terms are below 2^-60), cos's leading 1 - r^2 / 2 summed with its rounding error
// carried; then the quadrant k mod 4.
inline void vsincos(vf64 a, vf64* sin_out, vf64* cos_out) {
  const double pio2_hi = 1.57079632673412561417e+00, pio2_lo = 6.07710050650619224932e-11;
  const vi64 k = __builtin_convertvector(a * 0.63661977236758134308 + 0.5, vi64);  // a >= 0: floor
  const vf64 kd = __builtin_convertvector(k, vf64);
  const vf64 r = (a - kd * pio2_hi) - kd * pio2_lo;
  const vf64 z = r * r;
  static constexpr double kSin[10] = {-1.0 / 6.0, 1.0 / 120.0, -1.0 / 5040.0, 1.0 / 362880.0, -1.0 / 39916800.0,
                                      1.0 / 6227020800.0, -1.0 / 1307674368000.0, 1.0 / 355687428096000.0,
                                      -1.0 / 121645100408832000.0, 1.0 / 51090942171709440000.0};
  static constexpr double kCos[9] = {1.0 / 24.0, -1.0 / 720.0, 1.0 / 40320.0, -1.0 / 3628800.0, 1.0 / 479001600.0,
                                     -1.0 / 87178291200.0, 1.0 / 20922789888000.0, -1.0 / 6402373705728000.0,
                                     1.0 / 2432902008176640000.0};
  vf64 ps = splat(kSin[9]);
  for (int i = 8; i >= 0; --i) ps = ps * z + kSin[i];
  vf64 pc = splat(kCos[8]);
  for (int i = 7; i >= 0; --i) pc = pc * z + kCos[i];
  const vf64 sr = r + r * z * ps;
  const vf64 hz = 0.5 * z;
  const vf64 w = 1.0 - hz;
  const vf64 cr = w + (((1.0 - w) - hz) + z * z * pc);
  const vi64 q = k & 3;
  const vf64 neg_s = -sr, neg_c = -cr;
  *sin_out = q == 0 ? sr : (q == 1 ? cr : (q == 2 ? neg_s : neg_c));
  *cos_out = q == 0 ? cr : (q == 1 ? neg_s : (q == 2 ? neg_c : sr));
}

}  // namespace

void fill_normal(uint64_t seed, uint32_t candidate, uint32_t step, float* out, size_t count) {
  const uint32_t key0 = static_cast<uint32_t>(seed & 0xffffffffu), key1 = static_cast<uint32_t>(seed >> 32);
  const double two_pi = 6.283185307179586;
  const size_t blocks = (count + 3) / 4, full = count / (4 * kLanes);  // iterations of kLanes whole blocks
  for (size_t i = 0; i < full; ++i) {
    const uint32_t first = static_cast<uint32_t>(i * kLanes);
    vu32 v[4];
    for (int j = 0; j < kLanes; ++j) v[0][j] = first + static_cast<uint32_t>(j);
    v[1] = vu32{} + candidate;
    v[2] = vu32{} + step;
    v[3] = vu32{};
    philox(v, key0, key1);
    float lanes[4][kLanes];
    for (int pair = 0; pair < 2; ++pair) {
      const vf64 t = -2.0 * vlog(open_unit(v[2 * pair]));
      vf64 radius;
      for (int j = 0; j < kLanes; ++j) radius[j] = __builtin_sqrt(t[j]);
      vf64 sn, cs;
      vsincos(two_pi * open_unit(v[2 * pair + 1]), &sn, &cs);
      const vf32 c32 = __builtin_convertvector(radius * cs, vf32), s32 = __builtin_convertvector(radius * sn, vf32);
      std::memcpy(lanes[2 * pair], &c32, sizeof c32);
      std::memcpy(lanes[2 * pair + 1], &s32, sizeof s32);
    }
    float* o = out + static_cast<size_t>(first) * 4;
    for (int j = 0; j < kLanes; ++j) {
      for (int e = 0; e < 4; ++e) o[4 * j + e] = lanes[e][j];
    }
  }
  for (size_t b = full * kLanes; b < blocks; ++b) {  // the last blocks one at a time
    float lanes[4];
    math::normal4(seed, candidate, step, static_cast<uint32_t>(b), lanes);
    for (size_t e = 0; e < 4 && 4 * b + e < count; ++e) out[4 * b + e] = lanes[e];
  }
}

}  // namespace mpd::cpu
