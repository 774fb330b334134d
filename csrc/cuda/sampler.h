// The CUDA backend of the alternating sampler (design sections 2 and 3): one fused kernel runs
// all K denoising steps of the dynamics model and the planner plus the ranker for a group of
// candidates per thread block (activations in shared memory, transposed weights read through
// L2, Philox noise generated in the kernel); a second one-warp kernel selects the candidate and
// writes its de-normalized actions. Two launches per plan, no host synchronization and no
// allocation after create(), so a plan can be captured in a CUDA graph.
//
// This header holds no CUDA types, so the C API (compiled as C++) can include it.
#pragma once

#include <cstdint>
#include <memory>

#include "core/model_file.h"
#include "mpdiffuser/mpdiffuser.h"

namespace mpd::cuda {

class CudaSampler {
 public:
  // Uploads the model's weights (one allocation) and allocates the buffers of up to
  // max_candidates candidates on the current device. MPD_ERR_NOT_AVAILABLE without a device or
  // when a thread block's shared memory cannot hold the model's rows.
  static mpd_status create(const ModelFile& file, int max_candidates, std::unique_ptr<CudaSampler>* out);
  ~CudaSampler();
  CudaSampler(const CudaSampler&) = delete;
  CudaSampler& operator=(const CudaSampler&) = delete;

  int max_candidates() const;

  // One plan, asynchronous on `stream` (a cudaStream_t; NULL is the legacy default stream).
  // state: [dx] raw state in device memory; output's pointers are device memory; index_ptr, when
  // not NULL, receives the chosen index on the device. A non-finite state yields index
  // UINT32_MAX and NaN actions (the kernel cannot return a status without a synchronization).
  // options are checked by the caller. warm: [H, D] the previous window in device memory for a
  // warm start at options.warm_start_level, or nullptr (cold); a non-finite one yields NaN too.
  mpd_status plan(const float* state, const float* warm, uint64_t seed, const mpd_options& options,
                  const float* cond, mpd_plan_output* output, void* stream);

  // The same from host memory: copies state in and every requested output back through the
  // sampler's own device buffers, then synchronizes the stream (for Python and tests).
  mpd_status plan_host(const float* state, const float* warm, uint64_t seed, const mpd_options& options,
                       const float* cond, mpd_plan_output* output, void* stream);

 private:
  struct Impl;
  explicit CudaSampler(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mpd::cuda
