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
    # strict JSON: no score for a robot without references is null, not NaN (which strict parsers refuse)
    result = json.loads(report.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert result["score_mean"] is None and f"no D4RL reference returns for {env_id}, raw return" in out
    assert cli.main(["consistency", str(bundle / "model.safetensors"), "--max-steps", "2", "--lambdas", "1",
                     "--threads", "1"]) == 0


def test_environments_mpdiffuser_cannot_plan_for_are_refused(tmp_path, capsys):
    assert cli.main(["generate-data", "--env", "CartPole-v1", "--kind", "random", "--transitions", "50",
                     "--out", str(tmp_path)]) == 2
    assert "its action space is Discrete(2)" in capsys.readouterr().err
    assert cli.main(["generate-data", "--env", "NoSuchRobot-v0", "--kind", "random", "--out", str(tmp_path)]) == 2
    assert "unknown environment 'NoSuchRobot-v0'" in capsys.readouterr().err


def test_the_any_robot_experiment_compares_raw_returns_on_the_grid(tmp_path):
    """`mpdiffuser experiment any-robot` on a robot without D4RL references: three methods, raw
    returns summarized over seeds, every cell cached (a rerun runs nothing)."""
    from mpdiffuser.data.generate import GenerateConfig, generate
    from mpdiffuser.experiments.any_robot import METHODS

    data = generate(GenerateConfig("Swimmer-v5", "random", 600), tmp_path / "data", progress=False)
    out = tmp_path / "out"
    args = ["experiment", "any-robot", "--quick", "--dataset", str(data), "--train-steps", "30", "--episodes", "2",
            "--seeds", "0", "1", "--out", str(out), "--threads", "1", "--device", "cpu"]
    assert cli.main(args) == 0
    report = json.loads((out / "any-robot.json").read_text())
    assert report["failures"] == [] and [e["method"] for e in report["summary"]] == list(METHODS)
    assert all(e["seeds"] == 2 and math.isfinite(e["return_mean"]) and "score_mean" not in e for e in report["summary"])
    assert set(report["data_return"]) == {"swimmer-random-s0"}
    cells = sorted(p.relative_to(out / "cells").as_posix() for p in (out / "cells").rglob("*.json"))
    assert len(cells) == 6 and (out / "any-robot.png").stat().st_size > 5000
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.json")}
    assert cli.main(args) == 0  # every cell from its cache
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.json")} == stamps
    assert cli.main(["experiment", "any-robot", "--out", str(out)]) == 2  # no data: one line
