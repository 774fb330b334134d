"""mpdiffuser: Model Predictive Diffuser (MPDiffuser) for offline decision making.

A diffusion planner, a diffusion dynamics model and a ranker trained from offline data, and an
alternating sampler that interleaves their denoising updates, run as model-predictive control.
"""

from mpdiffuser._core import build_info as _build_info

__version__ = _build_info()["version"]


def build_info() -> dict:
    """Version, compilers and whether the CUDA backend was compiled into the native core."""
    return dict(_build_info())


__all__ = ["__version__", "build_info"]
