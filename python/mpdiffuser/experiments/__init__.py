"""Reproducible experiments of design section 4, one command each (`mpdiffuser experiment <name>`)."""
