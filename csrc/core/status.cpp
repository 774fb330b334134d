// Status strings and version of the C API.
#include "mpdiffuser/mpdiffuser.h"

extern "C" const char* mpd_status_string(mpd_status status) {
  switch (status) {
    case MPD_OK: return "ok";
    case MPD_ERR_NULL_POINTER: return "a required pointer argument was NULL";
    case MPD_ERR_INVALID_ARGUMENT: return "an argument is out of its valid range";
    case MPD_ERR_NOT_AVAILABLE: return "backend not compiled in or no device present";
    case MPD_ERR_DEVICE: return "the accelerator runtime reported an error";
    case MPD_ERR_IO: return "a file could not be opened or read";
    case MPD_ERR_BAD_MODEL_FILE: return "the model file is truncated, corrupt or of another version";
    case MPD_ERR_NON_FINITE: return "an input holds NaN or infinity";
    case MPD_ERR_MODEL_MISMATCH: return "the workspace was created for another model";
    case MPD_ERR_OUT_OF_MEMORY: return "out of memory";
    case MPD_ERR_NON_FINITE_PLAN:
      return "the plan came out NaN or infinite (corrupt weights or a diverging sampler); do not execute it";
    case MPD_ERR_CANCELLED: return "the plan was cancelled (mpd_workspace_cancel)";
    case MPD_ERR_STATE_OUT_OF_RANGE:
      return "the state lies more than 100 half-ranges of the training data from its middle (a sensor or unit fault?)";
  }
  return "unknown status code";
}

extern "C" const char* mpd_version_string(void) { return MPD_VERSION_STRING; }
