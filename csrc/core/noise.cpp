// The C API's noise entry point: the host's Philox draws (math/philox.h), computed as the CPU
// backend computes them (cpu/normal.h).
#include "cpu/normal.h"
#include "mpdiffuser/mpdiffuser.h"

extern "C" mpd_status mpd_noise_normal(uint64_t seed, uint32_t candidate, uint32_t step,
                                       float* out, size_t count) {
  if (count == 0) return MPD_OK;
  if (out == nullptr) return MPD_ERR_NULL_POINTER;
  // The counter's first word is the block index e / 4; past 2^32 blocks it would wrap.
  if (count > (static_cast<size_t>(UINT32_MAX) + 1) * 4) return MPD_ERR_INVALID_ARGUMENT;
  mpd::cpu::fill_normal(seed, candidate, step, out, count);
  return MPD_OK;
}
