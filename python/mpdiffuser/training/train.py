"""Train one model of a bundle on its data: planner on task data, dynamics and ranker on all data."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

from mpdiffuser.config import MODEL_ONLY_TRAIN_FIELDS, TrainConfig
from mpdiffuser.data.dataset import OfflineDataset, merge_datasets
from mpdiffuser.data.windows import TransitionSampler, WindowSampler
from mpdiffuser.models.bundle import MODEL_NAMES, BundleSpec, load_weights, save_weights
from mpdiffuser.training.log import LossLog
from mpdiffuser.training.loop import NothingToDo, final_loss, initialized, train_loop
from mpdiffuser.training.losses import DynamicsLoss, PlannerLoss, cost_loss, reward_loss
from mpdiffuser.training.runtime import TrainRuntime, barrier


def checkpoint_path(bundle_dir: str | Path, name: str, fine_tune: bool = False) -> Path:
    """Where training model `name` of a bundle keeps its resumable state."""
    return Path(bundle_dir) / "checkpoints" / f"{name}.{'finetune' if fine_tune else 'train'}.ckpt"


def check_device_memory(needed: int, device) -> None:
    """Refuse to put `needed` bytes of training data on a GPU that has not that much free (with
    room for the model and its activations), saying how much is needed and what to do."""
    import torch

    if torch.device(device).type != "cuda":
        return
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    if needed > 0.5 * free:
        raise ValueError(f"the training data need {needed / 2**30:.2f} GiB on {device}, which has {free / 2**30:.2f} "
                         "GiB free (half is left for the model): --batches host keeps them in host memory")


def train_model(bundle_dir: str | Path, name: str, datasets: list[OfflineDataset], config: TrainConfig,
                fine_tune: bool = False, progress: bool = True, runtime: TrainRuntime | None = None,
                force: bool = False, strict_batch: bool = False, eval_every: int = 0, eval_episodes: int = 3) -> dict:
    """Train model `name` of the bundle at `bundle_dir` on `datasets` and write `<name>.pt`.

    fine_tune: start from the existing `<name>.pt` (for example the dynamics model on data from
    changed dynamics) instead of a fresh initialization. An existing checkpoint is resumed, or
    continued when config.steps is larger; force=True deletes it and starts over. The loss log is
    `logs/<name>.csv` in the bundle. Returns a summary (steps, final loss, seconds, log path);
    "nothing_to_do" is true when the checkpoint had reached config.steps already.
    runtime: device, precision, compile and torchrun rank (default: one process on the CPU).
    strict_batch: refuse a batch larger than the data's windows (the CLI's rule; the library
    samples with replacement, as tests and quick experiments on tiny data do).
    eval_every (planner only): every this many steps, eval_episodes closed-loop episodes of the
    EMA planner with the bundle's trained dynamics and ranker (training.closed_loop), logged as
    eval_return and eval_score; the summary's best_eval is the best step.
    """
    runtime = runtime or TrainRuntime()
    bundle_dir = Path(bundle_dir)
    spec = BundleSpec.load(bundle_dir)
    for d in datasets:
        if spec.env_id and d.env_id and d.env_id != spec.env_id:
            raise ValueError(f"dataset for {d.env_id} cannot train a model of a {spec.env_id} bundle")
        if (d.state_dim, d.action_dim) != (spec.state_dim, spec.action_dim):
            raise ValueError(f"dataset dims ({d.state_dim}, {d.action_dim}) differ from the bundle's "
                             f"({spec.state_dim}, {spec.action_dim})")
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model '{name}'")
    data = merge_datasets(datasets)
    diffusion = name in ("planner", "dynamics")
    validator, held_out = None, 0
    if diffusion and config.validate_every > 0:
        from mpdiffuser.training.validation import Validator, split_episodes

        data, held = split_episodes(data, config.validation_fraction, config.seed)
        held_out = len(held.episodes)
        validator = Validator(name, spec, held, runtime.torch_device, config.seed) if runtime.is_main else None
    checkpoint = checkpoint_path(bundle_dir, name, fine_tune)
    if force and runtime.is_main:
        checkpoint.unlink(missing_ok=True)
    barrier(runtime)
    if fine_tune:
        model = load_weights(bundle_dir, name, spec).train()
    else:  # each model of a seed starts from its own initialization
        model = initialized(lambda: spec.build(name), 16 * config.seed + MODEL_NAMES.index(name))
    m = spec.model
    columns = ["loss"]
    closed = None
    if eval_every and name == "planner":
        from mpdiffuser.training.closed_loop import COLUMNS, ClosedLoop

        closed = ClosedLoop(bundle_dir, eval_episodes) if runtime.is_main else None
        columns += COLUMNS
    if diffusion:
        sampler = WindowSampler(data, spec.states, spec.actions, m.horizon, spec.conditions)
        if name == "planner":
            loss = PlannerLoss(m.num_steps, m.condition_dropout, config.action_weight, m.prediction)
            columns.append("first_action_loss")
        else:
            loss = DynamicsLoss(m.num_steps, m.condition_dropout, m.prediction)
        if validator is not None:
            columns += ["val_loss"] + (["val_window_error", "val_first_action_error"] if name == "planner" else [])
    else:
        sampler = TransitionSampler(data, spec.states, spec.actions)
        if name == "cost" and sampler.cost is None:
            raise ValueError("the cost model needs datasets with costs")
        loss = reward_loss if name == "reward" else cost_loss
    sampler = sampler.shard(runtime.rank, runtime.world_size)
    local_batch = runtime.local_batch(config.batch_size)
    if strict_batch and len(sampler) < local_batch:
        what = "windows" if diffusion else "transitions"
        raise ValueError(f"the batch of {local_batch} (per process) exceeds the {len(sampler)} {what} of the data for "
                         f"{name}: every batch would repeat them; use a smaller --batch-size or more data")
    if runtime.device_batches:
        check_device_memory(sampler.table_bytes(), runtime.torch_device)
    device_sample = sampler.on_device(runtime.torch_device).sample if runtime.device_batches else None
    log = LossLog(bundle_dir / "logs", f"{name}.finetune" if fine_tune else name, columns, runtime.tensorboard)
    identity = {"data": [(d.metadata.get("name"), d.num_transitions) for d in datasets], "held_out": held_out}
    started = time.perf_counter()
    try:
        ema, history = train_loop(model, loss, sampler.sample, config, checkpoint, desc=f"{name:8s}",
                                  progress=progress, identity=identity, runtime=runtime, log=log, validate=validator,
                                  device_sample=device_sample, evaluate=closed,
                                  evaluate_every=eval_every if closed is not None else 0,
                                  unread=tuple(f for f, model in MODEL_ONLY_TRAIN_FIELDS.items() if model != name))
    except NothingToDo as done:
        info = {"steps": config.steps, "nothing_to_do": True, "checkpoint": str(checkpoint), "seconds": 0.0,
                "final_loss": final_loss(done.state["history"].tolist()), "log": str(log.path)}
        if runtime.is_main and not (bundle_dir / f"{name}.pt").exists():  # stopped between checkpoint and weights
            model.load_state_dict(done.state["ema"])
            save_weights(bundle_dir, name, model.eval(), spec, info | {"train_config": dataclasses.asdict(config)})
        barrier(runtime)
        return info
    seconds = time.perf_counter() - started
    info = {"steps": config.steps, "final_loss": final_loss(history), "seconds": seconds, "fine_tuned": fine_tune,
            "nothing_to_do": False, "train_config": dataclasses.asdict(config),
            "runtime": {"device": runtime.device, "precision": runtime.precision, "compile": runtime.compile,
                        "world_size": runtime.world_size},
            "log": str(log.path), "held_out_episodes": held_out,
            "datasets": [d.metadata.get("name", d.metadata.get("source", "?")) for d in datasets]}
    if closed is not None:
        info["best_eval"] = closed.best
    if runtime.is_main:
        save_weights(bundle_dir, name, ema, spec, info)
    barrier(runtime)
    return info


def side_by_side(mode: str, runtime: TrainRuntime) -> bool:
    """Whether train_models trains its models at once for an AT_ONCE_MODES `mode`: "on", or
    "auto" on a GPU in one process."""
    from mpdiffuser.config import AT_ONCE_MODES

    if mode not in AT_ONCE_MODES:
        raise ValueError(f"at_once must be one of {', '.join(AT_ONCE_MODES)}, got {mode!r}")
    return mode == "on" or (mode == "auto" and runtime.torch_device.type == "cuda" and not runtime.distributed)


def train_models(jobs: list[tuple[str | Path, str, list[OfflineDataset], TrainConfig, bool]],
                 runtime: TrainRuntime | None = None, at_once: bool = False, **options) -> list[dict]:
    """Train several models, [(bundle_dir, name, datasets, config, force)] (several bundles, say
    one per seed, may take part), and return train_model's summaries in the same order.
    at_once: every model trains in its own thread at the same time, on its own CUDA stream on a
    GPU (a small model alone cannot fill one; with the step captured as a CUDA graph a replay
    holds the GIL only to launch it). Each model keeps its own generators, so the weights are
    those of one after another. `options` go to train_model."""
    runtime = runtime or TrainRuntime()
    if not at_once or len(jobs) < 2:
        return [train_model(bundle, name, data, config, runtime=runtime, force=force, **options)
                for bundle, name, data, config, force in jobs]
    import threading

    import torch

    results: list[dict | None] = [None] * len(jobs)
    failures: list[BaseException] = []

    def work(i: int, bundle, name: str, data: list[OfflineDataset], config: TrainConfig, force: bool) -> None:
        try:
            cuda = runtime.torch_device.type == "cuda"
            with torch.cuda.stream(torch.cuda.Stream(runtime.torch_device)) if cuda else contextlib.nullcontext():
                results[i] = train_model(bundle, name, data, config, runtime=runtime, force=force,
                                         **(options | {"progress": options.get("progress", True) and i == 0}))
        except BaseException as exc:  # re-raised in the calling thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i, *job), name=f"train-{job[1]}") for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return results
