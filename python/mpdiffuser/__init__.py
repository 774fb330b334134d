"""mpdiffuser: Model Predictive Diffuser (MPDiffuser) for offline decision making.

A diffusion planner, a diffusion dynamics model and a ranker trained from offline data, and an
alternating sampler that interleaves their denoising updates, run as model-predictive control.

    import mpdiffuser as mpd
    sampler = mpd.load("runs/demo/models/model.safetensors")     # or a bundle directory; backend="cuda"
    plan = sampler.plan(observation, seed=0)                      # the file's stored options
    bundle = mpd.ModelBundle.load("runs/demo/models", env_id="Hopper-v5")
    policy = mpd.MPCPolicy(mpd.ReferenceSampler(bundle), bundle.spec.sampler_defaults)
    policy.reset(seed=0); action = policy.act(observation)
"""

from importlib import import_module, metadata

try:
    from mpdiffuser._core import build_info as _build_info
except ImportError:  # a training-only install: data, training and export work; planning says what is missing
    _build_info = None

__version__ = _build_info()["version"] if _build_info else metadata.version("mpdiffuser")

# Public names, imported on first use so that `import mpdiffuser` does not load torch.
_EXPORTS = {
    "ModelConfig": "mpdiffuser.config", "SamplerOptions": "mpdiffuser.config", "TrainConfig": "mpdiffuser.config",
    "OfflineDataset": "mpdiffuser.data.dataset", "load_dataset": "mpdiffuser.data.dataset",
    "BundleSpec": "mpdiffuser.models.bundle", "ModelBundle": "mpdiffuser.models.bundle",
    "ReferenceSampler": "mpdiffuser.sampling.reference", "Plan": "mpdiffuser.sampling.reference",
    "Sampler": "mpdiffuser.sampling.sampler", "export_model": "mpdiffuser.export",
    "train_model": "mpdiffuser.training.train",
    "MPCPolicy": "mpdiffuser.control.mpc", "evaluate": "mpdiffuser.control.evaluate",
    "RECIPES": "mpdiffuser.recipes", "CdfNormalizer": "mpdiffuser.data.normalizer",
    "MinMaxNormalizer": "mpdiffuser.data.normalizer", "load": "mpdiffuser.api", "fit": "mpdiffuser.training.bundles",
    "TrainedBundle": "mpdiffuser.training.bundles",
}


def build_info() -> dict:
    """Version, compilers, whether the CUDA backend was compiled into the native core and whether
    the CPU backend's fast numeric mode runs on AMX tiles here (`cpu_amx`)."""
    from mpdiffuser.native import core

    return dict(core().build_info())


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mpdiffuser' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = ["__version__", "build_info", *_EXPORTS]
