"""One training request for every front door: `mpdiffuser train` and `mpd.fit` build the same
TrainRequest from the same names, and no default is typed twice."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from mpdiffuser import cli
from mpdiffuser.commands.train import REQUEST_FLAGS, request_from_args
from mpdiffuser.training.request import SETTINGS, TrainRequest

# a value other than its default for every field of the request and every setting
EVERY_FIELD = {
    "extra_data": ["more.hdf5"], "env": "Hopper-v5", "recipe": "authors", "model": "planner", "fine_tune": True,
    "seeds": [3, 4], "export_at": [], "force": True, "device": "cpu", "at_once": "off", "eval_every": 5,
    "eval_episodes": 2,
    "steps": 7, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 5, "action_weight": 2.0, "ema_every": 2,
    "validate_every": 5, "horizon": 8, "diffusion_steps": 6, "width": 64, "layers": 2, "architecture": "unet",
    "unet_dim": 16, "unet_mults": [1, 2], "unet_embed_dim": 16, "prediction": "epsilon", "normalizer": "cdf",
    "return_condition": "minmax", "precision": "bf16", "batches": "host", "capture": "off", "log_every": 5,
    "compile": True, "tensorboard": False, "per_model": {"reward": {"steps": 3, "lr": 1e-4}, "dynamics": {"steps": 5}},
}


def _flags(fields: dict) -> list[str]:
    out = []
    for name, value in fields.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, dict):  # per_model: MODEL.SETTING=VALUE each
            out += [flag, *(f"{model}.{k}={v}" for model, changes in value.items() for k, v in changes.items())]
        elif value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + name.replace("_", "-"))
        elif isinstance(value, list):
            out += [flag, *map(str, value)] if value else []
        else:
            out += [flag, str(value)]
    return out


def test_every_field_set_through_fit_and_through_the_cli_makes_the_same_request():
    assert set(EVERY_FIELD) | {"bundle", "data", "seed"} == set(REQUEST_FLAGS) | set(SETTINGS)  # nothing left out
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--bundle", "b", "--data", "d.hdf5", *_flags(EVERY_FIELD)])
    from_cli = request_from_args(args)
    from_python = TrainRequest.of("b", ["d.hdf5"], **EVERY_FIELD)
    assert from_cli == from_python
    assert from_cli.train_config.learning_rate == 1e-3 and from_cli.model_config["architecture"] == "unet"
    assert from_cli.config_of("reward").steps == 3 and from_cli.config_of("reward").learning_rate == 1e-4
    assert from_cli.config_of("dynamics").steps == 5 and from_cli.config_of("planner").steps == 7
    assert from_cli.runtime_fields == {"precision": "bf16", "batches": "host", "capture": "off", "log_every": 5,
                                       "compile": True, "tensorboard": False}


def test_no_default_of_the_request_is_typed_twice():
    """Every flag of `train` that sets a request field or setting defaults to None (the dataclass's
    default applies) and carries the field's own comment as its help."""
    from mpdiffuser.commands.common import field_docs
    from mpdiffuser.config import ModelConfig, TrainConfig
    from mpdiffuser.training.runtime import TrainRuntime

    parser = cli.build_parser()
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    docs = field_docs(TrainRequest) | field_docs(TrainConfig) | field_docs(ModelConfig) | field_docs(TrainRuntime)
    fields = {**REQUEST_FLAGS, **SETTINGS}
    seen = set()
    for action in train._actions:
        if action.dest in fields:
            seen.add(action.dest)
            assert action.default is None or action.required, action.dest
            assert docs[fields[action.dest]].split(" (")[0][:30] in action.help.replace("%%", "%"), action.dest
    assert seen == set(fields)


def test_fit_and_train_write_the_same_bundle(tmp_path):
    from tests.python.conftest import make_toy_dataset

    import mpdiffuser as mpd

    data = make_toy_dataset(seed=2)
    path = data.save_hdf5(tmp_path / "toy.hdf5")
    tiny = {"steps": 4, "batch_size": 8, "horizon": 4, "diffusion_steps": 3, "width": 16, "layers": 1,
            "checkpoint_every": 2, "seed": 5, "lr": 5e-4}
    assert cli.main(["--quiet", "train", "--bundle", str(tmp_path / "cli"), "--data", str(path), "--device", "cpu",
                     *_flags(tiny)]) == 0
    mpd.fit(str(path), tmp_path / "py", device="cpu", progress=False, **tiny)
    cli_spec, py_spec = (json.loads((tmp_path / b / "bundle.json").read_text()) for b in ("cli", "py"))
    assert cli_spec == py_spec
    import torch

    for name in ("planner", "dynamics", "reward"):  # the same weights, bit for bit
        a, b = (torch.load(tmp_path / d / f"{name}.pt", weights_only=False) for d in ("cli", "py"))
        weights = lambda w: w.get("state_dict", w) if isinstance(w, dict) else w.state_dict()  # noqa: E731
        wa, wb = weights(a), weights(b)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa if torch.is_tensor(wa[k]))


def test_bad_request_fields_are_one_line(tmp_path, capsys):
    with pytest.raises(TypeError, match="unknown training fields"):
        TrainRequest.of("b", ["d"], stepz=3)
    with pytest.raises(ValueError, match="model must be all or one of"):
        TrainRequest.of("b", ["d"], model="ranker")
    with pytest.raises(TypeError, match="fine_tune must be True or False"):
        TrainRequest.of("b", ["d"], fine_tune="yes")
    assert cli.main(["train", "--bundle", str(tmp_path / "b"), "--data", "d.hdf5", "--export-at", "99",
                     "--steps", "10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--export-at must lie within 1..10 (--steps of planner and dynamics), got [99]" in err
    assert dataclasses.is_dataclass(TrainRequest)
    with pytest.raises(ValueError, match=r"per_model names no model \['ranker'\]"):
        TrainRequest.of("b", ["d"], per_model={"ranker": {"steps": 3}})
    with pytest.raises(TypeError, match="per_model\\['reward'\\] has unknown training settings \\['horizon'\\]"):
        TrainRequest.of("b", ["d"], per_model={"reward": {"horizon": 3}})
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        TrainRequest.of("b", ["d"], per_model={"reward": {"steps": 0}})
    with pytest.raises(ValueError, match=r"a spec brings its model: give the spec or model settings \(width\), not both"):
        TrainRequest.of("b", ["d"], spec=object(), width=64)
    for bad, says in ((["reward.steps"], "--per-model takes MODEL.SETTING=VALUE (reward.steps=3000), got 'reward.steps'"),
                      (["reward.steps=many"], "--per-model: 'reward.steps=many' needs a value of type int"),
                      (["reward.width=3"], "--per-model: 'width' is no training setting")):
        assert cli.main(["train", "--bundle", str(tmp_path / "b"), "--data", "d.hdf5", "--per-model", *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, err


def test_per_model_steps_and_a_setting_a_model_does_not_read(tmp_path):
    """per_model trains the ranker for fewer steps than the planner; a dynamics checkpoint made with
    another action_weight (a setting only the planner's loss reads) resumes, a planner's does not."""
    from tests.python.conftest import make_toy_dataset

    import mpdiffuser as mpd
    from mpdiffuser.models.bundle import load_weights  # noqa: F401  (the bundle's weights load)

    data = make_toy_dataset(seed=3)
    tiny = {"batch_size": 8, "horizon": 4, "diffusion_steps": 3, "width": 16, "layers": 1, "checkpoint_every": 2}
    rows = TrainRequest.of(tmp_path / "b", [data], device="cpu", steps=4, action_weight=1.0,
                           per_model={"reward": {"steps": 2}}, **tiny).run(progress=False, say=lambda m: None)
    assert {name: info["steps"] for _, name, _, info in rows} == {"planner": 4, "dynamics": 4, "reward": 2}
    more = TrainRequest.of(tmp_path / "b", [data], device="cpu", steps=6, action_weight=10.0, model="dynamics",
                           **tiny).run(progress=False, say=lambda m: None)
    assert more[0][3]["steps"] == 6 and not more[0][3]["nothing_to_do"]  # resumed from step 4
    with pytest.raises(ValueError, match="another training config \\(action_weight\\)"):
        mpd.fit(data, tmp_path / "b", device="cpu", steps=6, action_weight=10.0, model="planner", progress=False,
                **tiny)


def test_eval_every_logs_closed_loop_scores_beside_the_loss(tmp_path, capsys):
    """A CI-sized run with --eval-every: the planner trains last, its loss log has eval_return and
    eval_score at every evaluation step, and the best step is reported."""
    from mpdiffuser.data.generate import GenerateConfig, generate
    from mpdiffuser.training.log import read_log

    data = generate(GenerateConfig("Hopper-v5", "random", 400), tmp_path / "data", progress=False)
    bundle = tmp_path / "b"
    assert cli.main(["--quiet", "train", "--bundle", str(bundle), "--data", str(data), "--device", "cpu", "--steps",
                     "6", "--batch-size", "8", "--horizon", "4", "--diffusion-steps", "3", "--width", "16",
                     "--layers", "1", "--log-every", "2", "--eval-every", "3", "--eval-episodes", "1"]) == 0
    out = capsys.readouterr().out
    rows = read_log(bundle / "logs" / "planner.csv")
    evaluated = [r for r in rows if r["eval_return"] == r["eval_return"]]  # not NaN
    assert [int(r["step"]) for r in evaluated] == [3, 6]
    assert all(r["eval_score"] == r["eval_score"] and r["loss"] > 0 for r in evaluated)
    assert "planner: best closed-loop return" in out and "at step" in out
    assert out.index("reward") < out.index("planner:")  # the ranker (and dynamics) trained first
    assert "eval_return" not in read_log(bundle / "logs" / "dynamics.csv")[0]
    from mpdiffuser.training.plot import plot_training

    import matplotlib.image

    pngs = {p.stem: matplotlib.image.imread(p) for p in plot_training(bundle)}
    # the planner's plot has a panel more than the dynamics model's: the closed-loop return
    assert pngs["planner"].shape[1] > 1.4 * pngs["dynamics"].shape[1]
