// Philox4x32-10 counter-based generator and the standard-normal draws of design section 3.1.
//
// z(seed, n, step)[e] uses key (seed & 0xffffffff, seed >> 32) and counter (e / 4, n, step, 0).
// The four 32-bit outputs become uniforms u_i = (v_i + 0.5) * 2^-32 (exact in double) and two
// Box-Muller pairs give four normals:
//   r0 = sqrt(-2 ln u0), z0 = r0 cos(2 pi u1), z1 = r0 sin(2 pi u1)
//   r1 = sqrt(-2 ln u2), z2 = r1 cos(2 pi u3), z3 = r1 sin(2 pi u3)
// Lane e % 4 is element e. The transform runs in double and is rounded once to float, so every
// backend (NumPy, C++, CUDA) gives the same float32 draws, bit for bit.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "host_device.h"

namespace mpd::math {

struct Philox4 {
  uint32_t v[4];
};

MPD_HOST_DEVICE void mul_hi_lo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

// One Philox4x32 round (Salmon et al. 2011): two 32x32->64 multiplies, xor with the key.
MPD_HOST_DEVICE Philox4 philox_round(Philox4 c, uint32_t k0, uint32_t k1) {
  uint32_t hi0, lo0, hi1, lo1;
  mul_hi_lo(0xD2511F53u, c.v[0], &hi0, &lo0);
  mul_hi_lo(0xCD9E8D57u, c.v[2], &hi1, &lo1);
  return Philox4{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
}

// Philox4x32 with 10 rounds; the key is bumped by the Weyl constants between rounds.
MPD_HOST_DEVICE Philox4 philox4x32_10(Philox4 counter, uint32_t key0, uint32_t key1) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      key0 += 0x9E3779B9u;
      key1 += 0xBB67AE85u;
    }
    counter = philox_round(counter, key0, key1);
  }
  return counter;
}

// (v + 0.5) * 2^-32: strictly inside (0, 1), exact in double.
MPD_HOST_DEVICE double uint_to_open_unit(uint32_t v) {
  return (static_cast<double>(v) + 0.5) * 2.3283064365386963e-10;
}

// The four normals of counter block (block, candidate, step) under seed.
MPD_HOST_DEVICE void normal4(uint64_t seed, uint32_t candidate, uint32_t step, uint32_t block,
                             float out[4]) {
  const Philox4 bits = philox4x32_10(Philox4{{block, candidate, step, 0u}},
                                     static_cast<uint32_t>(seed & 0xffffffffu),
                                     static_cast<uint32_t>(seed >> 32));
  const double two_pi = 6.283185307179586;
  for (int pair = 0; pair < 2; ++pair) {
    const double radius = sqrt(-2.0 * log(uint_to_open_unit(bits.v[2 * pair])));
    const double angle = two_pi * uint_to_open_unit(bits.v[2 * pair + 1]);
    out[2 * pair] = static_cast<float>(radius * cos(angle));
    out[2 * pair + 1] = static_cast<float>(radius * sin(angle));
  }
}

// Element e of z(seed, candidate, step).
MPD_HOST_DEVICE float normal_at(uint64_t seed, uint32_t candidate, uint32_t step, uint64_t e) {
  float lanes[4];
  normal4(seed, candidate, step, static_cast<uint32_t>(e / 4), lanes);
  return lanes[e % 4];
}

// out: [count] <- z(seed, candidate, step)[0..count). Host or one device thread.
MPD_HOST_DEVICE void fill_normal(uint64_t seed, uint32_t candidate, uint32_t step, float* out,
                                 size_t count) {
  float lanes[4];
  for (size_t base = 0; base < count; base += 4) {
    normal4(seed, candidate, step, static_cast<uint32_t>(base / 4), lanes);
    for (size_t lane = 0; lane < 4 && base + lane < count; ++lane) out[base + lane] = lanes[lane];
  }
}

}  // namespace mpd::math
