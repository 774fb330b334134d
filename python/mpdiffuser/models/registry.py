"""The network families of the planner and the dynamics model, one entry each: how to build the
two denoisers from a ModelConfig, their FLOP count, and whether the CUDA backend runs the family
yet. The reward and cost models are residual MLPs in every family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class Family:
    planner: Callable[..., nn.Module]  # (dx, du, c, model config) -> PlannerDenoiser-like module
    dynamics: Callable[..., nn.Module]  # (dx, du, c, model config) -> DynamicsDenoiser-like module
    cuda: bool  # the CUDA backend runs it (every family runs on torch and the CPU backend)

    def flops_per_row(self, dx: int, du: int, c: int, m) -> tuple[float, float]:
        """Floating-point operations of one planner and one dynamics call on one row (2 per
        multiply-add of every Linear and convolution), counted on a forward pass."""
        import torch

        H = m.horizon
        planner, dynamics = self.planner(dx, du, c, m), self.dynamics(dx, du, c, m)
        x0, cond, k = torch.zeros(1, dx), torch.zeros(1, c), torch.ones(1, dtype=torch.long)
        return (module_flops(planner, torch.zeros(1, H, dx + du), x0, cond, k),
                module_flops(dynamics, torch.zeros(1, H, dx), torch.zeros(1, H, du), x0, cond, k))


def module_flops(module: nn.Module, *inputs) -> float:
    """2 x the multiply-adds of the Linear, Conv1d and ConvTranspose1d layers of one forward."""
    import torch

    total = [0.0]

    def count(layer, args, out):
        if isinstance(layer, nn.Linear):
            total[0] += 2.0 * layer.in_features * layer.out_features * out.numel() / layer.out_features
        elif isinstance(layer, nn.Conv1d):
            total[0] += 2.0 * layer.in_channels * layer.kernel_size[0] * out.numel()
        elif isinstance(layer, nn.ConvTranspose1d):
            total[0] += 2.0 * layer.out_channels * layer.kernel_size[0] * args[0].numel()

    hooks = [m.register_forward_hook(count) for m in module.modules()
             if isinstance(m, (nn.Linear, nn.Conv1d, nn.ConvTranspose1d))]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def _mlp() -> Family:
    from mpdiffuser.models.networks import DynamicsDenoiser, PlannerDenoiser

    return Family(lambda dx, du, c, m: PlannerDenoiser(dx, du, c, m.horizon, m.width, m.layers),
                  lambda dx, du, c, m: DynamicsDenoiser(dx, du, c, m.horizon, m.width, m.layers), cuda=True)


def _unet() -> Family:
    from mpdiffuser.models.unet import UnetDynamics, UnetPlanner

    def sizes(m):
        return m.horizon, m.unet_dim, tuple(m.unet_mults), m.unet_embed_dim

    return Family(lambda dx, du, c, m: UnetPlanner(dx, du, c, *sizes(m)),
                  lambda dx, du, c, m: UnetDynamics(dx, du, c, *sizes(m)), cuda=True)


FAMILIES: dict[str, Callable[[], Family]] = {"mlp": _mlp, "unet": _unet}


def family(architecture: str) -> Family:
    if architecture not in FAMILIES:
        raise ValueError(f"unknown architecture {architecture!r}, expected one of {', '.join(FAMILIES)}")
    return FAMILIES[architecture]()
