// Device-side Philox noise: the same math/philox.h draws generated in a kernel, one thread per
// block of four elements. It proves the shared headers compile for the GPU and lets tests
// compare device draws with the host ones bit for bit.
#include <cuda_runtime.h>

#include "cuda/noise_kernel.h"
#include "math/philox.h"

namespace mpd::cuda {
namespace {

// out: [count] device buffer. Thread t writes elements 4t..4t+3 (those below count).
__global__ void fill_normal_kernel(uint64_t seed, uint32_t candidate, uint32_t step, float* out,
                                   size_t count) {
  const size_t block = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t base = block * 4;
  if (base >= count) return;
  float lanes[4];
  math::normal4(seed, candidate, step, static_cast<uint32_t>(block), lanes);
  for (size_t lane = 0; lane < 4 && base + lane < count; ++lane) out[base + lane] = lanes[lane];
}

}  // namespace

bool device_available() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  return devices > 0;
}

mpd_status fill_normal_device(uint64_t seed, uint32_t candidate, uint32_t step, float* out,
                              size_t count, cudaStream_t stream) {
  if (count == 0) return MPD_OK;
  if (out == nullptr) return MPD_ERR_NULL_POINTER;
  if (count > (static_cast<size_t>(UINT32_MAX) + 1) * 4) return MPD_ERR_INVALID_ARGUMENT;
  const size_t blocks = (count + 3) / 4;
  const unsigned threads = 256;
  const unsigned grid = static_cast<unsigned>((blocks + threads - 1) / threads);
  fill_normal_kernel<<<grid, threads, 0, stream>>>(seed, candidate, step, out, count);
  return cudaGetLastError() == cudaSuccess ? MPD_OK : MPD_ERR_DEVICE;
}

mpd_status fill_normal_host_via_device(uint64_t seed, uint32_t candidate, uint32_t step,
                                       float* host_out, size_t count) {
  if (count == 0) return MPD_OK;
  if (host_out == nullptr) return MPD_ERR_NULL_POINTER;
  if (!device_available()) return MPD_ERR_NOT_AVAILABLE;
  float* device_out = nullptr;
  if (cudaMalloc(&device_out, count * sizeof(float)) != cudaSuccess) return MPD_ERR_DEVICE;
  mpd_status status = fill_normal_device(seed, candidate, step, device_out, count, nullptr);
  if (status == MPD_OK &&
      cudaMemcpy(host_out, device_out, count * sizeof(float), cudaMemcpyDeviceToHost) !=
          cudaSuccess) {
    status = MPD_ERR_DEVICE;
  }
  cudaFree(device_out);
  return status;
}

}  // namespace mpd::cuda
