"""The loss of each model (design section 3): the diffusion models regress their prediction target
(the noise for "epsilon", the clean window for "sample") with condition dropout for
classifier-free guidance; the per-step ranker models are regressions on transitions."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mpdiffuser.models.schedule import CosineSchedule


class DiffusionLoss:
    """Shared noising for planner and dynamics: level k ~ U{1..K}, v_k = sqrt(abar) v + sqrt(1-abar) eps."""

    def __init__(self, num_steps: int, condition_dropout: float, prediction: str = "epsilon"):
        if prediction not in ("epsilon", "sample"):
            raise ValueError(f"prediction must be 'epsilon' or 'sample', got {prediction!r}")
        self.prediction = prediction
        s = CosineSchedule.make(num_steps)
        self.num_steps = num_steps
        self.sqrt_ab = torch.tensor(s.alpha_bar, dtype=torch.float32).sqrt()
        self.sqrt_1mab = torch.tensor(1.0 - s.alpha_bar, dtype=torch.float32).sqrt()
        self.dropout = condition_dropout

    # Every draw comes from `gen`, on the generator's device (the batch's): the same seed on the
    # same device gives the same training.
    def levels(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randint(1, self.num_steps + 1, (batch,), generator=gen, device=gen.device)

    def noised(self, v: torch.Tensor, k: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn(v.shape, generator=gen, device=v.device)
        shape = (-1,) + (1,) * (v.dim() - 1)
        if self.sqrt_ab.device != v.device:
            self.sqrt_ab, self.sqrt_1mab = self.sqrt_ab.to(v.device), self.sqrt_1mab.to(v.device)
        return self.sqrt_ab[k - 1].view(shape) * v + self.sqrt_1mab[k - 1].view(shape) * eps, eps

    def target(self, clean: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """What the network learns to output: the noise, or the clean sample."""
        return eps if self.prediction == "epsilon" else clean

    def dropped(self, cond: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        keep = (torch.rand(cond.shape[0], 1, generator=gen, device=cond.device) >= self.dropout).to(cond.dtype)
        return cond * keep


class PlannerLoss(DiffusionLoss):
    """Window rows are [x_{t+1}, u_t]; the elements of u_0 (row 0, the last du columns) weigh
    `action_weight` in the mean squared error, every other element 1. Returns the loss and, for
    the logs, the unweighted error of u_0 alone."""

    def __init__(self, num_steps: int, condition_dropout: float, action_weight: float = 1.0,
                 prediction: str = "epsilon"):
        super().__init__(num_steps, condition_dropout, prediction)
        self.action_weight = action_weight

    def __call__(self, model, batch: dict, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        tau = torch.cat([batch["states"], batch["actions"]], dim=-1)  # [B, H, D]
        dx = batch["states"].shape[-1]
        k = self.levels(tau.shape[0], gen)
        tau_k, eps = self.noised(tau, k, gen)
        err = (model(tau_k, batch["x0"], self.dropped(batch["cond"], gen), k).float() - self.target(tau, eps)).square()
        first_action = {"first_action_loss": err[:, 0, dx:].mean().detach()}
        if self.action_weight == 1.0:
            return err.mean(), first_action
        weights = torch.ones(tau.shape[1:], dtype=err.dtype, device=err.device)
        weights[0, dx:] = self.action_weight
        return (err * weights).mean(), first_action


class DynamicsLoss(DiffusionLoss):
    """States and actions noised to the same level k; the model predicts the states' noise (or the
    clean states)."""

    def __call__(self, model, batch: dict, gen: torch.Generator) -> torch.Tensor:
        k = self.levels(batch["states"].shape[0], gen)
        states_k, eps = self.noised(batch["states"], k, gen)
        actions_k, _ = self.noised(batch["actions"], k, gen)
        out = model(states_k, actions_k, batch["x0"], self.dropped(batch["cond"], gen), k).float()
        return F.mse_loss(out, self.target(batch["states"], eps))


def reward_loss(model, batch: dict, gen: torch.Generator) -> torch.Tensor:
    out = model(batch["x"], batch["u"]).float()
    loss = F.mse_loss(out[:, 0], batch["reward"])
    if out.shape[1] == 2:
        loss = loss + F.binary_cross_entropy_with_logits(out[:, 1], batch["terminal"])
    return loss


def cost_loss(model, batch: dict, gen: torch.Generator) -> torch.Tensor:
    return F.mse_loss(model(batch["x"], batch["u"])[:, 0].float(), batch["cost"])
