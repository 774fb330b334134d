// The CPU backend's vectorized normal draws (cpu/normal.h) against the scalar specification
// (math::fill_normal, which the CUDA kernels and the plain C++ of math/ use): the same float32 bits
// for 2^24 draws over 16 keys, candidates and steps, for every count's tail (counts that are not a
// multiple of the 32 draws an iteration makes), and the prefix property (a draw does not depend
// on the count asked for).
#include <cstdio>
#include <cstring>
#include <vector>

#include "check.h"
#include "cpu/normal.h"
#include "math/philox.h"

int main() {
  const size_t n = 1 << 20;
  std::vector<float> want(n), got(n);
  size_t differ = 0;
  for (uint32_t r = 0; r < 16; ++r) {
    const uint64_t seed = 0x9E3779B97F4A7C15ull * (r + 1) ^ (static_cast<uint64_t>(r) << 40);
    mpd::math::fill_normal(seed, r * 7, 3 + r, want.data(), n);
    mpd::cpu::fill_normal(seed, r * 7, 3 + r, got.data(), n);
    for (size_t i = 0; i < n; ++i) differ += std::memcmp(&want[i], &got[i], sizeof(float)) != 0;
  }
  std::printf("vectorized normal draws: %zu of %zu differ from the scalar code\n", differ, 16 * n);
  CHECK(differ == 0);
  for (size_t count : {1, 3, 4, 5, 31, 32, 33, 63, 100, 5840}) {
    std::vector<float> part(count);
    mpd::cpu::fill_normal(42, 5, 9, part.data(), count);
    mpd::math::fill_normal(42, 5, 9, want.data(), count);
    CHECK(std::memcmp(part.data(), want.data(), count * sizeof(float)) == 0);
    mpd::cpu::fill_normal(42, 5, 9, got.data(), 6000);
    CHECK(std::memcmp(part.data(), got.data(), count * sizeof(float)) == 0);
  }
  return check::exit_code();
}
