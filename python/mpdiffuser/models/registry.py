"""The network families of the planner and the dynamics model, one entry each: how to build the
two denoisers from a ModelConfig, and whether the native backends (model file, CPU, CUDA) run
the family yet. The reward and cost models are residual MLPs in every family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class Family:
    planner: Callable[..., nn.Module]  # (dx, du, c, model config) -> PlannerDenoiser-like module
    dynamics: Callable[..., nn.Module]  # (dx, du, c, model config) -> DynamicsDenoiser-like module
    native: bool  # the model file and the native backends support it


def _mlp() -> Family:
    from mpdiffuser.models.networks import DynamicsDenoiser, PlannerDenoiser

    return Family(lambda dx, du, c, m: PlannerDenoiser(dx, du, c, m.horizon, m.width, m.layers),
                  lambda dx, du, c, m: DynamicsDenoiser(dx, du, c, m.horizon, m.width, m.layers), native=True)


def _unet() -> Family:
    from mpdiffuser.models.unet import UnetDynamics, UnetPlanner

    def sizes(m):
        return m.horizon, m.unet_dim, tuple(m.unet_mults), m.unet_embed_dim

    return Family(lambda dx, du, c, m: UnetPlanner(dx, du, c, *sizes(m)),
                  lambda dx, du, c, m: UnetDynamics(dx, du, c, *sizes(m)), native=False)


FAMILIES: dict[str, Callable[[], Family]] = {"mlp": _mlp, "unet": _unet}


def family(architecture: str) -> Family:
    if architecture not in FAMILIES:
        raise ValueError(f"unknown architecture {architecture!r}, expected one of {', '.join(FAMILIES)}")
    return FAMILIES[architecture]()
