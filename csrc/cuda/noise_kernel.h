// Host entry points of the CUDA noise kernel. Included only where MPD_WITH_CUDA is defined.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "mpdiffuser/mpdiffuser.h"

namespace mpd::cuda {

// True when the CUDA runtime sees at least one device.
bool device_available();

// out: [count] device buffer <- z(seed, candidate, step). Asynchronous on stream; no sync.
mpd_status fill_normal_device(uint64_t seed, uint32_t candidate, uint32_t step, float* out,
                              size_t count, cudaStream_t stream);

// host_out: [count] host buffer. Allocates a device buffer, fills it, copies back, synchronizes.
// A convenience for tests and self-checks, not for the control loop.
mpd_status fill_normal_host_via_device(uint64_t seed, uint32_t candidate, uint32_t step,
                                       float* host_out, size_t count);

}  // namespace mpd::cuda
