// The opaque C API objects: an immutable loaded model and a workspace bound to it. The API sits
// above the backends and sees them only through the seam (backend/backend.h).
#pragma once

#include <memory>

#include "backend/backend.h"
#include "format/model_file.h"
#include "mpdiffuser/mpdiffuser.h"

struct mpd_model {
  mpd::ModelFile file;                              // validated weights as stored
  std::shared_ptr<const mpd::cpu::CpuModel> cpu;    // packed for the CPU backend

  explicit mpd_model(mpd::ModelFile f) : file(std::move(f)), cpu(mpd::cpu::pack_model(file)) {}
};

struct mpd_workspace {
  const mpd_model* model = nullptr;
  mpd_backend backend = MPD_BACKEND_CPU;
  std::unique_ptr<mpd::Backend> impl;
  bool host_staged = false;  // inside mpd_plan_host: state and outputs are host memory
};
