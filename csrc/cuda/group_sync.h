// A barrier over the thread blocks that share one candidate's network calls (cuda/unet.cuh, the
// mlp family's dense layers in cuda/plan_kernel.cuh): an arrival counter per group in global
// memory, zeroed on the stream before each launch that shares candidates (sampler.cu). A block arrives after its own
// writes are fenced and waits until every member has arrived as often as it has, so the counter
// never needs a reset inside a plan and a member that runs ahead cannot pass twice.
//
// Every member must be resident at once: the plan kernel is launched cooperatively whenever a
// group has more than one block (sampler.cu), which the runtime refuses rather than deadlocks when
// the grid does not fit. On sm_90 a group may instead be a thread-block cluster (launched with the
// group's size as its cluster dimension, so the hardware schedules its blocks together), and the
// barrier the cluster's own (barrier.cluster, release/acquire at cluster scope); which of the two
// is faster is the GPU runbook's measurement (benchmarks/cuda_group_sync_latency.cu). The CPU
// emulation (tests/cpp/cuda_unet_emulation_test.cpp, cuda_kernel_emulation_test.cpp) runs the
// members as host threads on the same code; there the arrival and the acquire load are the
// compiler's atomics.
#pragma once

#include "math/host_device.h"

#if defined(__CUDACC__)
#include <cooperative_groups.h>
#include <cuda_runtime.h>
#else
#include <thread>  // the CPU emulation: a waiting block gives its core to the others
#endif

// The address of shared-memory location `local` of this block in the block of its cluster whose
// rank is `member` (grid index `block`): distributed shared memory, sm_90. The CPU emulation
// defines its own (each emulated block's thread_local array, by grid index); below sm_90 no
// group is a cluster, so it is never reached there.
#ifndef MPD_PEER_SHARED
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define MPD_PEER_SHARED(local, member, block) cooperative_groups::this_cluster().map_shared_rank((local), (member))
#elif defined(__CUDA_ARCH__)
#define MPD_PEER_SHARED(local, member, block) (__trap(), (local))
#else
#define MPD_PEER_SHARED(local, member, block) (local)
#endif
#endif

namespace mpd::cuda {

MPD_HOST_DEVICE void group_arrive(unsigned* counter) {
#if defined(__CUDA_ARCH__)
  __threadfence();  // this block's writes before its arrival, for every other block of the GPU
  atomicAdd(counter, 1u);
#else
  __atomic_fetch_add(counter, 1u, __ATOMIC_ACQ_REL);
#endif
}

MPD_HOST_DEVICE unsigned group_arrivals(const unsigned* counter) {
#if defined(__CUDA_ARCH__)
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(counter) : "memory");
  return v;
#else
  return __atomic_load_n(counter, __ATOMIC_ACQUIRE);
#endif
}

struct GroupSync {
  unsigned* counter = nullptr;  // the group's arrivals (global memory), or null for a group of one block
  int members = 1;              // blocks in the group
  int rank = 0;                 // this block's index within the group
  unsigned target = 0;          // the arrivals that completed this block's last barrier
  int cluster = 0;              // the group is a thread-block cluster (sm_90): its hardware barrier
  int replicas = 0;             // each member keeps a replica of the group's scratch in its shared
                                // memory (a cluster's): what it writes there it also writes to the others'

  // Location `local` of this block's shared memory in member `member`'s (replicas only; a
  // cluster's ranks are its consecutive blocks, as launch_groups makes them).
  __device__ float* peer(float* local, int member) const {
    return MPD_PEER_SHARED(local, member, static_cast<int>(blockIdx.x) - rank + member);
  }

  // Every block of the group has finished what it wrote before this call. Called by every thread
  // of every member block, the same number of times.
  __device__ void sync() {
    if (members > 1) target += static_cast<unsigned>(members);  // counts this block's barriers either way
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (cluster && members > 1) {  // every thread of the cluster arrives; its writes released to the others
      asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
      return;
    }
#endif
    __syncthreads();
    if (members == 1) return;
    if (threadIdx.x == 0) {
      group_arrive(counter);
      while (group_arrivals(counter) < target) {
#if !defined(__CUDACC__)
        std::this_thread::yield();
#endif
      }
#if defined(__CUDA_ARCH__)
      __threadfence();  // the other blocks' writes, for this block's threads after the barrier below
#endif
    }
    __syncthreads();
  }
};

#if defined(__CUDACC__)
// The launch of `grid` blocks (kernel's one argument `arg`, `shared` bytes each) whose groups of
// `members` consecutive blocks run at once: as thread-block clusters of that size, or a
// cooperative grid (every block resident). The launch's status.
template <class Arg>
cudaError_t launch_groups(void (*kernel)(Arg), unsigned grid, unsigned threads, size_t shared, cudaStream_t stream,
                          int members, bool cluster, Arg arg) {
  cudaLaunchConfig_t launch{};
  launch.gridDim = dim3(grid);
  launch.blockDim = dim3(threads);
  launch.dynamicSmemBytes = shared;
  launch.stream = stream;
  cudaLaunchAttribute together{};
  if (cluster) {
    together.id = cudaLaunchAttributeClusterDimension;
    together.val.clusterDim.x = static_cast<unsigned>(members);
    together.val.clusterDim.y = 1;
    together.val.clusterDim.z = 1;
  } else {
    together.id = cudaLaunchAttributeCooperative;
    together.val.cooperative = 1;
  }
  launch.attrs = &together;
  launch.numAttrs = 1;
  return cudaLaunchKernelEx(&launch, kernel, arg);
}
#endif

}  // namespace mpd::cuda
