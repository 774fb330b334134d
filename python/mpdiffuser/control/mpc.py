"""The MPC policy (design section 3.2): plan at every step, execute the first action(s), replan.

The plan at control step t uses seed `seed + t`, so an episode is reproducible from `reset(seed)`.
With options.warm_start_level > 0 every plan after an episode's first starts from the previous
plan's window (shifted by the executed actions, re-noised to that level); `reset` starts cold.
For constrained tasks the policy keeps the episode's remaining cost budget: the models are
conditioned on it (cost limit l) and selection keeps candidates whose predicted window cost is
within the remaining budget scaled to the window (b = remaining * H / remaining steps).
With options.max_plan_ms > 0 (a soft deadline) the policy counts the plans that overran it
(`overruns`; evaluate reports them); the plan is used all the same.
"""

from __future__ import annotations

import time

import numpy as np

from mpdiffuser.config import SamplerOptions


class MPCPolicy:
    """`act(observation) -> action` over any sampler with `plan(state, seed, options) -> Plan`."""

    def __init__(self, sampler, options: SamplerOptions | None = None, episode_budget: float | None = None,
                 episode_length: int = 1000):
        self.sampler = sampler
        self.options = options or sampler.defaults  # every sampler plans with its stored defaults by default
        if episode_budget is not None and episode_budget < 0:
            raise ValueError(f"episode_budget must be >= 0, got {episode_budget}")
        self.episode_budget = episode_budget
        self.episode_length = episode_length
        self.state_dim = sampler.spec.state_dim
        self.latencies_ms: list[float] = []
        self.overruns = 0  # plans longer than options.max_plan_ms (when it is > 0)
        self.reset(0)

    def reset(self, seed: int) -> None:
        """Start an episode: plans use seeds seed, seed + 1, ...; the cost budget is refilled."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed, self.step = int(seed), 0
        self.remaining_budget = self.episode_budget
        self._queue: list[np.ndarray] = []
        self.last_plan = None

    def observe_cost(self, cost: float) -> None:
        """Subtract the cost the last action incurred from the episode budget."""
        if self.remaining_budget is not None:
            self.remaining_budget = max(self.remaining_budget - float(cost), 0.0)

    def _options(self) -> SamplerOptions:
        if self.remaining_budget is None:
            return self.options
        steps_left = max(self.episode_length - self.step, 1)
        horizon = self.sampler.spec.model.horizon
        return self.options.replace(cost_limit=self.remaining_budget,
                                    cost_budget=self.remaining_budget * min(horizon / steps_left, 1.0))

    def act(self, observation: np.ndarray) -> np.ndarray:
        """observation: [dx] raw env observation -> action [du] in env units."""
        obs = np.asarray(observation, dtype=np.float32)
        if obs.shape != (self.state_dim,):
            raise ValueError(f"observation must have shape ({self.state_dim},), got {obs.shape}")
        if not np.isfinite(obs).all():
            raise ValueError("observation holds NaN or infinity")
        if not self._queue:
            started = time.perf_counter()
            options = self._options()
            if options.warm_start_level > 0 and self.last_plan is not None:
                plan = self.sampler.plan(obs, self.seed + self.step, options, warm_start=self.last_plan.window)
            else:
                plan = self.sampler.plan(obs, self.seed + self.step, options)
            self.latencies_ms.append((time.perf_counter() - started) * 1e3)
            self.overruns += 0.0 < options.max_plan_ms < self.latencies_ms[-1]
            self.last_plan = plan
            self._queue = list(plan.actions)
        self.step += 1
        return self._queue.pop(0)

    def predict(self, observation: np.ndarray, state=None, episode_start=None, deterministic: bool = True):
        """stable-baselines3's policy call: (action, None); the plan's own seed decides its noise."""
        return self.act(observation), None
