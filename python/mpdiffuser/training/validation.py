"""Periodic validation of the diffusion models on held-out episodes: the EMA model's denoising
loss at fixed noise, and for the planner the error of the windows it samples from noise at
temperature 0.25 (conditioned on each held-out window's own start state and return), as the authors
monitor training."""

from __future__ import annotations

import numpy as np
import torch

from mpdiffuser.data.dataset import OfflineDataset
from mpdiffuser.data.windows import WindowSampler
from mpdiffuser.models.bundle import BundleSpec, ModelBundle
from mpdiffuser.training.losses import DynamicsLoss, PlannerLoss


def split_episodes(data: OfflineDataset, fraction: float, seed: int) -> tuple[OfflineDataset, OfflineDataset]:
    """(training, held out): about `fraction` of the episodes, at least one each, drawn by `seed`."""
    n = len(data.episodes)
    if n < 2:
        raise ValueError(f"validation holds out whole episodes and {data.metadata.get('name', 'the data')} has {n}")
    held = max(1, min(n - 1, round(fraction * n)))
    chosen = set(np.random.default_rng(seed + 104729).choice(n, size=held, replace=False).tolist())
    keep = [e for i, e in enumerate(data.episodes) if i not in chosen]
    out = [e for i, e in enumerate(data.episodes) if i in chosen]
    return OfflineDataset(keep, dict(data.metadata)), OfflineDataset(out, dict(data.metadata))


class Validator:
    """Called as validate(ema_model, step) -> {"val_loss": ..., ["val_window_error",
    "val_first_action_error"]}; the same held-out windows and noise every time."""

    BATCH = 256
    SAMPLED = 32  # windows the planner samples per validation (K network calls each)
    TEMPERATURE = 0.25  # the authors' validation temperature

    def __init__(self, name: str, spec: BundleSpec, held_out: OfflineDataset, device: torch.device, seed: int):
        m = spec.model
        windows = WindowSampler(held_out, spec.states, spec.actions, m.horizon, spec.conditions)
        self.batch = {k: torch.from_numpy(v).to(device)
                      for k, v in windows.sample(np.random.default_rng(seed + 7), self.BATCH).items()}
        self.name, self.spec, self.device, self.seed = name, spec, device, seed
        if name == "planner":  # the plain denoising error: no condition dropout, every element weighs 1
            self.loss = PlannerLoss(m.num_steps, 0.0, 1.0, m.prediction)
        else:
            self.loss = DynamicsLoss(m.num_steps, 0.0, m.prediction)

    def _generator(self, offset: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.seed + offset)

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        out = self.loss(model, self.batch, self._generator(11))
        loss = out[0] if isinstance(out, tuple) else out
        values = {"val_loss": float(loss)}
        if self.name == "planner":
            values |= self.sampled_errors(model)
        return values

    @torch.no_grad()
    def sampled_errors(self, planner: torch.nn.Module) -> dict[str, float]:
        """Sample SAMPLED windows with the planner alone (guidance 1, temperature 0.25) from each
        held-out window's x0 and condition; mean squared error to the true window (normalized
        units) over the whole window and over its first action."""
        from mpdiffuser.sampling.reference import ReferenceSampler

        sampler = ReferenceSampler(ModelBundle.from_modules(self.spec, planner=planner, dynamics=None, reward=None),
                                   self.device)
        planner.eval()
        b = {k: v[: self.SAMPLED] for k, v in self.batch.items()}
        truth = torch.cat([b["states"], b["actions"]], dim=-1)  # [S, H, D]
        gen, scale = self._generator(13), float(np.sqrt(self.TEMPERATURE))
        tau = scale * torch.randn(truth.shape, generator=gen, device=self.device)
        for k in range(sampler.num_steps, 0, -1):
            kk = torch.full((truth.shape[0],), k, dtype=torch.long, device=self.device)
            tau = sampler.posterior_mean(tau, planner(tau, b["x0"], b["cond"], kk), k)
            if k > 1:
                tau = tau + sampler.posterior_sigma(k) * scale * torch.randn(truth.shape, generator=gen,
                                                                             device=self.device)
        err = (tau - truth).square()
        dx = self.spec.state_dim
        return {"val_window_error": float(err.mean()), "val_first_action_error": float(err[:, 0, dx:].mean())}
