"""The constrained experiment end to end on tiny settings (seconds; --quick takes minutes)."""

from __future__ import annotations

import csv
import dataclasses
import importlib

import pytest

from tests.python.experiments.tiny import TINY


def test_constrained_tiny_end_to_end(tmp_path, monkeypatch):
    """Every method at every budget (BC-Safe where the data has an episode within it); the
    unbudgeted methods' episodes are scored against each budget; a rerun reads every method's
    episodes back (no training, no episode), and another BC step count redoes only the two BCs."""
    from mpdiffuser.experiments.constrained import (BC_ALL, BC_SAFE, METHODS, NO_BUDGET, UNBUDGETED,
                                                    ConstrainedConfig, run_constrained)

    config = ConstrainedConfig.quick(out_dir=str(tmp_path / "out"), policy_dir=str(tmp_path / "policies"),
                                     bc_steps=40, cautious_steps=300, budgets=(10.0, 1000.0), **TINY)
    report = run_constrained(config, progress=False)
    data = report["data"]["Hopper-v5"]
    assert data["episodes"] > 0 and data["within_budget"]["1000"] == data["episodes"]
    assert (tmp_path / "policies" / "sac-Hopper-v5-300-pen1-s0.zip").exists()  # the cautious policy's own steps
    expected = {(b, m) for b in config.budgets for m in METHODS}
    if data["within_budget"]["10"] == 0:
        expected.discard((10.0, BC_SAFE))
    assert {(e["budget"], e["method"]) for e in report["summary"]} == expected
    scale = config.max_steps / 1000
    for r in report["episodes"]:
        assert r["normalized_cost"] == pytest.approx(r["cost"] / (r["budget"] * scale))
        assert r["safe"] == float(r["cost"] <= r["budget"] * scale)
    for method in UNBUDGETED:  # one set of episodes, scored against each budget
        runs = [[r["return"] for r in report["episodes"] if r["method"] == method and r["budget"] == b]
                for b in config.budgets]
        assert all(f == runs[0] for f in runs) and len(runs[0]) == config.episodes
    assert (tmp_path / "out" / "constrained.png").stat().st_size > 5000
    assert len(list(csv.DictReader(open(tmp_path / "out" / "constrained.csv")))) == len(report["episodes"])

    evaluate_module = importlib.import_module("mpdiffuser.control.evaluate")
    real, evaluated = evaluate_module.evaluate, []
    monkeypatch.setattr(evaluate_module, "evaluate",
                        lambda *a, **k: evaluated.append(k.get("desc")) or real(*a, **k))
    assert run_constrained(config, progress=False)["episodes"] == report["episodes"] and evaluated == []
    changed = run_constrained(dataclasses.replace(config, bc_steps=30), progress=False)
    assert {d.split(" ", 1)[1].rsplit(" ", 1)[0] for d in evaluated} == {BC_ALL, BC_SAFE}
    keep = lambda rep: [r for r in rep["episodes"] if r["method"] not in (BC_ALL, BC_SAFE)]  # noqa: E731
    assert keep(changed) == keep(report)
    assert NO_BUDGET in UNBUDGETED


def test_mixed_data_records_the_cautious_policys_steps_only_when_they_differ():
    from mpdiffuser.data.generate import GenerateConfig

    same = GenerateConfig("Hopper-v5", "mixed", 100, policy_steps=500, constrained=True, cautious_steps=500)
    assert same.cautious_steps is None and "cautious_steps" not in same.recipe()  # as files made before the field
    other = GenerateConfig("Hopper-v5", "mixed", 100, policy_steps=500, constrained=True, cautious_steps=200)
    assert other.cautious_policy_steps == 200 and other.recipe()["cautious_steps"] == 200
    assert GenerateConfig("Hopper-v5", "medium", 100, cautious_steps=200).cautious_steps is None  # not a mixed kind
    with pytest.raises(ValueError, match="cautious_steps must be positive"):
        GenerateConfig("Hopper-v5", "mixed", 100, constrained=True, cautious_steps=0)


def test_a_lowered_velocity_limit_reaches_the_data_the_cautious_policy_and_the_evaluation(tmp_path):
    """velocity_limit (for robots too slow for DSRL's limit): the mixed data, the cautious policy's
    cache name and the random data carry it, the same motion pays more cost under it, and each
    method's episode costs are those of an evaluation at that limit."""
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.data.generate import GenerateConfig, rollout
    from mpdiffuser.experiments.constrained import NO_BUDGET, ConstrainedConfig, run_constrained
    from mpdiffuser.sampling.sampler import Sampler

    config = ConstrainedConfig.quick(out_dir=str(tmp_path / "out"), policy_dir=str(tmp_path / "policies"),
                                     bc_steps=40, cautious_steps=300, budgets=(10.0,), velocity_limit=0.2, **TINY)
    report = run_constrained(config, progress=False)
    assert report["data"]["Hopper-v5"]["velocity_limit"] == 0.2 and report["config"]["velocity_limit"] == 0.2
    assert (tmp_path / "policies" / "sac-Hopper-v5-300-pen1-v0.2-s0.zip").exists()
    data = tmp_path / "out" / "data"
    mixed = load_dataset(data / "hopper-mixed-cost-v0.2-s0.hdf5")
    assert mixed.metadata["recipe"]["velocity_limit"] == 0.2
    assert load_dataset(data / "hopper-random-cost-v0.2-s0.hdf5").metadata["recipe"]["velocity_limit"] == 0.2
    at_dsrl = rollout("Hopper-v5", None, 300, 0, True, "random", progress=False)
    at_low = rollout("Hopper-v5", None, 300, 0, True, "random", progress=False, limit=0.2)
    assert [e.rewards.tolist() for e in at_dsrl] == [e.rewards.tolist() for e in at_low]  # the same motion
    assert all((low.costs >= dsrl.costs).all() for low, dsrl in zip(at_low, at_dsrl))
    assert sum(e.costs.sum() for e in at_low) > sum(e.costs.sum() for e in at_dsrl)
    sampler = Sampler(tmp_path / "out" / "models" / "hopper" / "s0" / "model.safetensors", env_id="Hopper-v5")
    largest = float(max(e.costs.sum() for e in mixed.episodes))  # the experiment's cost condition without a budget
    plain = evaluate(MPCPolicy(sampler, sampler.defaults.replace(cost_limit=largest, cost_budget=None)), "Hopper-v5",
                     config.episodes, 10_000, config.max_steps, constrained=True, progress=False, limit=0.2)
    assert [r["cost"] for r in report["episodes"] if r["method"] == NO_BUDGET] == [e.cost for e in plain.episodes]
    with pytest.raises(ValueError, match="positive speed"):
        dataclasses.replace(config, velocity_limit=0.0)
    with pytest.raises(ValueError, match="constrained data only"):
        GenerateConfig("Hopper-v5", "medium", 100, velocity_limit=1.0)
    same = GenerateConfig("Hopper-v5", "random", 100, constrained=True, velocity_limit=0.7402)
    assert same.velocity_limit is None and same.name == "hopper-random-cost-s0"  # DSRL's limit: the old name


def test_constrained_picks_g_per_budget_by_validation_within_the_budget(tmp_path):
    """With return_targets the tuned methods run validation episodes per budget and g from start
    states the test never uses, take the highest return within the budget (or the lowest cost),
    and their test episodes are a plain run of that g under that budget."""
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.experiments.constrained import TUNED_METHODS, ConstrainedConfig, run_constrained
    from mpdiffuser.sampling.sampler import Sampler

    config = ConstrainedConfig.quick(out_dir=str(tmp_path / "out"), policy_dir=str(tmp_path / "policies"),
                                     bc_steps=40, cautious_steps=300, budgets=(10.0,), return_targets=(0.3, 1.0),
                                     validation_episodes=2, **TINY)
    report = run_constrained(config, progress=False)
    sampler = Sampler(tmp_path / "out" / "models" / "hopper" / "s0" / "model.safetensors", env_id="Hopper-v5")
    budget = 10.0 * config.max_steps / 1000
    for method, lam in zip(TUNED_METHODS, (1.0, 0.0)):
        tried = [r for r in report["validation"] if r["method"] == method]
        assert [r["return_target"] for r in tried] == [0.3, 1.0]
        assert all(r["start_seed"] == 15_000 and r["episodes"] == 2 for r in tried)
        within = [r for r in tried if r["cost_mean"] <= budget]
        best = (max(within, key=lambda r: r["return_mean"]) if within
                else min(tried, key=lambda r: r["cost_mean"]))["return_target"]
        policy = MPCPolicy(sampler, sampler.defaults.replace(dynamics_weight=lam, return_target=best),
                           episode_budget=budget, episode_length=config.max_steps)
        plain = evaluate(policy, "Hopper-v5", config.episodes, 10_000, config.max_steps, constrained=True,
                         progress=False)
        assert [r["cost"] for r in report["episodes"] if r["method"] == method] == [e.cost for e in plain.episodes]
        assert [r["return"] for r in report["episodes"] if r["method"] == method] == \
            [e.episode_return for e in plain.episodes]
    assert len(list(csv.DictReader(open(tmp_path / "out" / "constrained_validation.csv")))) == 4
    with pytest.raises(ValueError, match="validation_episodes >= 1"):
        dataclasses.replace(config, validation_episodes=0)
