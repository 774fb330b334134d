"""`mpdiffuser data inspect` and `data convert`: the report's numbers, its warnings, and round
trips between the formats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mpdiffuser import cli
from mpdiffuser.data.dataset import load_dataset
from mpdiffuser.data.inspect import convert_dataset, inspect_dataset
from tests.python.conftest import make_toy_dataset


def test_the_report_counts_what_the_data_holds():
    data = make_toy_dataset(seed=3, env_id="Hopper-v5", state_dim=11, action_dim=3)
    report = inspect_dataset(data, "toy")
    returns = data.returns()
    assert report["episodes"] == len(data.episodes) and report["transitions"] == data.num_transitions
    assert report["terminated"] == sum(e.terminated for e in data.episodes)
    assert report["return"]["mean"] == pytest.approx(returns.mean())
    assert report["d4rl_score"]["mean"] == pytest.approx(100 * (returns.mean() + 20.272305) / (3234.3 + 20.272305))
    obs = np.concatenate([e.observations for e in data.episodes])
    np.testing.assert_allclose(report["ranges"]["observations"]["high"], obs.max(axis=0))
    assert report["warnings"] == []


def test_the_report_warns_about_what_would_hurt_training():
    data = make_toy_dataset(seed=3, env_id="Hopper-v5", state_dim=11, action_dim=3)
    data.episodes[0].observations[2, 4] = np.nan
    for e in data.episodes:
        e.actions[:, 0] *= 3.0
        e.observations[:, 9] = 1.5
    warnings = "\n".join(inspect_dataset(data, "odd")["warnings"])
    assert "1 observations values are NaN or infinite" in warnings
    assert "outside the environment's action space" in warnings and "1 observation dimension(s) never change (9 = 1.5)" in warnings
    unnamed = make_toy_dataset(seed=3, env_id=None)
    for e in unnamed.episodes:
        e.terminated = False
    warnings = "\n".join(inspect_dataset(unnamed, "plain")["warnings"])
    assert "no D4RL reference returns" in warnings and "no episode ends in a terminal state" in warnings


def test_convert_round_trips_and_the_cli_reports(tmp_path, capsys):
    source = tmp_path / "toy.hdf5"
    make_toy_dataset(seed=4, env_id="Hopper-v5", state_dim=11, action_dim=3).save_hdf5(source)
    convert_dataset(str(source), str(tmp_path / "toy.npz"))
    convert_dataset(str(tmp_path / "toy.npz"), str(tmp_path / "back.hdf5"))
    a, b = load_dataset(source).to_flat(), load_dataset(tmp_path / "back.hdf5").to_flat()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="expected a .hdf5/.h5 or .npz file"):
        convert_dataset(str(source), str(tmp_path / "toy.csv"))
    assert cli.main(["data", "inspect", str(source), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "Hopper-v5, 12 episodes" in out and "D4RL score" in out
    assert json.loads((tmp_path / "r.json").read_text())["episodes"] == 12
    assert cli.main(["data", "inspect", str(tmp_path / "missing.hdf5")]) == 2
    assert "dataset file not found" in capsys.readouterr().err
