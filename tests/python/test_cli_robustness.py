"""What a user's mistakes and accidents must not do: bad datasets and arguments end in one line and
exit code 2 with nothing written; a tuned model file is never overwritten by eval's export; two
trainings of one bundle cannot run at once; a plan that came out NaN stops eval with the reason."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from mpdiffuser import cli
from tests.python.conftest import make_toy_dataset

TINY = ["--horizon", "4", "--diffusion-steps", "3", "--width", "16", "--layers", "2", "--batch-size", "16"]


def _flat(rows: int, drop: str | None = None) -> dict:
    data = {"observations": np.zeros((rows, 11), np.float32), "actions": np.zeros((rows, 3), np.float32),
            "rewards": np.zeros(rows, np.float32), "terminals": np.zeros(rows, bool), "timeouts": np.zeros(rows, bool)}
    data.pop(drop, None)
    return data


def _bad_datasets(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name, data in (("zero-rows", _flat(0)), ("no-rewards", _flat(10, "rewards"))):
        files[name] = tmp_path / f"{name}.hdf5"
        with h5py.File(files[name], "w") as f:
            for k, v in data.items():
                f[k] = v
    files["in-a-group"] = tmp_path / "group.hdf5"
    with h5py.File(files["in-a-group"], "w") as f:
        group = f.create_group("data")
        for k, v in _flat(10).items():
            group[k] = v
    five = _flat(10)
    five["observations"] = np.zeros((10, 5), np.float32)  # 5-dimensional data named Hopper below
    no_actions = _flat(10)
    no_actions["actions"] = np.zeros((10, 0), np.float32)
    huge = _flat(10)
    huge["rewards"][3] = 1e38
    for name, data in (("five-dims", five), ("zero-width-actions", no_actions), ("huge-rewards", huge)):
        files[name] = tmp_path / f"{name}.hdf5"
        with h5py.File(files[name], "w") as f:
            f.attrs["mpdiffuser_metadata"] = '{"env_id": "Hopper-v5"}'
            for k, v in data.items():
                f[k] = v
    files["empty-npz"] = tmp_path / "empty.npz"
    np.savez(files["empty-npz"])
    files["not-npz"] = tmp_path / "text.npz"
    files["not-npz"].write_text("hello")
    return files


@pytest.mark.parametrize("case, message", [
    ("zero-rows", "holds no rows"), ("no-rewards", "missing required key 'rewards'"),
    ("in-a-group", "inside groups"), ("empty-npz", "holds no arrays"), ("not-npz", "not a readable .npz file"),
    ("five-dims", "has 5-dimensional observations and 3-dimensional actions, but Hopper-v5 has 11 and 3"),
    ("zero-width-actions", "observations and actions need at least one dimension each, got 11 and 0"),
    ("huge-rewards", "'rewards' holds a value beyond +-1e+09 (episode 0, step 3)")])
def test_bad_datasets_are_one_line_and_write_nothing(tmp_path, capsys, case, message):
    data = _bad_datasets(tmp_path)[case]
    bundle = tmp_path / "bundle"
    for command in (["train", "--bundle", str(bundle), "--data", str(data), "--steps", "5", *TINY],
                    ["train", "--bundle", str(bundle), "--data", str(data), "--steps", "5", "--env", "Hopper-v5", *TINY],
                    ["data", "inspect", str(data)]):
        assert cli.main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mpdiffuser {command[0]}") and "error:" in err and message in err, err
        assert err.count("\n") == 1, err
        assert not bundle.exists()


@pytest.mark.parametrize("flags, message", [
    (["--env", "NotAnEnv-v0"], "unknown environment 'NotAnEnv-v0'"),
    (["--env", "Walker2d-v5"], "has 11-dimensional observations and 3-dimensional actions, but Walker2d-v5 has 17 and 6"),
    (["--horizon", "0"], "ModelConfig.horizon must be a positive integer, got 0"),
    (["--width", "-1"], "ModelConfig.width must be a positive integer, got -1"),
    (["--lr", "nan"], "learning_rate must be a finite number > 0, got nan"),
    (["--lr", "inf"], "learning_rate must be a finite number > 0, got inf"),
    (["--bogus"], "unrecognized arguments: --bogus (mpdiffuser train --help lists the options)"),
])
def test_bad_training_flags_are_one_line_and_write_nothing(tmp_path, capsys, flags, message):
    import contextlib

    data = tmp_path / "hopper.hdf5"
    make_toy_dataset(env_id="Hopper-v5", state_dim=11, action_dim=3).save_hdf5(data)
    bundle = tmp_path / "bundle"
    with pytest.raises(SystemExit) if flags == ["--bogus"] else contextlib.nullcontext():
        code = cli.main(["train", "--bundle", str(bundle), "--data", str(data), "--steps", "2", *flags])
        assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not bundle.exists()


def test_train_steps_0_and_eval_seed_below_0_are_refused(tmp_path, capsys):
    data = tmp_path / "toy.hdf5"
    make_toy_dataset(seed=1, env_id="Hopper-v5", state_dim=11, action_dim=3).save_hdf5(data)
    assert cli.main(["train", "--bundle", str(tmp_path / "b"), "--data", str(data), "--steps", "0", *TINY]) == 2
    assert "steps must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", "--model-file", "m.safetensors", "--seed", "-5"])
    assert exit_info.value.code == 2
    assert "argument --seed: must be in [0, 2^63), got -5" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    data = root / "toy.hdf5"
    make_toy_dataset(seed=1, env_id="Hopper-v5", state_dim=11, action_dim=3).save_hdf5(data)
    bundle = root / "bundle"
    assert cli.main(["train", "--bundle", str(bundle), "--data", str(data), "--steps", "10", *TINY]) == 0
    return data, bundle


def _metadata(path: Path) -> dict:
    from mpdiffuser.digest import read_header

    return read_header(path.read_bytes())[0]


def test_eval_never_overwrites_a_tuned_model_file(trained, tmp_path, capsys):
    from mpdiffuser.export import model_file_for_bundle, read_model_file, with_defaults

    data, bundle = trained
    model_file = bundle / "model.safetensors"
    model_file.unlink(missing_ok=True)
    path, done = model_file_for_bundle(bundle)  # missing: exported, marked as eval's own
    assert path == model_file and done.startswith("exported") and _metadata(path)["written_by"] == "eval"
    assert model_file_for_bundle(bundle)[1].startswith("using")  # fresh: used as it is
    _, _, defaults = read_model_file(model_file)
    with_defaults(model_file, model_file, defaults.replace(return_target=0.4))  # tune --out over it
    path, done = model_file_for_bundle(bundle)
    assert "written by tune" in done and read_model_file(path)[2].return_target == 0.4
    # The bundle retrained since: a tuned file is refused, never overwritten ...
    later = time.time() + 5
    os.utime(bundle / "planner.pt", (later, later))
    with pytest.raises(ValueError, match="older than the bundle's weights and is not overwritten"):
        model_file_for_bundle(bundle)
    assert read_model_file(model_file)[2].return_target == 0.4
    assert cli.main(["eval", "--bundle", str(bundle), "--backend", "cpu", "--episodes", "1", "--max-steps", "2"]) == 2
    assert "is not overwritten" in capsys.readouterr().err
    # ... while eval's own stale export is refreshed.
    model_file.unlink()
    model_file_for_bundle(bundle)
    os.utime(model_file, (later - 10, later - 10))
    assert model_file_for_bundle(bundle)[1].startswith("re-exported")


def test_a_second_training_of_one_bundle_is_refused(trained, tmp_path):
    from mpdiffuser.training.lock import LOCK_NAME, BundleLock, BundleLocked

    data, _ = trained
    bundle = tmp_path / "conc"
    cmd = [sys.executable, "-m", "mpdiffuser", "train", "--bundle", str(bundle), "--data", str(data), "--steps",
           "100000", *TINY, "--model", "planner"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while not (bundle / LOCK_NAME).exists() and time.time() < deadline:
            time.sleep(0.1)
        second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 2
        assert f"is being trained by process {first.pid}" in second.stderr and second.stderr.count("\n") == 1
    finally:
        first.kill()
        first.wait()
    # The killed owner left its lock behind: stale, taken over with a note.
    assert (bundle / LOCK_NAME).exists()
    notes = []
    with BundleLock(bundle, say=notes.append):
        assert (bundle / LOCK_NAME).exists()
        with pytest.raises(BundleLocked, match=f"process {os.getpid()}"):
            BundleLock(bundle).acquire()
    assert "stale lock" in notes[0] and not (bundle / LOCK_NAME).exists()


def test_eval_stops_with_the_reason_when_a_plan_is_nan(trained, tmp_path, capsys, monkeypatch):
    """Weights large enough to overflow a plan are refused at load (both readers, one line); a plan
    that still comes out NaN (here a ranker patched to give NaN) stops eval with the reason."""
    from mpdiffuser.export import _read_verified, _write_model_file, export_model
    from mpdiffuser.sampling import reference

    _, bundle = trained
    good = export_model(bundle, tmp_path / "good.safetensors")
    meta, tensors, _ = _read_verified(good)
    for name in tensors:
        if name.startswith("reward."):
            tensors[name] = tensors[name] * np.float32(1e30)
    bad = _write_model_file(tensors, meta, tmp_path / "bad.safetensors")
    for backend in ("cpu", "torch"):
        assert cli.main(["eval", "--model-file", str(bad), "--backend", backend, "--episodes", "1",
                         "--max-steps", "3"]) == 2
        err = capsys.readouterr().err
        assert "mpdiffuser eval: error:" in err and "lies outside +-1e+06: a corrupt file" in err
        assert err.count("\n") == 1
    real_rank = reference.ReferenceSampler.rank_tensors
    monkeypatch.setattr(reference.ReferenceSampler, "rank_tensors",
                        lambda self, *a: (real_rank(self, *a)[0] * float("nan"), None))
    assert cli.main(["eval", "--model-file", str(good), "--backend", "torch", "--episodes", "1",
                     "--max-steps", "3"]) == 2
    err = capsys.readouterr().err
    assert "mpdiffuser eval: error:" in err and "NaN or infinite" in err


def test_suspicious_data_is_warned_about_once(tmp_path, capsys):
    data = make_toy_dataset(seed=2, env_id="Hopper-v5", state_dim=11, action_dim=3)
    for episode in data.episodes:
        episode.actions[:, 1] *= 5.0  # outside Hopper's [-1, 1]: scaled actions
        episode.observations[:, 7] = 0.25  # a dimension that never changes
    path = tmp_path / "odd.hdf5"
    data.save_hdf5(path)
    assert cli.main(["train", "--bundle", str(tmp_path / "b"), "--data", str(path), "--steps", "2", *TINY,
                     "--model", "reward"]) == 0
    out = capsys.readouterr().out
    assert out.count("warning:") == 2
    assert "actions lie outside the environment's action space [-1, 1]" in out and "were they scaled?" in out
    assert "1 observation dimension(s) never change (7 = 0.25)" in out
    assert make_toy_dataset(seed=2, env_id="Hopper-v5", state_dim=11, action_dim=3).problems(
        -np.ones(3), np.ones(3)) == []


def test_a_batch_larger_than_the_data_and_a_dataset_too_large_for_the_gpu_are_refused(tmp_path, capsys, monkeypatch):
    import torch

    from mpdiffuser.training.train import check_device_memory

    data = tmp_path / "small.hdf5"
    make_toy_dataset(seed=1, episodes=3, env_id="Hopper-v5", state_dim=11, action_dim=3).save_hdf5(data)
    args = ["train", "--bundle", str(tmp_path / "b"), "--data", str(data), "--steps", "2", *TINY]
    assert cli.main(args[:-2] + ["--batch-size", "4096"]) == 2
    err = capsys.readouterr().err
    assert "the batch of 4096 (per process) exceeds the" in err and err.count("\n") == 1
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**30, 80 * 2**30))
    with pytest.raises(ValueError, match=r"the training data need 0\.75 GiB on cuda, which has 1\.00 GiB free.*"
                                         r"--batches host"):
        check_device_memory(int(0.75 * 2**30), "cuda")
    check_device_memory(int(0.25 * 2**30), "cuda")
    check_device_memory(10**15, "cpu")  # host memory: not checked here


def test_train_at_once_trains_every_model(trained, tmp_path, capsys):
    data, _ = trained
    bundle = tmp_path / "at-once"
    assert cli.main(["train", "--bundle", str(bundle), "--data", str(data), "--steps", "6", *TINY,
                     "--at-once", "on"]) == 0
    out = capsys.readouterr().out
    assert "training planner, dynamics, reward at once" in out
    assert all(f"{name}: 6 steps" in out and (bundle / f"{name}.pt").exists() for name in ("planner", "dynamics", "reward"))
    assert not (bundle / "train.lock").exists()


def test_train_seeds_makes_one_bundle_per_seed_equal_to_training_each_alone(trained, tmp_path, capsys):
    import torch

    from mpdiffuser.models.bundle import BundleSpec, load_weights

    data, _ = trained
    base = ["train", "--data", str(data), "--steps", "6", *TINY, "--model", "planner"]
    assert cli.main([*base, "--bundle", str(tmp_path / "multi"), "--seeds", "3", "5", "--at-once", "on"]) == 0
    out = capsys.readouterr().out
    assert "training seeds 3, 5 (2 models) at once" in out and "multi-s5 planner: 6 steps" in out
    assert cli.main([*base, "--bundle", str(tmp_path / "alone"), "--seed", "5"]) == 0

    def weights(bundle):
        return load_weights(bundle, "planner", BundleSpec.load(bundle)).state_dict()

    alone, five, three = weights(tmp_path / "alone"), weights(tmp_path / "multi-s5"), weights(tmp_path / "multi-s3")
    assert all(torch.equal(alone[k], five[k]) for k in alone)
    assert not all(torch.equal(three[k], five[k]) for k in alone)
    capsys.readouterr()
    for bad, message in ((["--seeds", "1", "1"], "--seeds repeats [1]"), (["--seed", "0", "--seeds", "1"], "not both")):
        assert cli.main([*base, "--bundle", str(tmp_path / "bad"), *bad]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([*base, "--bundle", str(tmp_path / "bad"), "--seeds", "-1"])
    assert "argument --seeds: must be in [0, 2^63)" in capsys.readouterr().err
