"""Short ways in for Python users: load what plans from a model file or a bundle directory."""

from __future__ import annotations

from pathlib import Path


def load(path: str | Path, backend: str = "cpu", *, threads: int = 0):
    """What plans with the models at `path`: a model file (.safetensors) or a trained bundle
    directory. backend "cpu" or "cuda" (native) gives a Sampler on the model file (a bundle's
    BUNDLE/model.safetensors, exported when missing or stale, never over one that export or tune
    wrote); "torch" gives the PyTorch reference (a Sampler on a file, a ReferenceSampler on a
    bundle). Every one plans with its stored defaults: `load(path).plan(state, seed)`."""
    from mpdiffuser.sampling.sampler import BACKENDS, Sampler

    path = Path(path)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if path.is_dir():
        if not (path / "bundle.json").exists():
            raise FileNotFoundError(f"{path} is a directory but not a trained bundle (no bundle.json)")
        if backend == "torch":
            from mpdiffuser.models.bundle import ModelBundle
            from mpdiffuser.sampling.reference import ReferenceSampler

            return ReferenceSampler(ModelBundle.load(path))
        from mpdiffuser.export import model_file_for_bundle

        path, _ = model_file_for_bundle(path)
    return Sampler(path, backend, threads=threads)
