// The cost of one barrier across the blocks that share a candidate (csrc/cuda/group_sync.h). It
// sets the floor of the unet family's plan with G blocks per candidate, one barrier per
// convolution: 31 per network call of the default size, 1240 per plan (K = 20, planner and
// dynamics model every step). Each of `groups` groups of G blocks (512 threads, as the plan
// kernel's) passes `iters` barriers with nothing between them, timed with CUDA events after a
// warm-up: the grid barrier (cooperative launch, an arrival counter in global memory) on every
// GPU, and the thread-block cluster's barrier on sm_90. JSON: nanoseconds per barrier.
//
//   mpd_bench_group_sync [--iters 20000] [--json F]
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cuda/group_sync.h"
#include "cuda/layout.h"

namespace {

struct Barriers {
  unsigned* arrivals;  // [groups]
  int members, iters, cluster;
};

__global__ void __launch_bounds__(mpd::cuda::kThreads) pass_barriers(Barriers b) {
  mpd::cuda::GroupSync g{b.arrivals + blockIdx.x / b.members, b.members, static_cast<int>(blockIdx.x % b.members), 0,
                         b.cluster};
  for (int i = 0; i < b.iters; ++i) g.sync();
}

// Milliseconds of one launch of groups x members blocks passing `iters` barriers, or a negative
// value when the launch is refused (a grid that does not fit at once).
float time_launch(unsigned* arrivals, int groups, int members, int iters, bool cluster, cudaStream_t stream) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  float ms = -1.0f;
  for (int pass = 0; pass < 2; ++pass) {  // a warm-up launch, then the timed one
    cudaMemsetAsync(arrivals, 0, sizeof(unsigned) * static_cast<size_t>(groups), stream);
    cudaEventRecord(start, stream);
    const Barriers args{arrivals, members, iters, cluster ? 1 : 0};
    if (mpd::cuda::launch_groups(pass_barriers, static_cast<unsigned>(groups * members), mpd::cuda::kThreads, 0,
                                 stream, members, cluster, args) != cudaSuccess) {
      cudaGetLastError();
      break;
    }
    cudaEventRecord(stop, stream);
    if (cudaEventSynchronize(stop) != cudaSuccess) {
      cudaGetLastError();
      break;
    }
    cudaEventElapsedTime(&ms, start, stop);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 20000;
  const char* json = nullptr;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--iters") == 0) iters = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--json") == 0) json = argv[i + 1];
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    std::fprintf(stderr, "no CUDA device\n");
    return 77;
  }
  unsigned* arrivals = nullptr;
  cudaMalloc(&arrivals, sizeof(unsigned) * 1024);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  std::string rows;
  for (const bool cluster : {false, true}) {
    if (cluster && prop.major < 9) continue;
    for (int members : {2, 4, 8}) {
      for (int groups : {1, 64}) {
        const float ms = time_launch(arrivals, groups, members, iters, cluster, stream);
        const double ns = ms > 0.0f ? 1e6 * ms / iters : -1.0;
        std::printf("%-7s barrier, %d blocks x %2d groups: %s%.0f ns per barrier\n", cluster ? "cluster" : "grid",
                    members, groups, ns < 0 ? "(refused) " : "", ns);
        char row[160];
        std::snprintf(row, sizeof row, "%s{\"barrier\": \"%s\", \"blocks\": %d, \"groups\": %d, \"ns\": %.1f}",
                      rows.empty() ? "" : ", ", cluster ? "cluster" : "grid", members, groups, ns);
        rows += row;
      }
    }
  }
  if (json != nullptr) {
    std::FILE* f = std::fopen(json, "w");
    if (f == nullptr) return 1;
    std::fprintf(f, "{\"benchmark\": \"group_sync_latency\", \"device\": \"%s\", \"sms\": %d, \"iters\": %d, "
                    "\"threads\": %d, \"rows\": [%s]}\n",
                 prop.name, prop.multiProcessorCount, iters, mpd::cuda::kThreads, rows.c_str());
    std::fclose(f);
  }
  cudaFree(arrivals);
  return 0;
}
