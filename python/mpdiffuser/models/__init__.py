"""Networks and diffusion schedules of MPDiffuser."""
