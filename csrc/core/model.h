// The opaque C API objects: an immutable loaded model and a workspace bound to it. The API sits
// above the backends and sees them only through the seam and its registry (backend/backend.h).
#pragma once

#include <memory>

#include "backend/backend.h"
#include "format/model_file.h"
#include "mpdiffuser/mpdiffuser.h"

struct mpd_model {
  mpd::ModelFile file;  // validated weights as stored
  // What each compiled backend keeps per model (BackendRecord::prepare: the CPU backend's packed
  // networks), by backend id; shared by the model's workspaces.
  std::shared_ptr<const void> prepared[mpd::kBackendCount];

  explicit mpd_model(mpd::ModelFile f) : file(std::move(f)) {
    for (int id = 0; id < mpd::kBackendCount; ++id) {
      const mpd::BackendRecord* r = mpd::find_backend(id);
      if (r != nullptr && r->compiled && r->prepare != nullptr) prepared[id] = r->prepare(file);
    }
  }
};

struct mpd_workspace {
  const mpd_model* model = nullptr;
  mpd_backend backend = MPD_BACKEND_CPU;
  std::unique_ptr<mpd::Backend> impl;
};
