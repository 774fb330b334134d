// The fast numeric mode's one rounding (option fast_numerics; design section 3, "Numeric modes"):
// a float32 to the nearest bfloat16 (ties to even), returned widened to float32. PyTorch's
// float32 -> bfloat16 conversion, which the reference sampler applies to every weight layer's
// input, rounds the same way; NaN stays NaN.
#pragma once

#include <cstdint>
#include <cstring>

#include "math/host_device.h"

namespace mpd::math {

// Branch-free, so that loops over it vectorize.
MPD_HOST_DEVICE uint32_t bf16_round_bits(uint32_t bits) {
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
  const uint32_t quiet = (bits | 0x00400000u) & 0xffff0000u;  // NaN: quiet, kept
  return (bits & 0x7fffffffu) > 0x7f800000u ? quiet : rounded;
}

MPD_HOST_DEVICE float bf16_round(float x) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bf16_round_bits(__float_as_uint(x)));
#else
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits = bf16_round_bits(bits);
  float y;
  std::memcpy(&y, &bits, sizeof y);
  return y;
#endif
}

// The bfloat16 nearest to x, as its 16 bits (what tensor cores read): bf16_round(x)'s upper half.
MPD_HOST_DEVICE uint16_t bf16_bits(float x) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint16_t>(bf16_round_bits(__float_as_uint(x)) >> 16);
#else
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return static_cast<uint16_t>(bf16_round_bits(bits) >> 16);
#endif
}

// A network layer's input in the numeric mode: rounded to bfloat16 in the fast mode, as is in the
// exact one (every backend's layers read their inputs through it).
MPD_HOST_DEVICE float layer_input(float x, bool fast) { return fast ? bf16_round(x) : x; }

}  // namespace mpd::math
