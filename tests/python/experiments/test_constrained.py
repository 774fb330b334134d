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
