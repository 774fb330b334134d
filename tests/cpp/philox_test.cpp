// Philox4x32-10 against the Random123 known-answer vectors, and the normal draws' contract.
#include <cmath>
#include <initializer_list>
#include <cstdint>
#include <vector>

#include "check.h"
#include "math/philox.h"
#include "mpdiffuser/mpdiffuser.h"

namespace {

using mpd::math::Philox4;

// Random123 tests/kat_vectors, "philox4x32 10": counter[4], key[2] -> result[4].
struct KnownAnswer {
  uint32_t counter[4];
  uint32_t key[2];
  uint32_t expected[4];
};

const KnownAnswer kKnownAnswers[] = {
    {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

void test_known_answers() {
  for (const KnownAnswer& kat : kKnownAnswers) {
    const Philox4 out = mpd::math::philox4x32_10(
        Philox4{{kat.counter[0], kat.counter[1], kat.counter[2], kat.counter[3]}}, kat.key[0],
        kat.key[1]);
    for (int i = 0; i < 4; ++i) CHECK(out.v[i] == kat.expected[i]);
  }
}

// Element e of the C API's buffer equals lane e % 4 of block e / 4, whatever the length.
void test_fill_matches_per_element() {
  const uint64_t seed = 0x123456789abcdefULL;
  for (size_t count : {1u, 3u, 4u, 5u, 31u, 1000u}) {
    std::vector<float> buffer(count);
    CHECK(mpd_noise_normal(seed, 7, 21, buffer.data(), count) == MPD_OK);
    for (size_t e = 0; e < count; ++e) {
      CHECK(buffer[e] == mpd::math::normal_at(seed, 7, 21, e));
    }
  }
}

// Different keys give different streams; the seed's high word matters.
void test_keys_separate_streams() {
  const float a = mpd::math::normal_at(1, 0, 1, 0);
  CHECK(a != mpd::math::normal_at(2, 0, 1, 0));
  CHECK(a != mpd::math::normal_at(1, 1, 1, 0));
  CHECK(a != mpd::math::normal_at(1, 0, 2, 0));
  CHECK(a != mpd::math::normal_at(1 + (1ULL << 32), 0, 1, 0));
}

// 2^16 draws: mean 0 and variance 1 within 5 standard errors, no non-finite value.
void test_moments() {
  const size_t count = 1 << 16;
  std::vector<float> z(count);
  CHECK(mpd_noise_normal(42, 3, 5, z.data(), count) == MPD_OK);
  double sum = 0, sum_sq = 0;
  bool finite = true;
  for (float v : z) {
    finite = finite && std::isfinite(v);
    sum += v;
    sum_sq += double(v) * v;
  }
  const double mean = sum / count, var = sum_sq / count - mean * mean;
  CHECK(finite);
  CHECK_NEAR(mean, 0.0, 5.0 / std::sqrt(double(count)));
  CHECK_NEAR(var, 1.0, 5.0 * std::sqrt(2.0 / count));
}

void test_bad_arguments() {
  CHECK(mpd_noise_normal(0, 0, 0, nullptr, 4) == MPD_ERR_NULL_POINTER);
  CHECK(mpd_noise_normal(0, 0, 0, nullptr, 0) == MPD_OK);
}

}  // namespace

int main() {
  test_known_answers();
  test_fill_matches_per_element();
  test_keys_separate_streams();
  test_moments();
  test_bad_arguments();
  return check::exit_code();
}
