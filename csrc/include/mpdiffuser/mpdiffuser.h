/* mpdiffuser: the public C API of the MPDiffuser sampling core.
 *
 * Plain C, no CUDA and no Python headers, so firmware can include it from C or C++.
 * Every function returns an mpd_status and never aborts or throws across this boundary.
 */
#ifndef MPDIFFUSER_MPDIFFUSER_H_
#define MPDIFFUSER_MPDIFFUSER_H_

#include <stddef.h>
#include <stdint.h>

#include "mpdiffuser/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Result of every API call. MPD_OK is zero; every other value is an error. */
typedef enum mpd_status {
  MPD_OK = 0,
  MPD_ERR_NULL_POINTER = 1,     /* a required pointer argument was NULL */
  MPD_ERR_INVALID_ARGUMENT = 2, /* a count, size or option is out of its range */
  MPD_ERR_NOT_AVAILABLE = 3,    /* the backend was not compiled in, or no device is present */
  MPD_ERR_DEVICE = 4,           /* the accelerator runtime reported an error */
  MPD_ERR_IO = 5,               /* a file could not be opened or read */
  MPD_ERR_BAD_MODEL_FILE = 6,   /* a model file is truncated, corrupt or of another version */
  MPD_ERR_NON_FINITE = 7        /* an input holds NaN or infinity */
} mpd_status;

/* A short, static, human-readable description of a status; never NULL. */
const char* mpd_status_string(mpd_status status);

/* The library's version as "MAJOR.MINOR.PATCH"; static, never NULL. */
const char* mpd_version_string(void);

/* Fills out[0..count) with z(seed, candidate, step): the Philox4x32-10 standard normals of
 * DESIGN section 3.1 that every backend uses. count may be 0 (out may then be NULL). */
mpd_status mpd_noise_normal(uint64_t seed, uint32_t candidate, uint32_t step, float* out,
                            size_t count);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MPDIFFUSER_MPDIFFUSER_H_ */
