// MPD_HOST_DEVICE: marks math that is compiled for both the CPU backend and the CUDA kernels.
// Everything under csrc/math/ is header-only and uses only this macro, <cstdint> and <cmath>.
#pragma once

#if defined(__CUDACC__)
#define MPD_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MPD_HOST_DEVICE inline
#endif
