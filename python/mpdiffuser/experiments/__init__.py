"""Reproducible experiments of DESIGN section 4, one command each (`mpdiffuser experiment <name>`)."""
