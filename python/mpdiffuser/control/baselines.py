"""Offline RL baselines from d3rlpy (IQL, TD3+BC) on this project's datasets, as policies of the
evaluation protocol (`reset(seed)`, `act(observation)`), so that they run on the same data and the
same evaluation starts as MPDiffuser and behaviour cloning.

d3rlpy is an optional install (`bash scripts/install.sh --baselines`): it pins gymnasium 1.0.0,
but fits and predicts with this project's gymnasium and NumPy when installed without that pin.
Hyper-parameters are d3rlpy's reproduction settings for the D4RL locomotion tasks (IQL: expectile
0.7, temperature 3, rewards scaled by 1000 / the data's return range, cosine actor learning rate;
TD3+BC: alpha 2.5, standardized observations), with the step count ours to choose.
"""

from __future__ import annotations

import contextlib
import io
import os
import time

import numpy as np

from mpdiffuser.data.dataset import OfflineDataset

ALGORITHMS = ("iql", "td3+bc")
INSTALL_HINT = "the offline RL baselines need d3rlpy: run `bash scripts/install.sh --baselines`"


def require_d3rlpy():
    """The d3rlpy module, or ImportError with the install command."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # gym's import-time notice about NumPy 2
            import d3rlpy
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    import logging

    import structlog

    # d3rlpy logs every epoch's metrics through structlog at info level: warnings only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return d3rlpy


def to_mdp_dataset(data: OfflineDataset):
    """Our episodes as a d3rlpy MDPDataset: one step per action, the last one flagged terminal
    when the robot fell, timeout when the episode was cut (d3rlpy then drops that last step's
    transition, having no next observation for it)."""
    d3rlpy = require_d3rlpy()
    observations, actions, rewards, terminals, timeouts = [], [], [], [], []
    for e in data.episodes:
        steps = len(e.actions)
        if steps == 0:
            continue
        observations.append(e.observations[:-1])
        actions.append(e.actions)
        rewards.append(e.rewards)
        end = np.zeros(steps, np.float32)
        end[-1] = 1.0
        terminals.append(end if e.terminated else np.zeros(steps, np.float32))
        timeouts.append(np.zeros(steps, np.float32) if e.terminated else end)
    return d3rlpy.dataset.MDPDataset(np.concatenate(observations), np.concatenate(actions),
                                     np.concatenate(rewards)[:, None], np.concatenate(terminals),
                                     np.concatenate(timeouts))


class OfflineRLPolicy:
    """A fitted d3rlpy algorithm as a deterministic policy (its greedy action)."""

    def __init__(self, algo, name: str):
        self.algo, self.name = algo, name

    def reset(self, seed: int) -> None:  # deterministic: nothing to reseed
        pass

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self.algo.predict(np.asarray(observation, np.float32)[None])[0]

    @classmethod
    def train(cls, algorithm: str, data: OfflineDataset, steps: int, seed: int = 0, device: str = "cpu",
              progress: bool = True) -> tuple["OfflineRLPolicy", dict]:
        """Fit `algorithm` ("iql" or "td3+bc") for `steps` gradient steps on `data`; returns the
        policy and {seconds}."""
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        d3rlpy = require_d3rlpy()
        d3rlpy.seed(seed)
        dataset = to_mdp_dataset(data)
        if algorithm == "iql":
            config = d3rlpy.algos.IQLConfig(
                actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256, weight_temp=3.0,
                max_weight=100.0, expectile=0.7,
                reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0),
                actor_optim_factory=d3rlpy.optimizers.AdamFactory(
                    lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=steps)))
        else:
            config = d3rlpy.algos.TD3PlusBCConfig(
                actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256, target_smoothing_sigma=0.2,
                target_smoothing_clip=0.5, alpha=2.5, update_actor_interval=2,
                observation_scaler=d3rlpy.preprocessing.StandardObservationScaler())
        algo = config.create(device=device)
        started = time.perf_counter()
        quiet = os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true")  # mpdiffuser --quiet
        algo.fit(dataset, n_steps=steps, n_steps_per_epoch=min(steps, 1000), show_progress=progress and not quiet,
                 logger_adapter=d3rlpy.logging.NoopAdapterFactory(), save_interval=10**9)
        return cls(algo, algorithm), {"seconds": time.perf_counter() - started}
