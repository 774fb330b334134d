"""Export: a trained bundle -> one .safetensors model file that both the PyTorch reference and the
native core read, with the same weights, normalizer, architecture and sampler defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from mpdiffuser.config import SamplerOptions
# _write_model_file: crafted files get a valid digest, so the checks behind the digest are what is tested
from mpdiffuser.export import _write_model_file, bundle_from_model_file, export_model, read_model_file
from mpdiffuser.models.bundle import ModelBundle


@pytest.fixture(scope="module")
def exported(toy_bundle, tmp_path_factory):
    directory, _ = toy_bundle
    options = SamplerOptions(num_candidates=5, guidance=1.7, cost_limit=4.0, dynamics_every=2, actions_per_plan=2)
    path = export_model(directory, tmp_path_factory.mktemp("export") / "toy.safetensors", options)
    return directory, path, options


def test_file_layout_follows_the_design(exported):
    directory, path, _ = exported
    bundle = ModelBundle.load(directory)
    m = bundle.spec.model
    with safe_open(str(path), framework="numpy") as f:
        meta, names = f.metadata(), set(f.keys())
        assert meta["format"] == "mpdiffuser.model" and meta["format_version"] == "5"
        assert meta["fixed_state_dims"] == ""  # a robot without a goal: none
        assert meta["horizon"] == str(m.horizon) and meta["has_cost"] == "1" and meta["cond_dim"] == "2"
        assert meta["prediction"] == m.prediction and meta["normalizer"] == "minmax"
        assert meta["default.temperature"] == "0.001" and meta["default.warm_start_level"] == "0"
        assert meta["default.dynamics_guidance"] == "2.0"
        window = m.horizon * (bundle.spec.state_dim + bundle.spec.action_dim)
        assert f.get_tensor("planner.0.weight").shape == (m.width, window + bundle.spec.state_dim + 2 + 32)
        assert f.get_tensor(f"planner.{m.layers}.weight").shape == (window, m.width)
        assert f.get_tensor("planner.0.weight").dtype == np.float32
        np.testing.assert_array_equal(f.get_tensor("dynamics.1.bias"),
                                      bundle.dynamics.state_dict()["mlp.net.1.bias"].numpy())
    expected = {f"{net}.{layer}.{kind}" for net, layers in
                (("planner", m.layers), ("dynamics", m.layers), ("reward", m.ranker_layers), ("cost", m.ranker_layers))
                for layer in range(layers + 1) for kind in ("weight", "bias")}
    expected |= {f"normalizer.{w}_{b}" for w in ("state", "action") for b in ("low", "high")}
    assert names == expected


def test_round_trip_gives_the_same_models_and_defaults(exported):
    directory, path, options = exported
    original = ModelBundle.load(directory)
    spec, _, defaults = read_model_file(path)
    assert defaults == options
    assert spec.model == original.spec.model and spec.conditions == original.spec.conditions
    assert spec.env_id == original.spec.env_id and spec.reward_has_termination == original.spec.reward_has_termination
    np.testing.assert_array_equal(spec.states.low, original.spec.states.low)
    np.testing.assert_array_equal(spec.actions.high, original.spec.actions.high)
    loaded, _ = bundle_from_model_file(path)
    x = torch.randn(3, spec.state_dim)
    u = torch.randn(3, spec.action_dim)
    for net in ("reward", "cost"):
        assert torch.equal(getattr(loaded, net)(x, u), getattr(original, net)(x, u))
    tau = torch.randn(3, spec.model.horizon, spec.state_dim + spec.action_dim)
    c, k = torch.randn(3, 2), torch.tensor([1, 2, 3])
    assert torch.equal(loaded.planner(tau, x, c, k), original.planner(tau, x, c, k))


def test_native_core_reads_the_same_file(exported):
    from mpdiffuser import _core

    _, path, options = exported
    model = _core.Model(str(path))
    spec, _, _ = read_model_file(path)
    info = model.info()
    assert (info["state_dim"], info["action_dim"], info["horizon"], info["has_cost"]) == (
        spec.state_dim, spec.action_dim, spec.model.horizon, True)
    native = model.default_options()
    assert native.num_candidates == 5 and native.guidance == 1.7 and native.dynamics_every == 2
    assert native.has_cost_limit == 1 and native.cost_limit == 4.0 and native.has_cost_budget == 0


def test_export_rejects_options_the_models_cannot_take(toy_bundle, tmp_path):
    directory, _ = toy_bundle
    with pytest.raises(ValueError, match="actions_per_plan"):
        export_model(directory, tmp_path / "x.safetensors", SamplerOptions(actions_per_plan=99))
    with pytest.raises(FileNotFoundError):
        export_model(tmp_path / "nothing", tmp_path / "x.safetensors")


def test_files_of_another_version_are_rejected_by_both_readers(exported, tmp_path):
    from mpdiffuser import _core

    _, path, _ = exported
    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["format_version"] = "7"
    newer = tmp_path / "newer.safetensors"
    _write_model_file(tensors, meta, newer)
    with pytest.raises(ValueError, match="version 7"):
        read_model_file(newer)
    with pytest.raises(ValueError, match="format version 7 is not supported"):
        _core.Model(str(newer))
    del tensors["dynamics.0.weight"]
    from mpdiffuser.export import VERSION_2_KEYS

    meta = {k: v for k, v in meta.items() if k not in (*VERSION_2_KEYS, "fixed_state_dims")} | {"format_version": "1"}
    missing = tmp_path / "missing.safetensors"
    _write_model_file(tensors, meta, missing)
    with pytest.raises(ValueError, match="'dynamics.0.weight' is missing"):
        _core.Model(str(missing))
    with pytest.raises(ValueError, match="dynamics.0.weight"):
        bundle_from_model_file(missing)
    not_a_model = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(not_a_model))
    with pytest.raises(ValueError, match="not an mpdiffuser model file"):
        read_model_file(not_a_model)


V2_ONLY = ("prediction", "normalizer", "return_condition", "termination_penalty", "default.temperature",
           "default.warm_start_level", "default.dynamics_guidance")


def test_version_1_files_load_and_plan_as_before(exported, tmp_path):
    """A version 1 file (epsilon-prediction, min-max, no temperature or warm start) loads in both
    readers and plans exactly as the same models marked epsilon at temperature 1 in version 2."""
    from mpdiffuser.sampling.sampler import Sampler

    _, path, options = exported
    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    v2 = {**meta, "prediction": "epsilon", "return_condition": "minmax", "termination_penalty": "0.0",
          "default.dynamics_guidance": meta["default.guidance"], "default.temperature": "1.0"}  # as version 1 plans
    v1 = {k: v for k, v in v2.items() if k not in (*V2_ONLY, "fixed_state_dims")} | {"format_version": "1"}
    _write_model_file(tensors, v1, tmp_path / "v1.safetensors")
    _write_model_file(tensors, v2, tmp_path / "v2.safetensors")
    spec, _, defaults = read_model_file(tmp_path / "v1.safetensors")
    assert spec.model.prediction == "epsilon" and spec.model.normalizer == "minmax"
    assert defaults == options.replace(dynamics_guidance=options.guidance, temperature=1.0)
    assert defaults.temperature == 1.0 and defaults.warm_start_level == 0
    state = ((spec.states.low + spec.states.high) / 2).astype(np.float32)
    for backend in ("cpu", "torch"):
        old, new = Sampler(tmp_path / "v1.safetensors", backend), Sampler(tmp_path / "v2.safetensors", backend)
        np.testing.assert_array_equal(old.plan(state, 3).windows, new.plan(state, 3).windows)
    from mpdiffuser import _core

    info = _core.Model(str(tmp_path / "v1.safetensors")).info()
    assert info["format_version"] == 1 and info["prediction"] == "epsilon"
    assert _core.Model(str(tmp_path / "v1.safetensors")).default_options().temperature == 1.0


def test_unknown_prediction_or_normalizer_is_rejected_by_both_readers(exported, tmp_path):
    from mpdiffuser import _core

    _, path, _ = exported
    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["architecture"] == "mlp"  # files name their network family; files without the key are mlp
    del meta["architecture"]
    _write_model_file(tensors, meta, tmp_path / "no-architecture.safetensors")
    assert read_model_file(tmp_path / "no-architecture.safetensors")[0].model.architecture == "mlp"
    _core.Model(str(tmp_path / "no-architecture.safetensors"))
    for key, value in (("prediction", "velocity"), ("normalizer", "zscore"), ("default.temperature", "0"),
                       ("default.temperature", "2"), ("architecture", "transformer")):
        bad = tmp_path / f"bad-{key}-{value}.safetensors"
        _write_model_file(tensors, meta | {key: value}, bad)
        with pytest.raises(ValueError, match=key.split(".")[-1]):
            read_model_file(bad)
        with pytest.raises(ValueError, match=key.split(".")[-1]):
            _core.Model(str(bad))


def test_nan_weights_are_rejected_by_every_backend(exported, tmp_path):
    """A file with a NaN weight: the torch backend refuses it as the native core does."""
    from mpdiffuser import _core
    from mpdiffuser.sampling.sampler import Sampler

    _, path, _ = exported
    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["planner.1.weight"] = tensors["planner.1.weight"].copy()
    tensors["planner.1.weight"][0, 0] = np.nan
    bad = tmp_path / "nan.safetensors"
    _write_model_file(tensors, meta, bad)
    for backend in ("torch", "cpu"):
        with pytest.raises(ValueError, match="planner.1.weight' holds NaN"):
            Sampler(bad, backend)
    with pytest.raises(ValueError, match="NaN"):
        _core.Model(str(bad))


def test_a_tensor_name_collision_fails_instead_of_overwriting():
    """Nested modules whose parameters end alike ("a.0.weight", "b.0.weight") would map to one
    model-file name; export must refuse, not keep the last one."""
    from mpdiffuser.export import file_tensor_names

    mlp = {"net.0.weight": torch.zeros(2, 2), "net.0.bias": torch.zeros(2), "net.1.weight": torch.zeros(2, 2)}
    assert file_tensor_names("planner", mlp) == {"net.0.weight": "planner.0.weight", "net.0.bias": "planner.0.bias",
                                                  "net.1.weight": "planner.1.weight"}
    nested = {"down.0.weight": torch.zeros(1), "up.0.weight": torch.zeros(1)}  # as the unet's blocks
    with pytest.raises(ValueError, match="'down.0.weight' and 'up.0.weight' would both be written as "
                                         "'dynamics.0.weight'"):
        file_tensor_names("dynamics", nested)


def test_the_digest_names_a_model_files_content_not_its_bytes(exported, tmp_path):
    """Two exports of one bundle have one digest; one changed weight, or one changed option,
    changes it. (The experiments key their saved results on it.)"""
    from mpdiffuser.export import model_file_digest

    directory, path, options = exported
    again = export_model(directory, tmp_path / "again.safetensors", options)
    assert model_file_digest(again) == model_file_digest(path)
    other = export_model(directory, tmp_path / "other.safetensors", options.replace(guidance=1.5))
    assert model_file_digest(other) != model_file_digest(path)
    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["planner.1.weight"] = tensors["planner.1.weight"].copy()
    tensors["planner.1.weight"][0, 0] += 1e-3
    _write_model_file(tensors, meta, tmp_path / "changed.safetensors")
    assert model_file_digest(tmp_path / "changed.safetensors") != model_file_digest(path)


def test_version_2_files_load_with_the_options_added_since(exported, tmp_path):
    """A version 2 file lacks the options version 3 added (options.def `since` 3: max_plan_ms):
    both readers give it their `legacy` value, and it plans as the same file in version 3."""
    from mpdiffuser import _core
    from mpdiffuser.config import OPTION_SPECS
    from mpdiffuser.sampling.sampler import Sampler

    _, path, options = exported
    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    newer = [spec for spec in OPTION_SPECS if spec.since > 2]
    assert [spec.name for spec in newer] == ["max_plan_ms", "fast_numerics"]
    added = {f"default.{s.name}" for s in newer} | {"fixed_state_dims"}  # and format 4's key
    v2 = {k: v for k, v in meta.items() if k not in added} | {"format_version": "2"}
    _write_model_file(tensors, v2, tmp_path / "v2.safetensors")
    _, _, defaults = read_model_file(tmp_path / "v2.safetensors")
    assert defaults == options.replace(max_plan_ms=0.0, fast_numerics=0)
    native = _core.Model(str(tmp_path / "v2.safetensors"))
    assert native.info()["format_version"] == 2 and native.default_options().max_plan_ms == 0.0
    assert native.default_options().fast_numerics == 0
    state = np.asarray(read_model_file(path)[0].states.low, np.float32)
    np.testing.assert_array_equal(Sampler(tmp_path / "v2.safetensors", "cpu").plan(state, 3).windows,
                                  Sampler(path, "cpu").plan(state, 3).windows)


def test_a_stored_cost_limit_without_a_cost_model_is_refused_at_load_by_every_backend(tmp_path):
    """The CPU backend refused it when the Sampler was made, the torch backend only at its first
    plan: now both readers refuse the file at load, with one reason."""
    from mpdiffuser import _core
    from mpdiffuser.bench import synthetic_model_file
    from mpdiffuser.export import _read_verified
    from mpdiffuser.sampling.sampler import Sampler

    meta, tensors, _ = _read_verified(synthetic_model_file(tmp_path / "plain.safetensors"))
    assert meta["has_cost"] == "0"
    bad = _write_model_file(tensors, meta | {"default.cost_limit": "4.0"}, tmp_path / "bad.safetensors")
    reason = "stored sampler defaults are invalid: cost_limit given, but the model was trained without costs"
    for backend in ("torch", "cpu"):
        with pytest.raises(ValueError, match=reason):
            Sampler(bad, backend)
    with pytest.raises(ValueError, match=reason):
        _core.Model(str(bad))


def test_only_regular_files_are_read_by_either_reader(tmp_path):
    """/dev/zero was read until memory ran out and a FIFO blocked the C API forever: both readers
    refuse anything but a regular file at once (run in a child process so a regression cannot hang
    the suite)."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = f"""
from mpdiffuser import _core
from mpdiffuser.export import read_model_file
for path in ("/dev/zero", {str(fifo)!r}, {str(tmp_path)!r}):
    for read in (_core.Model, read_model_file):
        try:
            read(path)
        except FileNotFoundError as exc:
            print(type(exc).__name__, exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 6
    assert lines[0] == "FileNotFoundError /dev/zero is not a regular file"
    assert lines[2] == f"FileNotFoundError {fifo} is not a regular file"
    assert lines[1] == "FileNotFoundError no model file at /dev/zero"


def test_a_file_larger_than_its_header_declares_is_refused_before_it_is_read(tmp_path):
    """The C API reads the header first and refuses a file with data appended (the Python reader
    refuses it too: its tensors no longer tile the data section)."""
    from mpdiffuser import _core
    from mpdiffuser.bench import synthetic_model_file

    good = synthetic_model_file(tmp_path / "good.safetensors")
    raw = good.read_bytes()
    _core.Model(str(good))
    appended = tmp_path / "appended.safetensors"
    appended.write_bytes(raw + bytes(1000))
    with pytest.raises(ValueError, match=rf"the file holds {len(raw) + 1000} bytes, its header declares {len(raw)}"):
        _core.Model(str(appended))
    with pytest.raises(ValueError):
        read_model_file(appended)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(raw[:-10])  # shorter than declared: the parser's own reason
    with pytest.raises(ValueError, match="data_offsets|exceeds|tile"):
        _core.Model(str(truncated))


def test_both_readers_hold_fixed_state_dims_to_one_rule(exported, tmp_path):
    """Format 4's fixed_state_dims: "" or increasing state dimensions, required from version 4,
    refused in older files; the C++ reader (model_file_test.cpp) and this one agree file by file."""
    from mpdiffuser import _core

    _, path, _ = exported
    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    dx = int(meta["state_dim"])
    cases = {"": (), "0": (0,), f"0,{dx - 1}": (0, dx - 1), f"{dx}": None, "1,0": None, "0,,1": None, " 1": None,
             "+1": None, "1,1": None, "x": None, "-1": None}
    for i, (text, want) in enumerate(cases.items()):
        file = _write_model_file(tensors, meta | {"fixed_state_dims": text}, tmp_path / f"f{i}.safetensors")
        if want is None:
            with pytest.raises(ValueError, match="'fixed_state_dims'"):
                read_model_file(file)
            with pytest.raises(ValueError, match="'fixed_state_dims'"):
                _core.Model(str(file))
        else:
            assert read_model_file(file)[0].fixed_state_dims == want
            _core.Model(str(file))
    missing = _write_model_file(tensors, {k: v for k, v in meta.items() if k != "fixed_state_dims"},
                                tmp_path / "missing.safetensors")
    for read in (read_model_file, lambda p: _core.Model(str(p))):
        with pytest.raises(ValueError, match="'fixed_state_dims' is missing"):
            read(missing)
