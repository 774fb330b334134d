/* Compiles the public header as C (C99) and calls the C API from C. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mpdiffuser/mpdiffuser.h"

static int failures = 0;
#define EXPECT(cond)                                                     \
  do {                                                                   \
    if (!(cond)) {                                                       \
      printf("%s:%d: EXPECT failed: %s\n", __FILE__, __LINE__, #cond);   \
      ++failures;                                                        \
    }                                                                    \
  } while (0)

int main(void) {
  float z[10];
  int i;
  EXPECT(strcmp(mpd_version_string(), MPD_VERSION_STRING) == 0);
  EXPECT(strcmp(mpd_status_string(MPD_OK), "ok") == 0);
  EXPECT(mpd_status_string((mpd_status)12345) != NULL);
  EXPECT(mpd_noise_normal(1u, 2u, 3u, NULL, 10) == MPD_ERR_NULL_POINTER);
  EXPECT(mpd_noise_normal(1u, 2u, 3u, z, 10) == MPD_OK);
  for (i = 0; i < 10; ++i) EXPECT(isfinite(z[i]) && fabsf(z[i]) < 10.0f);
  EXPECT(z[0] != z[1]);
  if (failures == 0) printf("all checks passed\n");
  return failures == 0 ? 0 : 1;
}
