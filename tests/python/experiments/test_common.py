"""Statistics shared by the experiments, and the experiment command's argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from mpdiffuser import cli
from mpdiffuser.experiments.common import mean_stderr, summarize


def test_statistics():
    assert mean_stderr([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0 / np.sqrt(3)))
    assert mean_stderr([5.0]) == (5.0, 0.0)
    rows = [{"t": "a", "m": "x", "s": 1.0}, {"t": "a", "m": "x", "s": 3.0}, {"t": "b", "m": "x", "s": 7.0}]
    out = summarize(rows, ("t", "m"), ("s",))
    assert [(e["t"], e["n"], e["s_mean"]) for e in out] == [("a", 2, 2.0), ("b", 1, 7.0)]
    assert out[0]["s_stderr"] == pytest.approx(1.0)


@pytest.mark.parametrize("argv, message", [
    (["locomotion", "--quick", "--hz", "20"], "--hz applies to the quadruped"),
    (["dynamics", "--model-file", "m.safetensors"], "--model-file applies to the quadruped"),
    (["constrained", "--dataset", "x.hdf5"], "--dataset applies to the locomotion"),
    (["locomotion", "--physics", "mass=2"], "--physics applies to the dynamics"),
    (["dynamics", "--physics", "mass=x"], "not a number"),
    (["dynamics", "--env", "Hopper-v5", "--env", "Walker2d-v5"], "one --env"),
    (["constrained", "--expert-steps", "1000"], "--expert-steps applies to the locomotion"),
    (["locomotion", "--cost-penalty", "5"], "--cost-penalty applies to the constrained"),
    (["constrained", "--cost-penalty", "0"], "--cost-penalty must be > 0"),
    (["dynamics", "--kind", "medium"], "--kind applies to the locomotion"),
    (["quadruped", "--candidates", "0"], "--candidates must be >= 1"),
    (["locomotion", "--train-steps", "0"], "--train-steps must be >= 1"),
    (["constrained", "--finetune-steps", "100"], "--finetune-steps applies to the dynamics"),
    (["dynamics", "--shift-transitions", "0"], "--shift-transitions must be >= 1"),
    (["dynamics", "--finetune-replay", "1"], "finetune_replay must be in [0, 1)"),
    (["locomotion", "--finetune-replay", "0.5"], "--finetune-replay applies to the dynamics"),
    (["locomotion", "--width", "0"], "--width must be >= 1"),
    (["quadruped", "--action-weight", "0"], "--action-weight must be > 0"),
    (["dynamics", "--seed", "1", "--seeds", "2"], "--seeds or --seed, not both"),
    (["constrained", "--baseline-seeds", "0"], "--baseline-seeds applies to the locomotion"),
    (["locomotion", "--seeds", "0", "--baseline-seeds", "1"], "baseline_seeds [1] must be among the seeds [0]")])
def test_experiment_cli_rejects_bad_options_and_options_of_other_experiments(argv, message, capsys):
    assert cli.main(["experiment", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mpdiffuser experiment: error:") and message in err


@pytest.mark.parametrize("name, module, function", [
    ("locomotion", "locomotion", "run_locomotion"), ("constrained", "constrained", "run_constrained"),
    ("dynamics", "dynamics_shift", "run_dynamics_shift"), ("quadruped", "quadruped", "run_quadruped")])
def test_experiment_cli_sizes_data_training_and_evaluation(monkeypatch, name, module, function):
    import importlib

    seen = []
    monkeypatch.setattr(importlib.import_module(f"mpdiffuser.experiments.{module}"), function, seen.append)
    extra = ["--expert-steps", "250000", "--kind", "medium", "--kind", "medium-replay"] if name == "locomotion" else []
    argv = ["experiment", name, "--policy-dir", "/tmp/p", "--policy-steps", "60000", "--train-steps", "7000",
            "--episodes", "9", "--candidates", "1", "--width", "384", "--action-weight", "10",
            "--prediction", "epsilon", "--max-steps", "300", "--architecture", "unet", "--weights", "bf16", *extra]
    assert cli.main(argv) == 0
    (config,) = seen
    assert (config.policy_steps, config.train_steps, config.episodes, config.candidates) == (60_000, 7000, 9, 1)
    assert (config.max_steps, config.architecture, config.weights) == (300, "unet", "bf16")
    assert (config.width, config.action_weight, config.prediction) == (384, 10.0, "epsilon")
    assert config.policy_dir == "/tmp/p"
    if name == "locomotion":  # behaviour cloning trains as long as the diffusion models
        assert (config.expert_steps, config.bc_steps) == (250_000, 7000)
        assert config.kinds == ("medium", "medium-replay")
    if name == "dynamics":
        assert (config.finetune_steps, config.shift_transitions) == (2000, 10_000)  # the defaults
        assert config.finetune_replay == 0.0
        assert cli.main(["experiment", name, "--finetune-steps", "8000", "--shift-transitions", "40000",
                         "--finetune-replay", "0.5"]) == 0
        assert (seen[-1].finetune_steps, seen[-1].shift_transitions, seen[-1].finetune_replay) == (8000, 40_000, 0.5)
    if name == "constrained":
        assert config.cost_penalty == 1.0  # the default, unless --cost-penalty
        assert cli.main(["experiment", name, "--cost-penalty", "5"]) == 0 and seen[-1].cost_penalty == 5.0
    quick = []
    monkeypatch.setattr(importlib.import_module(f"mpdiffuser.experiments.{module}"), function, quick.append)
    assert cli.main(["experiment", name, "--quick", "--episodes", "2"]) == 0
    assert quick[0].episodes == 2 and quick[0].policy_steps < 30_000  # the rest stays quick
    # sized for the robot, the default u_0 weight and prediction target
    assert (quick[0].width, quick[0].action_weight, quick[0].prediction) == (None, 10.0, "sample")
    config_class = type(quick[0])
    with pytest.raises(ValueError, match="width"):
        config_class.quick(width=0)
    with pytest.raises(ValueError, match="prediction"):
        config_class.quick(prediction="velocity")
    with pytest.raises(ValueError, match="action_weight"):
        config_class.quick(action_weight=-1.0)


def test_train_bundle_takes_width_action_weight_and_prediction(tmp_path):
    """The width and the prediction target reach both diffusion models and the model file; the u_0
    weight reaches the planner's training only."""
    import torch

    from mpdiffuser.experiments.common import Log, train_bundle
    from mpdiffuser.export import read_model_file
    from mpdiffuser.models.bundle import BundleSpec
    from tests.python.conftest import make_toy_dataset

    data = make_toy_dataset()
    path = train_bundle(tmp_path / "b", data, [], 2, 1, 0, Log(), progress=False, width=48, action_weight=5.0,
                        prediction="epsilon")
    assert path.exists()
    spec = BundleSpec.load(tmp_path / "b")
    assert (spec.model.width, spec.model.prediction) == (48, "epsilon")
    assert read_model_file(path)[0].model.prediction == "epsilon"  # the model file plans as it was trained
    assert torch.load(tmp_path / "b" / "planner.pt", weights_only=False)["state_dict"]["mlp.net.0.weight"].shape[0] == 48
    assert torch.load(tmp_path / "b" / "planner.pt", weights_only=False)["info"]["train_config"]["action_weight"] == 5
    # the same bundle with the weight at 1: the planner learns otherwise, dynamics and reward alike
    train_bundle(tmp_path / "one", data, [], 2, 1, 0, Log(), progress=False, width=48, action_weight=1.0,
                 prediction="epsilon")
    state = {(d, name): torch.load(tmp_path / d / f"{name}.pt", weights_only=False)["state_dict"]
             for d in ("b", "one") for name in ("planner", "dynamics", "reward")}
    same = {name: all(torch.equal(state["b", name][k], state["one", name][k]) for k in state["b", name])
            for name in ("planner", "dynamics", "reward")}
    assert same == {"planner": False, "dynamics": True, "reward": True}


def test_summaries_give_the_error_over_seeds_beside_the_error_over_episodes():
    """Episodes of one seed share its models: with two seeds at 0 and 10 (no spread within a seed),
    the error over episodes is small and the error over the seeds' means is 5."""
    from mpdiffuser.experiments.common import score_error

    rows = [{"m": "x", "seed": s, "score": 10.0 * s} for s in (0, 1) for _ in range(10)]
    entry, = summarize(rows, ("m",), ("score",), unit="seed")
    assert entry["seeds"] == 2 and entry["score_mean"] == 5.0
    assert entry["score_stderr_seeds"] == pytest.approx(5.0)
    assert entry["score_stderr"] == pytest.approx((20 * 25 / 19) ** 0.5 / 20 ** 0.5)  # 1.15
    assert score_error(entry) == entry["score_stderr_seeds"]
    one, = summarize(rows[:10], ("m",), ("score",), unit="seed")
    assert one["seeds"] == 1 and score_error(one) == one["score_stderr"] == 0.0


def test_results_record_the_library_versions_they_ran_with():
    from importlib import metadata

    from mpdiffuser.experiments.common import RESULT_LIBRARIES, machine

    info = machine()
    assert set(info["libraries"]) == set(RESULT_LIBRARIES)
    assert info["libraries"]["mujoco"] == metadata.version("mujoco")  # a score is tied to its simulator
    assert info["libraries"]["gymnasium"] == metadata.version("gymnasium") and info["commit"]


def test_summarize_leaves_out_rows_without_a_field():
    """A metric one cell could not measure (say, the loss on visited states of an episode shorter
    than a window) is left out of that field's mean, not a KeyError for the whole report."""
    from mpdiffuser.experiments.common import summarize

    rows = [{"task": "t", "method": "m", "seed": 0, "a": 1.0, "b": 2.0},
            {"task": "t", "method": "m", "seed": 1, "a": 3.0}]
    (entry,) = summarize(rows, ("task", "method"), ("a", "b"), unit="seed")
    assert entry["a_mean"] == 2.0 and entry["b_mean"] == 2.0 and entry["b_stderr_seeds"] == 0.0
    (empty,) = summarize(rows[1:], ("task", "method"), ("b",))
    assert empty["b_mean"] != empty["b_mean"]  # NaN: no row has it


def test_train_bundle_takes_the_family_and_the_weight_format(tmp_path):
    """architecture reaches both diffusion models, weights the model file's storage; the experiment
    CLI takes both as flags with their homes' choices."""
    import json
    import struct

    from mpdiffuser.experiments.common import Log, train_bundle
    from mpdiffuser.export import read_model_file
    from tests.python.conftest import make_toy_dataset

    path = train_bundle(tmp_path / "u", make_toy_dataset(), [], 2, 1, 0, Log(), progress=False,
                        architecture="unet", weights="bf16")
    assert read_model_file(path)[0].model.architecture == "unet"
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    assert header["planner.head.3.weight"]["dtype"] == "BF16" and header["normalizer.state_low"]["dtype"] == "F32"
    from mpdiffuser.cli import main

    with pytest.raises(SystemExit):
        main(["experiment", "any-robot", "--weights", "fp8", "--dataset", "x.hdf5"])
