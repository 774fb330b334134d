"""Train one model of a bundle on its data: planner on task data, dynamics and ranker on all data."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from mpdiffuser.config import TrainConfig
from mpdiffuser.data.dataset import OfflineDataset, merge_datasets
from mpdiffuser.data.windows import TransitionSampler, WindowSampler
from mpdiffuser.models.bundle import MODEL_NAMES, BundleSpec, load_weights, save_weights
from mpdiffuser.training.loop import initialized, train_loop
from mpdiffuser.training.losses import DynamicsLoss, PlannerLoss, cost_loss, reward_loss


def train_model(bundle_dir: str | Path, name: str, datasets: list[OfflineDataset], config: TrainConfig,
                fine_tune: bool = False, progress: bool = True) -> dict:
    """Train model `name` of the bundle at `bundle_dir` on `datasets` and write `<name>.pt`.

    fine_tune: start from the existing `<name>.pt` (for example the dynamics model on data from
    changed dynamics) instead of a fresh initialization. Returns a summary (final loss, seconds).
    """
    bundle_dir = Path(bundle_dir)
    spec = BundleSpec.load(bundle_dir)
    data = merge_datasets(datasets)
    for d in datasets:
        if spec.env_id and d.env_id and d.env_id != spec.env_id:
            raise ValueError(f"dataset for {d.env_id} cannot train a model of a {spec.env_id} bundle")
        if (d.state_dim, d.action_dim) != (spec.state_dim, spec.action_dim):
            raise ValueError(f"dataset dims ({d.state_dim}, {d.action_dim}) differ from the bundle's "
                             f"({spec.state_dim}, {spec.action_dim})")
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model '{name}'")
    if fine_tune:
        model = load_weights(bundle_dir, name, spec).train()
    else:  # each model of a seed starts from its own initialization
        model = initialized(lambda: spec.build(name), 16 * config.seed + MODEL_NAMES.index(name))
    m = spec.model
    if name in ("planner", "dynamics"):
        sampler = WindowSampler(data, spec.states, spec.actions, m.horizon, spec.conditions)
        if name == "planner":
            loss = PlannerLoss(m.num_steps, m.condition_dropout, config.action_weight, m.prediction)
        else:
            loss = DynamicsLoss(m.num_steps, m.condition_dropout, m.prediction)
    else:
        sampler = TransitionSampler(data, spec.states, spec.actions)
        if name == "cost" and sampler.cost is None:
            raise ValueError("the cost model needs datasets with costs")
        loss = reward_loss if name == "reward" else cost_loss
    suffix = "finetune" if fine_tune else "train"
    started = time.perf_counter()
    ema, history = train_loop(model, loss, sampler.sample, config, bundle_dir / "checkpoints" / f"{name}.{suffix}.ckpt",
                              desc=f"{name:8s}", progress=progress,
                              identity={"data": [(d.metadata.get("name"), d.num_transitions) for d in datasets]})
    seconds = time.perf_counter() - started
    final = float(sum(history[-100:]) / max(len(history[-100:]), 1)) if history else float("nan")
    info = {"steps": config.steps, "final_loss": final, "seconds": seconds, "fine_tuned": fine_tune,
            "train_config": dataclasses.asdict(config),
            "datasets": [d.metadata.get("name", d.metadata.get("source", "?")) for d in datasets]}
    save_weights(bundle_dir, name, ema, spec, info)
    return info
