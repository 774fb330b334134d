"""Robots the package never names: any gymnasium environment with 1-D Box observations and actions
generates data, trains, evaluates (raw returns where D4RL has no reference) and, for MuJoCo,
replays plans for consistency; others are refused with the reason."""

from __future__ import annotations

import json
import math

import pytest

from mpdiffuser import cli

TINY = ["--horizon", "4", "--diffusion-steps", "3", "--width", "32", "--layers", "2", "--batch-size", "16"]


@pytest.mark.parametrize("env_id, short", [("InvertedDoublePendulum-v5", "inverteddoublependulum"),
                                           ("Swimmer-v5", "swimmer")])
def test_an_unnamed_robot_generates_trains_and_controls(tmp_path, capsys, env_id, short):
    data_dir, bundle = tmp_path / "data", tmp_path / "bundle"
    assert cli.main(["generate-data", "--env", env_id, "--kind", "random", "--transitions", "600",
                     "--out", str(data_dir)]) == 0
    path = data_dir / f"{short}-random-s0.hdf5"
    assert cli.main(["train", "--bundle", str(bundle), "--data", str(path), "--steps", "10", *TINY]) == 0
    report = tmp_path / "eval.json"
    assert cli.main(["eval", "--bundle", str(bundle), "--backend", "cpu", "--episodes", "1", "--max-steps", "5",
                     "--json", str(report)]) == 0
    out = capsys.readouterr().out
    result = json.loads(report.read_text())
    assert result["env_id"] == env_id and 1 <= result["episodes"][0]["length"] <= 5
    assert math.isnan(result["score_mean"]) and f"no D4RL reference returns for {env_id}, raw return" in out
    assert cli.main(["consistency", str(bundle / "model.safetensors"), "--max-steps", "2", "--lambdas", "1",
                     "--threads", "1"]) == 0


def test_environments_mpdiffuser_cannot_plan_for_are_refused(tmp_path, capsys):
    assert cli.main(["generate-data", "--env", "CartPole-v1", "--kind", "random", "--transitions", "50",
                     "--out", str(tmp_path)]) == 2
    assert "its action space is Discrete(2)" in capsys.readouterr().err
    assert cli.main(["generate-data", "--env", "NoSuchRobot-v0", "--kind", "random", "--out", str(tmp_path)]) == 2
    assert "unknown environment 'NoSuchRobot-v0'" in capsys.readouterr().err
