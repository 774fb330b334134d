"""Plan consistency measures what it says: zero for plans that are the simulator's own rollouts,
a known error for plans whose states are off by a known amount."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mpdiffuser.config import SamplerOptions
from mpdiffuser.control.consistency import plan_consistency
from mpdiffuser.data.normalizer import MinMaxNormalizer
from mpdiffuser.envs import make_env
from mpdiffuser.sampling.reference import Plan

OFFSET = 0.1  # normalized units added to every planned state at lambda < 1


class OracleSampler:
    """Plans by simulating Hopper from the observed state (x = 0: Hopper's dynamics do not depend on
    it): the window's states are exactly what its actions do, and V is exactly what they earn.
    With lambda < 1 its states are shifted by OFFSET, so their error is known."""

    horizon = 8

    def __init__(self):
        self.env = make_env("Hopper-v5")
        self.env.reset(seed=0)
        rng = np.random.default_rng(0)
        states = np.concatenate([rng.uniform(-3, 3, (64, 11)), np.full((1, 11), 12.0), np.full((1, 11), -12.0)])
        self.spec = SimpleNamespace(states=MinMaxNormalizer.fit(states.astype(np.float32)),
                                    actions=MinMaxNormalizer.fit(np.array([[-1.0] * 3, [1.0] * 3], np.float32)),
                                    state_dim=11, action_dim=3, model=SimpleNamespace(horizon=self.horizon))
        self.defaults = SamplerOptions(num_candidates=1)

    def plan(self, obs, seed, options):
        rng = np.random.default_rng(seed)
        actions = self.spec.actions.normalize(rng.uniform(-0.3, 0.3, (self.horizon, 3)).astype(np.float32))
        u = self.spec.actions.unnormalize(actions)  # what the replay will execute
        qpos = np.concatenate([[0.0], obs[:5]])
        self.env.unwrapped.set_state(qpos, np.asarray(obs[5:], dtype=np.float64))
        states, value = [], 0.0
        for h in range(self.horizon):
            o, r, terminated, _, _ = self.env.step(u[h])
            states.append(self.spec.states.normalize(o.astype(np.float32)))
            value += r
            if terminated:  # the rest of the window is never compared
                states += [states[-1]] * (self.horizon - len(states))
                break
        states = np.asarray(states) + (0.0 if options.dynamics_weight == 1.0 else OFFSET)
        window = np.concatenate([states, actions], axis=1).astype(np.float32)
        return Plan(actions=u[:1], index=0, values=np.array([value]), costs=None, window=window,
                    windows=window[None])


def test_oracle_plans_are_consistent_and_offsets_are_measured():
    report = plan_consistency(OracleSampler(), "Hopper-v5", lambdas=(1.0, 0.0), episodes=2, max_steps=25,
                              progress=False)
    assert report["states"] == sum(report["steps"]) and len(report["steps"]) == 2
    exact, shifted = report["lambdas"]["1"], report["lambdas"]["0"]
    assert exact["plans"] == shifted["plans"] == report["states"]
    # Replays start from the true x (not 0) and the observation clips velocities at 10: float noise only.
    assert exact["state_error_first"] < 1e-4 and exact["state_error_window"] < 1e-4
    assert exact["predicted_value"] == pytest.approx(exact["window_return"], abs=1e-3)
    assert exact["value_return_correlation"] == pytest.approx(1.0, abs=1e-6)
    assert shifted["state_error_first"] == pytest.approx(OFFSET, abs=1e-4)
    assert shifted["state_error_window"] == pytest.approx(OFFSET, abs=1e-4)
    assert shifted["window_return"] == pytest.approx(exact["window_return"])  # the same actions


def test_bad_arguments():
    sampler = OracleSampler()
    with pytest.raises(ValueError, match="lambdas"):
        plan_consistency(sampler, "Hopper-v5", lambdas=(2.0,))
    with pytest.raises(ValueError, match="episodes"):
        plan_consistency(sampler, "Hopper-v5", episodes=0)
    with pytest.raises(ValueError, match="cost budget"):
        plan_consistency(sampler, "Hopper-v5", options=SamplerOptions(cost_budget=1.0, cost_limit=1.0))


def test_replays_run_on_the_changed_robot():
    """The oracle simulates the nominal Hopper; on a heavier robot its plans no longer come true."""
    from mpdiffuser.envs import PhysicsChange

    report = plan_consistency(OracleSampler(), "Hopper-v5", lambdas=(1.0,), max_steps=20,
                              physics=PhysicsChange(mass=2.0), progress=False)
    assert report["lambdas"]["1"]["state_error_window"] > 1e-3
