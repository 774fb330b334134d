"""The train command: a bundle's models from datasets (training/bundles.py does the work)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from mpdiffuser.commands.common import add_field_flags, given_fields, seed_type, show
from mpdiffuser.config import MODEL_FLAGS, TRAIN_FLAGS  # noqa: F401  (commands.train.TRAIN_FLAGS)

# The flags that set a TrainRuntime field (flag -> field): their help is the field's comment in
# training/runtime.py, their default the dataclass's.
RUNTIME_FLAGS = {"precision": "precision", "batches": "batches", "capture": "capture", "log_every": "log_every"}


def _cmd_train(args: argparse.Namespace) -> int:
    """Train the models of a bundle: the planner on --data, dynamics and ranker on --data plus --extra-data.

    An interrupted run resumes from its checkpoints; a larger --steps continues a finished one;
    --force starts over. Loss logs: BUNDLE/logs/<model>.csv (and TensorBoard when installed).
    Several GPUs or processes: torchrun --nproc_per_node N -m mpdiffuser train ... (the global
    --batch-size is split over the N processes). --export-at 2000 5000 also writes
    BUNDLE/model-<n>.safetensors with planner and dynamics at n steps (the ranker fully trained),
    for `tune` to pick the training length from.
    """
    from mpdiffuser.config import ModelConfig
    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.envs import action_bounds
    from mpdiffuser.recipes import recipe
    from mpdiffuser.training.bundles import train_bundle
    from mpdiffuser.training.lock import BundleLock, BundleLocked
    from mpdiffuser.training.runtime import all_gather, from_environment, leave_process_group

    chosen = recipe(args.recipe)
    given = given_fields(args, TRAIN_FLAGS)
    config = dataclasses.replace(chosen.train, **given)  # bad values fail here, before any file is written
    ModelConfig(**(chosen.model | given_fields(args, MODEL_FLAGS)))  # so do bad model sizes (--horizon 0)
    snapshots = sorted(set(args.export_at or ()))
    if snapshots and (args.model != "all" or args.fine_tune):
        raise SystemExit("error: --export-at exports whole bundles: it needs --model all and no --fine-tune")
    if snapshots and not 1 <= snapshots[0] <= snapshots[-1] <= config.steps:
        raise SystemExit(f"error: --export-at steps must lie within 1..{config.steps} (--steps), got {snapshots}")
    runtime = from_environment(args.device, compile=args.compile, tensorboard=not args.no_tensorboard,
                               **given_fields(args, RUNTIME_FLAGS))
    runtime.local_batch(config.batch_size)  # a world size that does not divide the batch fails here
    say = print if runtime.is_main else (lambda *a, **k: None)
    task = [load_dataset(p) for p in args.data]
    extra = [load_dataset(p) for p in args.extra_data or []]
    if args.env is not None:  # recorded in the bundle and its model files, for eval, tune and consistency
        task, extra = [d.for_env(args.env) for d in task], [d.for_env(args.env) for d in extra]
    for path, data in zip([*args.data, *(args.extra_data or [])], task + extra):
        for problem in data.problems(*action_bounds(data.env_id)):
            say(f"warning: {path}: {problem}")
    seeds = args.seeds or []
    if seeds:
        if args.seed is not None:
            raise SystemExit("error: give --seed or --seeds, not both")
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"error: --seeds repeats {sorted(s for s in set(seeds) if seeds.count(s) > 1)}")
        if snapshots or runtime.distributed:
            raise SystemExit("error: --seeds trains one process's bundles side by side: not with --export-at or "
                             "under torchrun")
    bundles = [Path(f"{args.bundle}-s{s}") for s in seeds] or [Path(args.bundle)]
    locks = [BundleLock(b, say) for b in bundles]
    refused = None
    if runtime.is_main:
        try:
            for lock in locks:
                lock.acquire()
        except BundleLocked as exc:
            refused = str(exc)
    refused = all_gather(runtime, refused)[0]  # every rank stops when rank 0 could not take the lock
    try:
        if refused:
            raise BundleLocked(refused)
        fresh = [bundle for bundle in bundles if _prepare_bundle(args, runtime, task, extra, bundle, say)]
        if runtime.distributed or runtime.device != "cpu" or runtime.precision != "fp32":
            say(f"training on {runtime.device} x {runtime.world_size} process(es), {runtime.precision}"
                + (", compiled" if runtime.compile else ""))
        train_bundle(args.bundle, task, extra, config=config, models=None if args.model == "all" else [args.model],
                     seeds=seeds, snapshots=snapshots, runtime=runtime, at_once=args.at_once,
                     force=True if args.force else fresh, fine_tune=args.fine_tune, strict_batch=True, say=say)
    finally:
        for lock in locks:
            lock.release()
    if runtime.distributed:
        leave_process_group()
    return 0


def _prepare_bundle(args, runtime, task, extra, bundle: Path, say) -> bool:
    """Create the bundle when it is new (or --force), check its model settings against the flags
    (training.bundles.prepare_bundle, as mpd.fit does); whether it is new."""
    from mpdiffuser.training.bundles import prepare_bundle
    from mpdiffuser.training.runtime import barrier

    sizes = given_fields(args, MODEL_FLAGS)
    fresh = prepare_bundle(bundle, task, extra, args.recipe, sizes,
                           force=args.force and args.model == "all" and not args.fine_tune,
                           create=runtime.is_main, say=say)
    barrier(runtime)  # the other ranks read the bundle rank 0 wrote
    return fresh


def _cmd_plot(args: argparse.Namespace) -> int:
    """Plot a bundle's training: one PNG per model from BUNDLE/logs/<model>.csv (loss, the planner's
    first-action loss, validation when the run validated, steps per second), into --out."""
    from mpdiffuser.training.plot import plot_training

    for path in plot_training(args.bundle, args.out):
        print(f"wrote {path}")
    return 0


def register(commands) -> None:
    from mpdiffuser.config import (ARCHITECTURES, AT_ONCE_MODES, BATCHES, CAPTURE_MODES, NORMALIZERS, PREDICTIONS,
                                   PRECISION_NAMES, RETURN_CONDITIONS, ModelConfig, TrainConfig)
    from mpdiffuser.models.bundle import MODEL_NAMES
    from mpdiffuser.recipes import recipe
    from mpdiffuser.training.runtime import TrainRuntime

    train = commands.add_parser("train", help="train planner, dynamics and ranker", description=_cmd_train.__doc__)
    train.add_argument("--bundle", required=True, help="model bundle directory (created if missing)")
    train.add_argument("--data", action="extend", nargs="+", required=True,
                       help="task dataset(s) (.hdf5, .npz, minari:<id>)")
    train.add_argument("--extra-data", action="extend", nargs="+", default=None,
                       help="more data for the dynamics and ranker models only (random actions, say)")
    train.add_argument("--model", default="all", choices=["all", *MODEL_NAMES], help="which model(s) to train")
    train.add_argument("--fine-tune", action="store_true", help="start from the bundle's existing weights")
    train.add_argument("--recipe", default="default", choices=["default", "authors"],
                       help="training, model and sampler defaults: ours, chosen by measurement, or the paper code's "
                            "(K = 100, epsilon, 1M steps at batch 64; tau = 1e-3, N = 1, w = 2, g = 1.1); "
                            "the flags below override it")
    t, authors = TrainConfig(), recipe("authors").train

    def train_default(field: str) -> str:
        mine, theirs = show(getattr(t, field)), show(getattr(authors, field))
        return f"(default {mine}" + (f"; recipe authors {theirs})" if theirs != mine else ")")

    add_field_flags(train, TrainConfig, TRAIN_FLAGS, train_default, types_={"seed": seed_type})
    train.add_argument("--env", default=None,
                       help="environment id recorded in the bundle (default: the one the data name, if any)")
    train.add_argument("--seeds", type=seed_type, nargs="+", default=None,
                       help="several training seeds, one bundle each (BUNDLE-s<seed>), trained at once on a GPU")
    train.add_argument("--export-at", type=int, action="extend", nargs="+", default=None,
                       help="also export BUNDLE/model-<n>.safetensors with planner and dynamics at each of these "
                            "steps (<= --steps), for tune --model-file to pick the training length")
    train.add_argument("--force", action="store_true",
                       help="start over: delete the models' checkpoints (with --model all, the bundle's settings too)")
    train.add_argument("--device", default="auto", help="auto (a GPU when torch sees one), cpu, cuda or cuda:<i>")
    add_field_flags(train, TrainRuntime, RUNTIME_FLAGS, lambda field: f"(default {show(getattr(TrainRuntime, field))})",
                    choices={"precision": PRECISION_NAMES, "capture": CAPTURE_MODES, "batches": BATCHES})
    train.add_argument("--compile", action="store_true", help="torch.compile the networks")
    train.add_argument("--at-once", default=AT_ONCE_MODES[0], choices=AT_ONCE_MODES,
                       help="train the bundle's models at the same time, a thread and a CUDA stream each (auto: on a "
                            "GPU in one process); the weights are those of one after another")
    train.add_argument("--no-tensorboard", action="store_true",
                       help="do not write TensorBoard events even when tensorboard is installed")
    m, authors_model = ModelConfig(), recipe("authors").model

    def model_default(field: str) -> str:
        mine = show(getattr(m, field))
        theirs = show(tuple(authors_model[field]) if isinstance(authors_model.get(field), list) else
                      authors_model.get(field, getattr(m, field)))
        return f"(new bundles only; default {mine}" + (f"; recipe authors {theirs})" if theirs != mine else ")")

    add_field_flags(train, ModelConfig, MODEL_FLAGS, model_default,
                    choices={"architecture": ARCHITECTURES, "prediction": PREDICTIONS, "normalizer": NORMALIZERS,
                             "return_condition": RETURN_CONDITIONS})
    train.set_defaults(func=_cmd_train)
    plot = commands.add_parser("plot", help="plot a bundle's training logs", description=_cmd_plot.__doc__)
    plot.add_argument("bundle", help="a trained bundle directory")
    plot.add_argument("--out", default=None, help="where the PNGs go (default BUNDLE/plots)")
    plot.set_defaults(func=_cmd_plot)

