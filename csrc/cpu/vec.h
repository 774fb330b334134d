// The CPU backend's SIMD vector: GCC/Clang vector extensions, 16 floats where AVX-512 is enabled,
// else 8 (AVX2, or two NEON registers on ARM). Portable C++ otherwise; no intrinsics.
#pragma once

#include <cstdint>
#include <cstring>

namespace mpd::cpu {

#if defined(__AVX512F__)
#define MPD_VEC_FLOATS 16
#else
#define MPD_VEC_FLOATS 8
#endif

constexpr int kVec = MPD_VEC_FLOATS;
typedef float vfloat __attribute__((vector_size(MPD_VEC_FLOATS * 4)));
typedef int32_t vint __attribute__((vector_size(MPD_VEC_FLOATS * 4)));

inline vfloat load(const float* p) {
  vfloat v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline vint load_int(const float* p) {  // the bits of kVec floats
  vint v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vfloat v) { std::memcpy(p, &v, sizeof v); }
inline vfloat splat(float x) { return vfloat{} + x; }

// exp(x) for float32 lanes: Cody-Waite range reduction and the Cephes degree-6 polynomial,
// within 2 ulp of expf over [-87, 88]; inputs are clamped to that range.
inline vfloat vexp(vfloat x) {
  const vfloat hi = splat(88.3762626647949f), lo = splat(-87.3365447504019f);
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  const vfloat t = x * 1.44269504088896341f;
  const vint n = __builtin_convertvector(t + (t >= 0.0f ? splat(0.5f) : splat(-0.5f)), vint);
  const vfloat fn = __builtin_convertvector(n, vfloat);
  vfloat r = x - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  vfloat p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const vint bits = (n + 127) << 23;
  vfloat scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// SiLU(x) = x / (1 + exp(-x)) per lane.
inline vfloat vsilu(vfloat x) { return x / (1.0f + vexp(-x)); }

}  // namespace mpd::cpu
