"""The training loop every model shares: AdamW, EMA weights, gradient clipping, resumable
checkpoints, a progress bar with the loss, and a fixed seed giving the same result."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from mpdiffuser.config import LEGACY_TRAIN_FIELDS, TrainConfig

Batch = dict[str, np.ndarray]


def initialized(build, seed: int):
    """`build()`, a fresh network whose initial weights depend on `seed` alone: torch's generator is
    seeded for the call and restored afterwards, so what the process did before (training a SAC
    policy, say) cannot change them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def train_loop(model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, dict, torch.Generator], torch.Tensor],
               sample: Callable[[np.random.Generator, int], Batch], config: TrainConfig,
               checkpoint: str | Path | None = None, desc: str = "train", progress: bool = True,
               identity: dict | None = None) -> tuple[torch.nn.Module, list[float]]:
    """Train `model` in place for config.steps steps; returns (EMA copy, loss history).

    `checkpoint`: resumable state (model, EMA, optimizer, step, RNG states) written every
    config.checkpoint_every steps and at the end; an existing one is resumed from, so an
    interrupted run loses at most one checkpoint interval. Resuming yields the same weights as
    an uninterrupted run with the same seed. `identity` (for example the datasets' names and
    sizes) must match too, so a checkpoint of other data is never resumed.
    """
    # Every draw comes from these two generators (and is checkpointed with them); torch's global
    # generator is never touched, so training leaves the caller's random state as it was.
    rng = np.random.default_rng(config.seed)
    noise_gen = torch.Generator().manual_seed(config.seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    ema = copy.deepcopy(model).requires_grad_(False)
    start, history = 0, []
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        # A field added to TrainConfig later resumes under the value that reproduces the training
        # before it existed.
        saved = {**TrainConfig().__dict__, **LEGACY_TRAIN_FIELDS, **state["config"]}
        if saved != config.__dict__ or state.get("identity") != identity:
            raise ValueError(f"checkpoint {checkpoint} was made with another training config or other data; "
                             "delete it to start over")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        noise_gen.set_state(state["noise_rng"])
        start, history = state["step"], state["history"]

    def save(step: int) -> None:
        if checkpoint is None:
            return
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = checkpoint.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                    "numpy_rng": rng.bit_generator.state, "noise_rng": noise_gen.get_state(), "step": step,
                    "history": history, "config": config.__dict__, "identity": identity}, tmp)
        tmp.replace(checkpoint)

    model.train()
    ema_params, params = list(ema.parameters()), list(model.parameters())
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=desc, disable=None if progress else True,
               dynamic_ncols=True, leave=False)
    for step in bar:
        batch = {k: torch.from_numpy(v) for k, v in sample(rng, config.batch_size).items()}
        loss = loss_fn(model, batch, noise_gen)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        if (step + 1) % config.ema_every == 0:
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, params, 1.0 - config.ema_decay)
        history.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(history[-50:]):.4f}")
        if (step + 1) % config.checkpoint_every == 0:
            save(step + 1)
    save(config.steps)
    model.eval()
    return ema.eval(), history
