// The CUDA noise kernel gives the host's draws bit for bit. Skips (exit 77) without a GPU.
#include <cstdio>
#include <initializer_list>
#include <vector>

#include "check.h"
#include "cuda/noise_kernel.h"
#include "mpdiffuser/mpdiffuser.h"

int main() {
  if (!mpd::cuda::device_available()) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  for (size_t count : {1u, 7u, 4096u, 100003u}) {
    std::vector<float> host(count), device(count);
    CHECK(mpd_noise_normal(99, 5, 11, host.data(), count) == MPD_OK);
    CHECK(mpd::cuda::fill_normal_host_via_device(99, 5, 11, device.data(), count) == MPD_OK);
    size_t mismatches = 0;
    for (size_t e = 0; e < count; ++e) mismatches += host[e] != device[e];
    CHECK(mismatches == 0);
  }
  return check::exit_code();
}
