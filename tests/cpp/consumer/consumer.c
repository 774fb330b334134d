/* Links the installed library through find_package and prints the first noise draws. */
#include <stdio.h>

#include "mpdiffuser/mpdiffuser.h"

int main(void) {
  float z[4];
  mpd_status status = mpd_noise_normal(7u, 0u, 1u, z, 4);
  if (status != MPD_OK) {
    printf("mpd_noise_normal failed: %s\n", mpd_status_string(status));
    return 1;
  }
  printf("mpdiffuser %s: %.9g %.9g %.9g %.9g\n", mpd_version_string(), z[0], z[1], z[2], z[3]);
  return 0;
}
