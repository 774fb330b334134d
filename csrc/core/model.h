// The opaque C API objects: an immutable loaded model and a workspace bound to it.
#pragma once

#include <memory>
#include <vector>

#include "core/model_file.h"
#include "cpu/sampler.h"
#include "mpdiffuser/mpdiffuser.h"
#ifdef MPD_WITH_CUDA
#include "cuda/sampler.h"
#endif

struct mpd_model {
  mpd::ModelFile file;            // validated weights as stored (uploaded by the CUDA backend)
  mpd::cpu::CpuModel cpu;         // packed for the CPU backend
  std::vector<double> state_mid, state_half, action_mid, action_half;  // min-max normalizers

  explicit mpd_model(mpd::ModelFile f);
};

struct mpd_workspace {
  const mpd_model* model = nullptr;
  mpd_backend backend = MPD_BACKEND_CPU;
  std::unique_ptr<mpd::cpu::CpuSampler> cpu;
#ifdef MPD_WITH_CUDA
  std::unique_ptr<mpd::cuda::CudaSampler> cuda;
#endif
  uint32_t max_candidates = 0;
  bool host_staged = false;  // inside mpd_plan_host: state and outputs are host memory
  std::vector<float> x0, cond;  // [dx], [cond_dim]: this plan's normalized inputs
};
