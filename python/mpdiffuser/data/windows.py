"""Training samples: windows for the diffusion models, transitions for the ranker.

A window starting at step t of an episode is ``x_0 = x_t`` (the conditioning state) and ``H``
rows ``[x_{t+i+1}, u_{t+i}]``, all normalized to [-1, 1]. Windows of episodes that ended in a
terminal state may run past the end: states are padded with the terminal state and actions
with zeros (an absorbing state), as Diffuser does. Windows of time-limited episodes never pass
the end, since what follows is unknown.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from mpdiffuser.config import TERMINATION_PENALTY
from mpdiffuser.data.dataset import OfflineDataset
from mpdiffuser.data.normalizer import MinMaxNormalizer


@dataclass(frozen=True)
class ConditionScale:
    """Maps return-to-go and cost-to-go to the condition vector c = [g, l * s_c].

    g = (rtg - return_low) / (return_high - return_low), with rtg the discounted return-to-go in
    which an episode that terminated (fell) loses `termination_penalty` at its last step. The
    authors' condition is return_low = 0, return_high = the best episode-start rtg, penalty 100.
    """

    return_low: float
    return_high: float
    return_discount: float
    cost_scale: float
    with_cost: bool
    termination_penalty: float = 0.0

    @property
    def dim(self) -> int:
        return 2 if self.with_cost else 1

    def returns_to_go(self, rewards: np.ndarray, terminated: bool = False) -> np.ndarray:
        """[T] discounted return-to-go of one episode's rewards [T]."""
        rewards = np.asarray(rewards, dtype=np.float64)
        if terminated and self.termination_penalty and len(rewards):
            rewards = rewards.copy()
            rewards[-1] -= self.termination_penalty
        out = np.zeros(len(rewards), dtype=np.float64)
        acc = 0.0
        for i in range(len(rewards) - 1, -1, -1):
            acc = rewards[i] + self.return_discount * acc
            out[i] = acc
        return out

    def normalized_return(self, rtg: np.ndarray) -> np.ndarray:
        span = max(self.return_high - self.return_low, 1e-6)
        return (rtg - self.return_low) / span

    def condition(self, return_target: float, cost_limit: float | None) -> np.ndarray:
        """The sampling condition [g] or [g, l * s_c] as float32 [dim]."""
        if self.with_cost:
            if cost_limit is None:
                raise ValueError("this model is cost-conditioned: pass a cost_limit")
            return np.array([return_target, cost_limit * self.cost_scale], dtype=np.float32)
        if cost_limit is not None:
            raise ValueError("cost_limit given, but the model was trained without costs")
        return np.array([return_target], dtype=np.float32)

    def to_dict(self) -> dict:
        return dict(return_low=self.return_low, return_high=self.return_high, return_discount=self.return_discount,
                    cost_scale=self.cost_scale, with_cost=self.with_cost)

    @classmethod
    def from_dict(cls, d: dict) -> "ConditionScale":
        return cls(**d)  # bundles made before termination_penalty existed had none: its default 0

    @classmethod
    def fit(cls, dataset: OfflineDataset, return_discount: float, cost_scale: float,
            kind: str = "minmax") -> "ConditionScale":
        """kind "minmax": the data's rtg range maps to [0, 1]; "authors": rtg with the fall penalty
        over the best episode-start rtg (design section 3, Conditions)."""
        if kind == "minmax":
            probe = cls(0.0, 1.0, return_discount, cost_scale, dataset.has_costs)
            rtgs = np.concatenate([probe.returns_to_go(e.rewards) for e in dataset.episodes])
            return cls(float(rtgs.min()), float(rtgs.max()), return_discount, cost_scale, dataset.has_costs)
        if kind != "authors":
            raise ValueError(f"unknown return condition {kind!r}, expected 'minmax' or 'authors'")
        probe = cls(0.0, 1.0, return_discount, cost_scale, dataset.has_costs, TERMINATION_PENALTY)
        starts = [probe.returns_to_go(e.rewards, e.terminated)[0] for e in dataset.episodes]
        best_start = max(starts)
        if best_start > 0.0:
            return cls(0.0, float(best_start), return_discount, cost_scale, dataset.has_costs, TERMINATION_PENALTY)
        # Data whose best start is not positive (a goal-reaching robot's -1 per step until success;
        # random rollouts that all fall) cannot be scaled from 0: the starts span [worst, best],
        # which maps to [0, 1], so that 1 is still the best episode start and g = 1.1 asks for more
        # (scaled from 0, the best start was -1 and every usual g asked for returns no episode had).
        worst_start = min(starts)
        low = worst_start if worst_start < best_start else best_start - 1.0
        return cls(float(low), float(best_start), return_discount, cost_scale, dataset.has_costs, TERMINATION_PENALTY)


class WindowSampler:
    """Uniform random windows of one dataset, precomputed once as padded normalized arrays."""

    def __init__(self, dataset: OfflineDataset, states: MinMaxNormalizer, actions: MinMaxNormalizer,
                 horizon: int, conditions: ConditionScale):
        if states.dim != dataset.state_dim or actions.dim != dataset.action_dim:
            raise ValueError(f"normalizer dims ({states.dim}, {actions.dim}) do not match the dataset "
                             f"({dataset.state_dim}, {dataset.action_dim})")
        if conditions.with_cost and not dataset.has_costs:
            raise ValueError("cost-conditioned models need a dataset with costs")
        self.horizon = horizon
        obs, act, cond, starts = [], [], [], []
        offset = 0
        for e in dataset.episodes:
            T = e.length
            x = states.normalize(e.observations)  # [T+1, dx]
            u = actions.normalize(e.actions)  # [T, du]
            x = np.concatenate([x, np.repeat(x[-1:], horizon, axis=0)])  # [T+1+H, dx]
            u = np.concatenate([u, np.zeros((horizon, u.shape[1]), np.float32)])  # [T+H, du]
            g = conditions.normalized_return(conditions.returns_to_go(e.rewards, e.terminated))  # [T]
            columns = [g]
            if conditions.with_cost:
                columns.append(np.cumsum(e.costs[::-1])[::-1] * conditions.cost_scale)
            last_start = T - 1 if e.terminated else T - horizon
            if last_start >= 0:
                starts.append(offset + np.arange(last_start + 1))
            obs.append(x)
            act.append(np.concatenate([u, np.zeros((1, u.shape[1]), np.float32)]))  # align rows with obs
            cond.append(np.concatenate([np.stack(columns, 1), np.zeros((1 + horizon, len(columns)))]).astype(np.float32))
            offset += T + 1 + horizon
        if not starts:
            raise ValueError(f"no episode is long enough for a window of horizon {horizon}")
        self._obs = np.concatenate(obs)
        self._act = np.concatenate(act)
        self._cond = np.concatenate(cond)
        self._starts = np.concatenate(starts)

    def __len__(self) -> int:
        return len(self._starts)

    def shard(self, rank: int, world_size: int) -> "WindowSampler":
        """The windows of one rank of `world_size` (every world_size-th start): ranks of a torchrun
        launch sample disjoint windows. shard(0, 1) is this sampler itself."""
        if world_size == 1:
            return self
        if len(self._starts) < world_size:
            raise ValueError(f"{len(self._starts)} windows cannot be shared by {world_size} processes")
        out = copy.copy(self)
        out._starts = self._starts[rank::world_size]
        return out

    def table_bytes(self) -> int:
        """The bytes the tables take on a device (DeviceWindows)."""
        return self._obs.nbytes + self._act.nbytes + self._cond.nbytes + 8 * len(self._starts)

    def on_device(self, device: torch.device | str) -> "DeviceWindows":
        """These windows on `device`, drawn there (DeviceWindows)."""
        return DeviceWindows(self, device)

    def sample(self, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
        """x0 [B, dx], states [B, H, dx] (x_1..x_H), actions [B, H, du], cond [B, c]."""
        t = self._starts[rng.integers(0, len(self._starts), size=batch)]
        rows = t[:, None] + np.arange(self.horizon)[None, :]  # [B, H]
        return {
            "x0": self._obs[t],
            "states": self._obs[rows + 1],
            "actions": self._act[rows],
            "cond": self._cond[t],
        }


class DeviceWindows:
    """A WindowSampler's tables on a torch device: batches are drawn there with a torch.Generator,
    with no NumPy, no host-to-device copy and no synchronization (design section 2, "Training
    fills the device"). The windows are the host sampler's, start for start."""

    def __init__(self, host: WindowSampler, device: torch.device | str):
        self.horizon = host.horizon
        self.obs, self.act, self.cond = (_on(a, device) for a in (host._obs, host._act, host._cond))
        self.starts = _on(host._starts.astype(np.int64), device)
        self.offsets = torch.arange(host.horizon, device=self.starts.device)

    def __len__(self) -> int:
        return len(self.starts)

    def draw(self, gen: torch.Generator, batch: int) -> torch.Tensor:
        """[B] window starts (rows of the tables), uniform over the valid starts."""
        return self.starts[torch.randint(len(self.starts), (batch,), generator=gen, device=self.starts.device)]

    def sample(self, gen: torch.Generator, batch: int) -> dict[str, torch.Tensor]:
        """x0 [B, dx], states [B, H, dx] (x_1..x_H), actions [B, H, du], cond [B, c]: uniform windows."""
        t = self.draw(gen, batch)
        rows = t[:, None] + self.offsets  # [B, H]
        return {"x0": self.obs[t], "states": self.obs[rows + 1], "actions": self.act[rows], "cond": self.cond[t]}


def _on(array: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


class TransitionSampler:
    """Uniform random transitions (x_t, u_t) -> reward r_t, termination flag, cost c_t."""

    def __init__(self, dataset: OfflineDataset, states: MinMaxNormalizer, actions: MinMaxNormalizer):
        self.x = np.concatenate([states.normalize(e.observations[:-1]) for e in dataset.episodes])
        self.u = np.concatenate([actions.normalize(e.actions) for e in dataset.episodes])
        self.reward = np.concatenate([e.rewards for e in dataset.episodes]).astype(np.float32)
        flags = []
        for e in dataset.episodes:
            f = np.zeros(e.length, np.float32)
            f[-1] = float(e.terminated)
            flags.append(f)
        self.terminal = np.concatenate(flags)
        self.cost = (np.concatenate([e.costs for e in dataset.episodes]).astype(np.float32)
                     if dataset.has_costs else None)
        self._index = None  # all transitions; a shard's own otherwise

    def __len__(self) -> int:
        """Transitions this sampler draws from (a shard's own)."""
        return len(self.x) if self._index is None else len(self._index)

    def shard(self, rank: int, world_size: int) -> "TransitionSampler":
        """The transitions of one rank of `world_size` (every world_size-th); shard(0, 1) is self."""
        if world_size == 1:
            return self
        if len(self.x) < world_size:
            raise ValueError(f"{len(self.x)} transitions cannot be shared by {world_size} processes")
        out = copy.copy(self)
        out._index = np.arange(rank, len(self.x), world_size)
        return out

    def table_bytes(self) -> int:
        """The bytes the transitions take on a device (DeviceTransitions)."""
        tables = (self.x, self.u, self.reward, self.terminal) + ((self.cost,) if self.cost is not None else ())
        return sum(t.nbytes for t in tables) + 8 * len(self)

    def on_device(self, device: torch.device | str) -> "DeviceTransitions":
        """These transitions on `device`, drawn there (DeviceTransitions)."""
        return DeviceTransitions(self, device)

    def sample(self, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
        i = rng.integers(0, len(self.x), size=batch) if self._index is None else \
            self._index[rng.integers(0, len(self._index), size=batch)]
        out = {"x": self.x[i], "u": self.u[i], "reward": self.reward[i], "terminal": self.terminal[i]}
        if self.cost is not None:
            out["cost"] = self.cost[i]
        return out


class DeviceTransitions:
    """A TransitionSampler's transitions on a torch device, drawn there with a torch.Generator."""

    def __init__(self, host: TransitionSampler, device: torch.device | str):
        tables = {"x": host.x, "u": host.u, "reward": host.reward, "terminal": host.terminal}
        if host.cost is not None:
            tables["cost"] = host.cost
        self.tables = {k: _on(v, device) for k, v in tables.items()}
        index = np.arange(len(host.x)) if host._index is None else host._index
        self.index = _on(index.astype(np.int64), device)

    def __len__(self) -> int:
        return len(self.index)

    def sample(self, gen: torch.Generator, batch: int) -> dict[str, torch.Tensor]:
        i = self.index[torch.randint(len(self.index), (batch,), generator=gen, device=self.index.device)]
        return {k: v[i] for k, v in self.tables.items()}
