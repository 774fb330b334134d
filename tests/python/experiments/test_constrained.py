"""The constrained experiment end to end on tiny settings (seconds; --quick takes minutes)."""

from __future__ import annotations

import csv

import pytest

from tests.python.experiments.tiny import TINY


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
