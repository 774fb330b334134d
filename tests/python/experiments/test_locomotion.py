"""The locomotion experiment end to end on tiny settings (seconds; --quick takes minutes)."""

from __future__ import annotations

import csv
import json

import pytest

from mpdiffuser.data.generate import GenerateConfig, generate
from tests.python.experiments.tiny import TINY


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
                                                 policy_dir=str(tmp_path / "policies"), bc_steps=60, candidates=2,
                                                 **TINY), progress=False)
    assert {e["task"] for e in user["summary"]} == {"hopper-medium-s0"}
    from mpdiffuser.sampling.sampler import Sampler  # the model files carry the experiment's N

    assert Sampler(tmp_path / "out2" / "models" / "hopper-medium-s0" / "s0" / "model.safetensors").defaults.num_candidates == 2
    assert Sampler(tmp_path / "out" / "models" / "hopper-medium" / "s0" / "model.safetensors").defaults.num_candidates == 1  # the default N
    with pytest.raises(ValueError, match="num_candidates"):
        LocomotionConfig(candidates=0)
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
