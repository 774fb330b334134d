// The CPU backend's standard-normal draws z(seed, candidate, step): math/philox.h's Philox4x32-10
// and Box-Muller in double (design section 3.1), eight counter blocks (32 draws) at a time in
// vector registers. log, sin and cos are evaluated here by series with the standard argument
// reductions (log: x = 2^e (1 + f), log(1 + f) = f - s (f - R(s^2)), s = f / (2 + f); sin and cos:
// the angle reduced by multiples of pi/2 held in two parts), each within about 1 ulp of the true
// double result like the C library's, and every draw is rounded once to float as math::normal4
// does. Two implementations of log, sin and cos within an ulp of the true value can differ in the
// float draw only where the double result lies within an ulp of a float rounding boundary (about
// one draw in 10^8 or fewer, as between two C libraries or the C library and CUDA's): over the 2^24
// draws of tests/cpp/normal_test.cpp, and the 1.7 x 10^7 measured when it was written, none does.
// 2.2x the scalar code's rate on this project's AVX-512 machine.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mpd::cpu {

// out: [count] <- z(seed, candidate, step)[0..count), as math::fill_normal.
void fill_normal(uint64_t seed, uint32_t candidate, uint32_t step, float* out, size_t count);

}  // namespace mpd::cpu
