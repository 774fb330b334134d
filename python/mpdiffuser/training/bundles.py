"""Train a whole bundle from Python: `mpd.fit(data, "runs/my_robot", env="Hopper-v5")`, the same
bundle `mpdiffuser train` makes (the command builds its bundles with prepare_bundle too).

    bundle = mpd.fit("my_robot.hdf5", "runs/my_robot", extra_data=["random.hdf5"], steps=20000)
    model_file = bundle.export()          # runs/my_robot/model.safetensors
    sampler = bundle.load("cpu")          # plans with the file's stored options
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mpdiffuser.data.dataset import OfflineDataset, load_dataset, merge_datasets


def prepare_bundle(bundle_dir: str | Path, task: list[OfflineDataset], extra: list[OfflineDataset], recipe_name: str,
                   sizes: dict, force: bool = False, create: bool = True, say=print) -> bool:
    """Create the bundle at `bundle_dir` when it is new (or `force`) from the recipe and the model
    `sizes` given (ModelConfig fields), or check an existing one against `sizes`. Returns whether
    it is new. create=False: another process creates it (the other ranks of a torchrun launch)."""
    from mpdiffuser.config import ModelConfig
    from mpdiffuser.models.bundle import BundleSpec
    from mpdiffuser.recipes import recipe

    bundle_dir = Path(bundle_dir)
    chosen = recipe(recipe_name)
    fresh = force or not (bundle_dir / "bundle.json").exists()
    if not fresh and sizes:
        model = BundleSpec.load(bundle_dir).model
        differ = {k: v for k, v in sizes.items() if getattr(model, k) != v}
        if differ:
            raise ValueError(f"{bundle_dir} exists with other model settings "
                             f"({', '.join(f'{k} {getattr(model, k)} != {v}' for k, v in differ.items())}); "
                             "--force (force=True) starts the bundle over")
    if fresh and create:
        planner_data = merge_datasets(task)
        model = ModelConfig.sized_for(planner_data.state_dim, planner_data.action_dim, **(dict(chosen.model) | sizes))
        BundleSpec.fit(planner_data, task + extra, model, chosen.sampler).save(bundle_dir)
        say(f"created bundle {bundle_dir} (recipe {recipe_name})")
    return fresh


def model_names(bundle_dir: str | Path) -> list[str]:
    """The models a bundle trains: planner, dynamics, reward, and cost for data with costs."""
    from mpdiffuser.models.bundle import BundleSpec

    return ["planner", "dynamics", "reward"] + (["cost"] if BundleSpec.load(bundle_dir).with_cost else [])


def model_jobs(bundle_dir: Path, names: list[str], task: list[OfflineDataset], extra: list[OfflineDataset],
               config, force: bool) -> list[tuple]:
    """train_models' jobs for the models `names` of one bundle: the planner on the task data, the
    others on the task and extra data, all with `config`."""
    return [(bundle_dir, name, task if name == "planner" else task + extra, config, force) for name in names]


@dataclasses.dataclass(frozen=True)
class TrainedBundle:
    """A trained bundle directory: export it to a model file, or load what plans with it."""

    path: Path

    def export(self, path: str | Path | None = None, options=None) -> Path:
        """Write the bundle's models to one model file (default BUNDLE/model.safetensors); options:
        the sampler defaults stored in it (default: the bundle's)."""
        from mpdiffuser.export import export_model

        return export_model(self.path, path or self.path / "model.safetensors", options)

    def load(self, backend: str = "cpu", threads: int = 0):
        """What plans with these models (mpdiffuser.load)."""
        from mpdiffuser.api import load

        return load(self.path, backend, threads=threads)


def _datasets(data) -> list[OfflineDataset]:
    items = data if isinstance(data, (list, tuple)) else [data]
    return [d if isinstance(d, OfflineDataset) else load_dataset(d) for d in items]


def fit(data, bundle_dir: str | Path, *, extra_data=(), env: str | None = None, recipe: str = "default",
        steps: int | None = None, batch_size: int | None = None, seed: int | None = None, device: str = "auto",
        precision: str = "fp32", model: dict | None = None, force: bool = False, progress: bool = True,
        at_once: str = "auto") -> TrainedBundle:
    """Train the planner on `data` and the dynamics and reward (and cost) models on `data` plus
    `extra_data` into `bundle_dir`, as `mpdiffuser train` does: resumable (an interrupted call
    continues from its checkpoints; more steps continue a finished one), one training per bundle
    at a time (its lock), progress bars.

    data, extra_data: datasets, or paths / "minari:<id>" (one or a list). env: the environment id
    recorded in the bundle (for data that names none, or to override it). recipe: "default" or
    "authors"; steps, batch_size, seed override its training settings, model its ModelConfig fields
    (say {"architecture": "unet"}). device: "auto" (a GPU when torch sees one), "cpu", "cuda".
    at_once: the models side by side, "auto" (on a GPU), "on" or "off". force: start the bundle over."""
    from mpdiffuser.recipes import recipe as get_recipe
    from mpdiffuser.training.lock import BundleLock
    from mpdiffuser.training.runtime import from_environment
    from mpdiffuser.training.train import side_by_side, train_models

    task, extra = _datasets(data), _datasets(list(extra_data))
    if env is not None:
        task, extra = [d.for_env(env) for d in task], [d.for_env(env) for d in extra]
    given = {k: v for k, v in (("steps", steps), ("batch_size", batch_size), ("seed", seed)) if v is not None}
    config = dataclasses.replace(get_recipe(recipe).train, **given)
    runtime = from_environment(device, precision=precision)
    bundle_dir = Path(bundle_dir)
    with BundleLock(bundle_dir):
        fresh = prepare_bundle(bundle_dir, task, extra, recipe, dict(model or {}), force=force)
        jobs = model_jobs(bundle_dir, model_names(bundle_dir), task, extra, config, fresh)
        train_models(jobs, runtime, at_once=side_by_side(at_once, runtime), progress=progress)
    return TrainedBundle(bundle_dir)
