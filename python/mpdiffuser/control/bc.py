"""Behaviour cloning, the offline-RL baseline of the locomotion suite: a residual MLP from the
normalized state to the normalized action (tanh output), trained by mean squared error on the
same task data as the planner, with the same training loop, and the same normalizers."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.nn import functional as F

from mpdiffuser.config import TrainConfig
from mpdiffuser.data.dataset import OfflineDataset
from mpdiffuser.data.normalizer import MinMaxNormalizer
from mpdiffuser.data.windows import TransitionSampler
from mpdiffuser.models.networks import ResidualMLP
from mpdiffuser.training.loop import final_loss, initialized, train_loop
from mpdiffuser.training.runtime import TrainRuntime


def bc_loss(model: torch.nn.Module, batch: dict, gen: torch.Generator) -> torch.Tensor:
    return F.mse_loss(torch.tanh(model(batch["x"])), batch["u"])


class BCPolicy:
    """`act(observation) -> action` of a behaviour-cloned network; deterministic, so `reset` only
    satisfies the evaluation protocol."""

    def __init__(self, network: torch.nn.Module, states: MinMaxNormalizer, actions: MinMaxNormalizer):
        self.network = network.eval()
        self.states, self.actions = states, actions

    @classmethod
    def train(cls, data: OfflineDataset, states: MinMaxNormalizer, actions: MinMaxNormalizer, config: TrainConfig,
              width: int = 256, layers: int = 3, progress: bool = True,
              device: str = "cpu") -> tuple["BCPolicy", dict]:
        """Fit on every transition of `data` (on `device`); returns (policy on the CPU, {final_loss, seconds})."""
        sampler = TransitionSampler(data, states, actions)
        network = initialized(lambda: ResidualMLP(data.state_dim, width, layers, data.action_dim), config.seed)
        started = time.perf_counter()
        ema, history = train_loop(network, bc_loss, sampler.sample, config, desc="bc      ", progress=progress,
                                  runtime=TrainRuntime(device=device))
        return cls(ema, states, actions), {"final_loss": final_loss(history), "seconds": time.perf_counter() - started}

    def reset(self, seed: int) -> None:
        pass

    @torch.no_grad()
    def act(self, observation: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(self.states.normalize(np.asarray(observation, dtype=np.float32))[None])
        return self.actions.unnormalize(torch.tanh(self.network(x))[0].numpy())
