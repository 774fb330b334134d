"""Train a whole bundle from Python: `mpd.fit(data, "runs/my_robot", env="Hopper-v5")`, the same
bundle `mpdiffuser train` makes (the command builds its bundles with prepare_bundle too).

    bundle = mpd.fit("my_robot.hdf5", "runs/my_robot", extra_data=["random.hdf5"], steps=20000)
    model_file = bundle.export()          # runs/my_robot/model.safetensors
    sampler = bundle.load("cpu")          # plans with the file's stored options
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mpdiffuser.data.dataset import OfflineDataset, merge_datasets
from mpdiffuser.logs import logger, python_api, setting, talk


def prepare_bundle(bundle_dir: str | Path, task: list[OfflineDataset], extra: list[OfflineDataset],
                   recipe_name: str = "default", sizes: dict | None = None, force: bool = False,
                   create: bool = True, say=print, spec=None) -> bool:
    """Create the bundle at `bundle_dir` when it is new (or `force`) from the recipe and the model
    `sizes` given (ModelConfig fields), or check an existing one against `sizes`. With `spec` (a
    BundleSpec: the experiments'), that exact bundle instead, and an existing one must equal it.
    Returns whether it is new. create=False: another process creates it (torchrun's other ranks)."""
    from mpdiffuser.config import ModelConfig
    from mpdiffuser.models.bundle import BundleSpec
    from mpdiffuser.recipes import recipe

    bundle_dir = Path(bundle_dir)
    fresh = force or not (bundle_dir / "bundle.json").exists()
    if spec is not None:
        if not fresh and BundleSpec.load(bundle_dir).to_dict() != spec.to_dict():
            raise ValueError(f"{bundle_dir} holds a bundle of other data or another architecture; delete it or "
                             "choose another output directory")
        if create:
            spec.save(bundle_dir)
        return fresh
    sizes = sizes or {}
    chosen = recipe(recipe_name)
    if not fresh and sizes:
        model = BundleSpec.load(bundle_dir).model
        differ = {k: v for k, v in sizes.items() if getattr(model, k) != v}
        if differ:
            raise ValueError(f"{bundle_dir} exists with other model settings "
                             f"({', '.join(f'{k} {getattr(model, k)} != {v}' for k, v in differ.items())}); "
                             f"{setting('force', True)} starts the bundle over")
    if fresh and create:
        planner_data = merge_datasets(task)
        model = ModelConfig.sized_for(planner_data.state_dim, planner_data.action_dim, **(dict(chosen.model) | sizes))
        sampler = chosen.sampler
        if model.large_robot_model(planner_data.state_dim, planner_data.action_dim):
            sampler = sampler.replace(fast_numerics=1)  # config.LARGE_WINDOW
        BundleSpec.fit(planner_data, task + extra, model, sampler).save(bundle_dir)
        say(f"created bundle {bundle_dir} (recipe {recipe_name})")
    return fresh


def train_bundle(bundle_dir: str | Path, task: list[OfflineDataset], extra: list[OfflineDataset] = (), *,
                 config=None, configs: dict | None = None, models: list[str] | None = None,
                 seeds: list[int] = (), snapshots: list[int] = (), runtime=None, at_once: str = "auto",
                 force=False, fine_tune: bool = False, strict_batch: bool = False,
                 progress: bool = True, say=None, eval_every: int = 0,
                 eval_episodes: int = 3) -> list[tuple[Path, str, object, dict]]:
    """Train the models of a prepared bundle (prepare_bundle): the planner on `task`, the others on
    `task` + `extra`; the one way every command, the demo, the experiments and the benchmarks train.

    models: which (default: every model the bundle has); configs: a TrainConfig per model name,
    else `config`. seeds: one bundle per seed, BUNDLE-s<seed> (each prepared), the configs' seed
    replaced. snapshots: BUNDLE/model-<n>.safetensors with planner and dynamics at n steps each
    (the ranker trained first, then planner and dynamics continued from length to length).
    at_once: the models side by side (training.train.side_by_side: "auto" on a GPU); the weights
    equal one after another's. force: start the models over (True, or the bundles that start over).
    say: reports each model's result. eval_every: the planner trains last and every this many
    steps controls the robot for eval_episodes episodes (training.closed_loop), one after another.
    Returns (bundle, model, its TrainConfig, train_model's summary) in training order."""
    from mpdiffuser.training.runtime import TrainRuntime, barrier
    from mpdiffuser.training.train import side_by_side, train_model, train_models

    runtime = runtime or TrainRuntime()
    bundle_dir = Path(bundle_dir)
    bundles = [(Path(f"{bundle_dir}-s{seed}"), seed) for seed in seeds] or [(bundle_dir, None)]
    names = models or model_names(bundles[0][0])
    if eval_every:
        from mpdiffuser.training.closed_loop import planner_last

        names = planner_last(names)  # its evaluation plans with the trained dynamics and ranker
    task, extra = list(task), list(extra)

    def config_of(name: str, seed):
        chosen = (configs or {}).get(name, config)
        return chosen if seed is None else dataclasses.replace(chosen, seed=seed)

    starts_over = (lambda bundle: force) if isinstance(force, bool) else (lambda bundle: bundle in force)
    jobs = [(bundle, name, task if name == "planner" else task + extra, config_of(name, seed), starts_over(bundle))
            for bundle, seed in bundles for name in names]
    label = (lambda bundle, name: name) if len(bundles) == 1 else (lambda bundle, name: f"{bundle.name} {name}")
    done = []
    together = side_by_side(at_once, runtime) and not snapshots and not eval_every and len(jobs) > 1
    if say and seeds:
        say(f"training seeds {', '.join(map(str, seeds))} ({len(jobs)} models) "
            + ("at once" if together else "one after another"))
    elif say and together:
        say(f"training {', '.join(names)} at once")
    if together:
        infos = train_models(jobs, runtime, at_once=True, fine_tune=fine_tune, strict_batch=strict_batch,
                             progress=progress)
        for (bundle, name, _, job_config, _), info in zip(jobs, infos):
            done.append((bundle, name, job_config, info))
            if say:
                _say_trained(say, label(bundle, name), job_config, info)
        return done
    plan: list = jobs  # one after another; an integer n: export the snapshot at n steps
    if snapshots:
        diffusion = [job for job in jobs if job[1] in ("planner", "dynamics")]
        plan = [job for job in jobs if job[1] not in ("planner", "dynamics")]  # the ranker first
        for length in snapshots:
            plan += [(b, n, d, dataclasses.replace(c, steps=length), f) for b, n, d, c, f in diffusion] + [length]
        plan += [job for job in diffusion if snapshots[-1] < job[3].steps]
    started = set()
    for item in plan:
        if isinstance(item, int):
            if runtime.is_main:
                from mpdiffuser.export import export_model

                path = export_model(bundles[0][0], bundles[0][0] / f"model-{item}.safetensors", written_by="train")
                if say:
                    say(f"wrote {path}: planner and dynamics at {item} steps")
            barrier(runtime)
            continue
        bundle, name, data, job_config, job_force = item
        info = train_model(bundle, name, data, job_config, fine_tune=fine_tune, runtime=runtime,
                           force=job_force and (bundle, name) not in started,  # later lengths continue
                           strict_batch=strict_batch, progress=progress, eval_every=eval_every,
                           eval_episodes=eval_episodes)
        started.add((bundle, name))
        done.append((bundle, name, job_config, info))
        if say:
            _say_trained(say, label(bundle, name), job_config, info)
    return done


def _say_trained(say, name: str, config, info: dict) -> None:
    if info["nothing_to_do"]:
        say(f"{name}: already trained for {config.steps} steps ({info['checkpoint']}); nothing to do "
            f"(a larger {setting('steps')} continues it, {setting('force', True)} starts over)")
    else:
        say(f"{name}: {info['steps']} steps, final loss {info['final_loss']:.4f}, {info['seconds']:.0f}s; "
            f"log {info['log']}")
        if info.get("best_eval"):
            best = info["best_eval"]
            say(f"{name}: best closed-loop return {best['eval_return']:.1f} at step {best['step']}"
                + (f" (score {best['eval_score']:.1f})" if best["eval_score"] == best["eval_score"] else ""))


def model_names(bundle_dir: str | Path) -> list[str]:
    """The models a bundle trains: planner, dynamics, reward, and cost for data with costs."""
    from mpdiffuser.models.bundle import BundleSpec

    return BundleSpec.load(bundle_dir).model_names


@dataclasses.dataclass(frozen=True)
class TrainedBundle:
    """A trained bundle directory: export it to a model file, or load what plans with it."""

    path: Path

    def export(self, path: str | Path | None = None, options=None, weights: str | None = None) -> Path:
        """Write the bundle's models to one model file (default BUNDLE/model.safetensors); options:
        the sampler defaults stored in it (default: the bundle's); weights: "float32" or "bf16"
        (config.WEIGHT_FORMATS: the weight matrices rounded to bfloat16, half the file and faster
        CPU plans); default bf16 for a large robot's U-Net (config.LARGE_WINDOW), else float32."""
        from mpdiffuser.export import export_model

        return export_model(self.path, path or self.path / "model.safetensors", options, weights=weights)

    def load(self, backend: str = "cpu", threads: int = 0):
        """What plans with these models (mpdiffuser.load)."""
        from mpdiffuser.api import load

        return load(self.path, backend, threads=threads)


def fit(data, bundle_dir: str | Path, *, extra_data=(), env: str | None = None, recipe: str = "default",
        device: str = "auto", model: dict | str | None = None, force: bool = False, progress: bool = True,
        at_once: str = "auto", **fields) -> TrainedBundle:
    """Train the planner on `data` and the dynamics and reward (and cost) models on `data` plus
    `extra_data` into `bundle_dir`, as `mpdiffuser train` does (one TrainRequest, training/request.py):
    resumable (an interrupted call continues from its checkpoints; more steps continue a finished
    one), one training per bundle at a time (its lock), progress bars.

    data, extra_data: datasets, or paths / "minari:<id>" (one or a list). env: the environment id
    recorded in the bundle (for data that names none, or to override it). recipe: "default" or
    "authors". fields: every field of `mpdiffuser train` by its flag's name, checked with its
    messages: the request's (fine_tune, seeds, export_at; model "all" or one model's name), the
    training config's (steps, batch_size, lr, seed, checkpoint_every, action_weight, ...), a new
    bundle's model (horizon, diffusion_steps, width, layers, architecture, unet_dim, prediction,
    ...; or `model`, a dict of ModelConfig fields) and the runtime's (precision, compile, batches,
    capture, log_every, tensorboard). device: "auto" (a GPU when torch sees one), "cpu", "cuda".
    at_once: the models side by side, "auto" (on a GPU), "on" or "off". force: start the bundle over.
    Outside a terminal (no progress bars) progress, resume notices, final losses and data warnings
    go through logging, to the logger "mpdiffuser" (mpdiffuser.logs); progress=False keeps quiet."""
    from mpdiffuser.config import MODEL_FLAGS
    from mpdiffuser.training.request import TrainRequest

    if isinstance(model, dict):  # ModelConfig fields by name: the same as their flags
        by_field = {field: flag for flag, field in MODEL_FLAGS.items()}
        unknown = sorted(set(model) - set(by_field))
        if unknown:
            raise TypeError(f"fit() got unknown model fields {unknown}; ModelConfig's are {', '.join(by_field)}")
        fields = {by_field[k]: v for k, v in model.items()} | fields
        model = None
    with python_api():
        request = TrainRequest.of(bundle_dir, data if isinstance(data, (list, tuple)) else [data],
                                  extra_data=tuple(extra_data) if isinstance(extra_data, (list, tuple)) else
                                  (extra_data,), env=env, recipe=recipe, device=device, force=force, at_once=at_once,
                                  **({"model": model} if model is not None else {}), **fields)
        talk(progress)
        request.run(progress=progress, say=logger.info if progress else (lambda *a, **k: None))
    return TrainedBundle(Path(bundle_dir))
