"""The d3rlpy offline RL baselines (optional install: scripts/install.sh --baselines; CI installs
them): our episodes as d3rlpy's dataset, IQL and TD3+BC fitted and acting through the evaluation
protocol, and the locomotion experiment running them beside MPDiffuser on the same starts."""

from __future__ import annotations

import numpy as np
import pytest

from tests.python.conftest import make_toy_dataset

pytest.importorskip("d3rlpy", reason="the offline RL baselines are an optional install (scripts/install.sh --baselines)")


def test_episodes_become_transitions_with_terminals_and_timeouts():
    from mpdiffuser.control.baselines import to_mdp_dataset

    data = make_toy_dataset(seed=1)
    mdp = to_mdp_dataset(data)
    # d3rlpy has no next observation for a cut episode's last step, so it drops that transition
    cut = sum(not e.terminated for e in data.episodes)
    assert mdp.transition_count == data.num_transitions - cut
    assert len(mdp.episodes) == len(data.episodes)
    for ours, theirs in zip(data.episodes, mdp.episodes):
        np.testing.assert_array_equal(theirs.observations, ours.observations[:-1])
        np.testing.assert_array_equal(theirs.actions, ours.actions)
        assert bool(theirs.terminated) == ours.terminated  # a fall is terminal; a cut episode is a timeout


@pytest.mark.parametrize("algorithm", ["iql", "td3+bc"])
def test_baselines_fit_and_act(algorithm):
    from mpdiffuser.control.baselines import OfflineRLPolicy

    data = make_toy_dataset(seed=2)
    policy, info = OfflineRLPolicy.train(algorithm, data, steps=20, seed=0, progress=False)
    policy.reset(0)
    action = policy.act(data.episodes[0].observations[0])
    assert action.shape == (data.action_dim,) and np.isfinite(action).all() and info["seconds"] > 0
    np.testing.assert_array_equal(policy.act(data.episodes[0].observations[0]), action)  # deterministic


def test_bad_baseline_settings_fail_with_the_reason():
    from mpdiffuser.control.baselines import OfflineRLPolicy
    from mpdiffuser.experiments.locomotion import LocomotionConfig

    with pytest.raises(ValueError, match="algorithm must be one of iql, td3\\+bc"):
        OfflineRLPolicy.train("cql", make_toy_dataset(), steps=1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        OfflineRLPolicy.train("iql", make_toy_dataset(), steps=0)
    with pytest.raises(ValueError, match="unknown baselines \\['cql'\\]"):
        LocomotionConfig(baselines=("cql",))


def test_locomotion_runs_the_baselines_on_the_same_starts(tmp_path):
    from mpdiffuser.data.generate import GenerateConfig, generate
    from mpdiffuser.experiments.locomotion import LocomotionConfig, run_locomotion
    from tests.python.experiments.tiny import TINY

    data = generate(GenerateConfig("Hopper-v5", "medium", 600, policy_steps=400), tmp_path / "data", progress=False)
    config = LocomotionConfig.quick(datasets=(str(data),), out_dir=str(tmp_path / "out"),
                                    policy_dir=str(tmp_path / "policies"), bc_steps=40, baselines=("iql", "td3+bc"),
                                    baseline_steps=30, lambdas=(1.0,), schedules=((1, 0),), **TINY)
    report = run_locomotion(config, progress=False)
    methods = [e["method"] for e in report["summary"]]
    assert set(methods) == {"MPDiffuser", "planner only (lambda=0)", "behaviour cloning", "IQL (d3rlpy)",
                            "TD3+BC (d3rlpy)"}
    assert len(report["episodes"]) == 5 * config.episodes
    assert (tmp_path / "out" / "locomotion_scores.png").stat().st_size > 5000


def test_the_baselines_install_keeps_every_command_quiet():
    """stable-baselines3 imports gym whenever it is installed; with gym-notices beside it, gym
    prints a deprecation notice to stderr in every command. The install leaves gym-notices out."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", "import stable_baselines3, d3rlpy, mpdiffuser.control.baselines"],
                            capture_output=True, text=True, check=True)
    assert "Gym has been unmaintained" not in result.stderr, result.stderr
