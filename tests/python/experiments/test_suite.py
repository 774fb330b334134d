"""The evaluation suite's pieces (changed physics, cost penalty, mixed-safety data, behaviour
cloning, statistics) and its locomotion, constrained and novel-dynamics experiments end to end on
tiny settings (seconds each; the --quick settings take minutes)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mpdiffuser import cli
from mpdiffuser.config import TrainConfig
from mpdiffuser.data.dataset import Episode, OfflineDataset, load_dataset
from mpdiffuser.data.generate import GenerateConfig, generate
from mpdiffuser.data.normalizer import MinMaxNormalizer
from mpdiffuser.envs import CostPenalty, PhysicsChange, make_env
from mpdiffuser.experiments.common import mean_stderr, summarize

TINY = dict(policy_steps=400, task_transitions=800, random_transitions=500, train_steps=60, ranker_steps=40,
            episodes=2, max_steps=80)


def test_physics_change_scales_the_model():
    nominal = make_env("Hopper-v5").unwrapped.model
    changed = make_env("Hopper-v5", physics=PhysicsChange(mass=2.0, friction=0.5, gear=0.25)).unwrapped.model
    np.testing.assert_allclose(changed.body_mass, 2.0 * nominal.body_mass)
    np.testing.assert_allclose(changed.body_inertia, 2.0 * nominal.body_inertia)
    np.testing.assert_allclose(changed.geom_friction[:, 0], 0.5 * nominal.geom_friction[:, 0])
    np.testing.assert_allclose(changed.geom_friction[:, 1:], nominal.geom_friction[:, 1:])
    np.testing.assert_allclose(changed.actuator_gear[:, 0], 0.25 * nominal.actuator_gear[:, 0])
    assert PhysicsChange(mass=1.5, gear=0.7).tag == "mass1.5-gear0.7" and PhysicsChange().tag == "nominal"
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive finite"):
            PhysicsChange(friction=bad)


def test_changed_physics_changes_the_motion_and_the_nominal_env_is_untouched():
    def trajectory(physics):
        env = make_env("Hopper-v5", physics=physics)
        obs, _ = env.reset(seed=3)
        for _ in range(20):
            obs, *_ = env.step(np.full(3, 0.8, np.float32))
        return obs

    nominal = trajectory(None)
    assert not np.allclose(trajectory(PhysicsChange(gear=0.3)), nominal, atol=1e-3)
    np.testing.assert_array_equal(trajectory(None), nominal)  # changes never leak into a fresh env


def test_cost_penalty_subtracts_the_velocity_cost():
    plain, penalized = make_env("Hopper-v5", constrained=True), CostPenalty(make_env("Hopper-v5", constrained=True), 2.5)
    plain.reset(seed=0), penalized.reset(seed=0)
    costs = 0.0
    for _ in range(60):
        action = np.ones(3, np.float32)  # a full push: the hopper lunges forward faster than 0.74 m/s
        _, r, term, _, info = plain.step(action)
        _, r_pen, _, _, info_pen = penalized.step(action)
        assert info["cost"] == info_pen["cost"] and r_pen == pytest.approx(r - 2.5 * info["cost"])
        costs += info["cost"]
        if term:
            break
    assert costs > 0  # the test saw a penalty


def test_generate_validates_kinds_and_refuses_a_file_of_another_recipe(tmp_path):
    with pytest.raises(ValueError, match="constrained"):
        GenerateConfig("Hopper-v5", "mixed")
    with pytest.raises(ValueError, match="medium-replay"):
        GenerateConfig("Hopper-v5", "medium-replay", constrained=True)
    path = generate(GenerateConfig("Hopper-v5", "random", 200), tmp_path, progress=False)
    assert generate(GenerateConfig("Hopper-v5", "random", 200), tmp_path, progress=False) == path
    with pytest.raises(ValueError, match="another recipe .*transitions"):
        generate(GenerateConfig("Hopper-v5", "random", 300), tmp_path, progress=False)


def test_medium_replay_after_a_cached_policy_and_mixed_safety_data(tmp_path):
    medium = load_dataset(generate(GenerateConfig("Hopper-v5", "medium", 300, policy_steps=300), tmp_path, progress=False))
    # The policy is now cached: medium-replay must still find its replay buffer (saved beside it).
    replay = load_dataset(generate(GenerateConfig("Hopper-v5", "medium-replay", 300, policy_steps=300), tmp_path,
                                   progress=False))
    assert replay.num_transitions == 300 and medium.num_transitions == 300
    mixed = load_dataset(generate(GenerateConfig("Hopper-v5", "mixed", 300, policy_steps=300, constrained=True,
                                                 cost_penalty=3.0), tmp_path, progress=False))
    assert mixed.has_costs and mixed.num_transitions == 600
    assert mixed.metadata["recipe"]["cost_penalty"] == 3.0
    assert (tmp_path / "policies" / "sac-Hopper-v5-300-pen3-s0.zip").exists()


def test_behaviour_cloning_fits_a_known_policy():
    from mpdiffuser.control.bc import BCPolicy

    rng = np.random.default_rng(0)
    A = rng.normal(size=(2, 4)) * 0.5
    policy = lambda s: 3.0 * np.tanh(s @ A.T)  # noqa: E731  actions in [-3, 3]
    episodes = []
    for _ in range(20):
        s = rng.uniform(-1, 1, size=(51, 4)).astype(np.float32)
        episodes.append(Episode(s, policy(s[:-1]), np.zeros(50), False))
    data = OfflineDataset(episodes)
    obs = np.concatenate([e.observations for e in episodes])
    act = np.concatenate([e.actions for e in episodes])
    bc, info = BCPolicy.train(data, MinMaxNormalizer.fit(obs), MinMaxNormalizer.fit(act),
                              TrainConfig(steps=1200, batch_size=128, learning_rate=1e-3), width=64, layers=2,
                              progress=False)
    test_states = rng.uniform(-1, 1, size=(50, 4)).astype(np.float32)
    errors = np.abs(np.stack([bc.act(s) for s in test_states]) - policy(test_states))
    assert info["final_loss"] < 0.01 and errors.mean() < 0.15  # 2.5% of the action range
    assert bc.act(test_states[0]).dtype == np.float32 and bc.act(test_states[0]).shape == (2,)


def test_statistics():
    assert mean_stderr([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0 / np.sqrt(3)))
    assert mean_stderr([5.0]) == (5.0, 0.0)
    rows = [{"t": "a", "m": "x", "s": 1.0}, {"t": "a", "m": "x", "s": 3.0}, {"t": "b", "m": "x", "s": 7.0}]
    out = summarize(rows, ("t", "m"), ("s",))
    assert [(e["t"], e["n"], e["s_mean"]) for e in out] == [("a", 2, 2.0), ("b", 1, 7.0)]
    assert out[0]["s_stderr"] == pytest.approx(1.0)


def test_locomotion_tiny_end_to_end_with_a_user_dataset(tmp_path):
    """Two tasks (one generated, one the user's own file), three methods, the sweeps; the sweep's
    lambda = 0 and lambda = 1 runs must reproduce the planner-only and MPDiffuser runs exactly
    (same models, same seeds), which checks that every method saw the same start states."""
    from mpdiffuser.experiments.locomotion import METHODS, LocomotionConfig, run_locomotion

    user_file = generate(GenerateConfig("Hopper-v5", "medium", 600, policy_steps=400), tmp_path / "mine", progress=False)
    config = LocomotionConfig.quick(envs=("Hopper-v5",), kinds=("medium",), out_dir=str(tmp_path / "out"),
                                    policy_dir=str(tmp_path / "policies"), bc_steps=60, **TINY)
    report = run_locomotion(config, progress=False)
    assert [e["task"] for e in report["summary"]] == ["hopper-medium"] * 3
    user = run_locomotion(LocomotionConfig.quick(datasets=(str(user_file),), out_dir=str(tmp_path / "out2"),
                                                 policy_dir=str(tmp_path / "policies"), bc_steps=60, **TINY), progress=False)
    assert {e["task"] for e in user["summary"]} == {"hopper-medium-s0"}
    rows = report["episodes"]
    assert len(rows) == len(METHODS) * config.episodes
    by = lambda method: [r["return"] for r in rows if r["method"] == method]  # noqa: E731
    sweep = lambda setting: [r["return"] for r in report["sweep_episodes"] if r["setting"] == setting]  # noqa: E731
    assert sweep("0") == by("planner only (lambda=0)") and sweep("1") == by("MPDiffuser")
    assert sweep("every step") == by("MPDiffuser")
    assert {e["setting"] for e in report["sweeps"]} == {"0", "0.5", "1", "every step", "every 4 steps", "last 5 steps"}
    out = tmp_path / "out"
    assert len(list(csv.DictReader(open(out / "locomotion.csv")))) == len(rows)
    assert json.loads((out / "locomotion.json").read_text())["summary"] == json.loads(json.dumps(report["summary"]))
    for png in ("locomotion_scores.png", "locomotion_sweeps.png"):
        assert (out / png).stat().st_size > 5000


def test_constrained_tiny_end_to_end(tmp_path):
    from mpdiffuser.experiments.constrained import METHODS, NO_BUDGET, ConstrainedConfig, run_constrained

    config = ConstrainedConfig.quick(out_dir=str(tmp_path / "out"), policy_dir=str(tmp_path / "policies"), **TINY)
    report = run_constrained(config, progress=False)
    assert report["data"]["Hopper-v5"]["episodes"] > 0
    assert {(e["budget"], e["method"]) for e in report["summary"]} == {(b, m) for b in config.budgets for m in METHODS}
    scale = config.max_steps / 1000
    for r in report["episodes"]:
        assert r["normalized_cost"] == pytest.approx(r["cost"] / (r["budget"] * scale))
        assert r["safe"] == float(r["cost"] <= r["budget"] * scale)
    # The budget-free run is one set of episodes, scored against each budget.
    free = [[r["return"] for r in report["episodes"] if r["method"] == NO_BUDGET and r["budget"] == b]
            for b in config.budgets]
    assert all(f == free[0] for f in free) and len(free[0]) == config.episodes
    assert (tmp_path / "out" / "constrained.png").stat().st_size > 5000
    assert len(list(csv.DictReader(open(tmp_path / "out" / "constrained.csv")))) == len(report["episodes"])


def test_dynamics_tiny_end_to_end_keeps_planner_and_ranker_byte_identical(tmp_path):
    from mpdiffuser.experiments.dynamics_shift import METHODS, DynamicsShiftConfig, run_dynamics_shift, sha256

    tiny = {k: v for k, v in TINY.items()}
    config = DynamicsShiftConfig.quick(shifts=(PhysicsChange(mass=1.5), PhysicsChange(gear=0.6)),
                                       out_dir=str(tmp_path / "out"), policy_dir=str(tmp_path / "policies"),
                                       shift_transitions=300, shift_random_transitions=200, finetune_steps=30, **tiny)
    report = run_dynamics_shift(config, progress=False)
    assert set(report["byte_identical"]) == {"mass1.5", "gear0.6"}
    for checks in report["byte_identical"].values():
        assert all(checks.values()) and checks["dynamics.pt changed"]
    models = tmp_path / "out" / "models"
    for name in ("planner.pt", "reward.pt"):
        assert sha256(models / "nominal" / name) == sha256(models / "mass1.5" / name)
    assert sha256(models / "nominal" / "dynamics.pt") != sha256(models / "mass1.5" / "dynamics.pt")
    robots = {(e["robot"], e["method"]) for e in report["summary"]}
    assert robots == {("nominal", METHODS[0]), ("nominal", METHODS[2])} | {(r, m) for r in ("mass1.5", "gear0.6")
                                                                          for m in METHODS}
    assert (tmp_path / "out" / "dynamics.png").stat().st_size > 5000
    # The changed robots' data were generated under the changed physics, on the nominal policy.
    assert (tmp_path / "out" / "data" / "hopper-medium-mass1.5-s0.hdf5").exists()
    assert load_dataset(tmp_path / "out" / "data" / "hopper-medium-gear0.6-s0.hdf5").metadata["recipe"]["physics"]["gear"] == 0.6


def test_experiment_cli_rejects_options_of_other_experiments():
    with pytest.raises(SystemExit, match="--hz applies to the quadruped"):
        cli.main(["experiment", "locomotion", "--quick", "--hz", "20"])
    with pytest.raises(SystemExit, match="--dataset applies to the locomotion"):
        cli.main(["experiment", "constrained", "--dataset", "x.hdf5"])
    with pytest.raises(SystemExit, match="one --env"):
        cli.main(["experiment", "dynamics", "--env", "Hopper-v5", "--env", "Walker2d-v5"])
