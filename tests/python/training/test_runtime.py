"""Where and how training runs: device resolution, mixed precision, torch.compile, loss logs,
validation on held-out episodes, and what a re-run does with a finished checkpoint."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch

from mpdiffuser.config import TrainConfig
from mpdiffuser.models.bundle import BundleSpec, load_weights
from mpdiffuser.training.log import read_log
from mpdiffuser.training.loop import train_loop
from mpdiffuser.training.runtime import TrainRuntime, resolve_device
from mpdiffuser.training.train import checkpoint_path, train_model
from tests.python.conftest import TINY_MODEL, make_toy_dataset


def _linear_problem():
    w_true = np.array([[2.0, -1.0, 0.5]], np.float32)

    def sample(rng, batch):
        x = rng.normal(size=(batch, 3)).astype(np.float32)
        return {"x": x, "y": x @ w_true.T}

    def loss(model, batch, gen):
        return torch.nn.functional.mse_loss(model(batch["x"]).float(), batch["y"])

    return sample, loss


def _fresh():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


def test_devices_resolve_or_fail_with_the_reason():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    with pytest.raises(ValueError, match="--device must be auto, cpu, cuda or cuda:<index>, got 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"--device cuda:1: torch .* sees no CUDA device; use --device cpu"):
            resolve_device("cuda:1")
    with pytest.raises(ValueError, match="precision must be one of fp32, tf32, bf16, fp16"):
        TrainRuntime(precision="fp8")
    with pytest.raises(ValueError, match="batch size 15 is not divisible by the world size 2"):
        TrainRuntime(rank=1, world_size=2).local_batch(15)
    assert TrainRuntime(rank=1, world_size=2).local_batch(16) == 8


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_learns_close_to_fp32(precision):
    """Autocast runs the forward pass in 16 bits (fp16 with loss scaling); the weights still reach
    the solution, within 16-bit rounding of the fp32 run's."""
    sample, loss = _linear_problem()
    cfg = TrainConfig(steps=300, batch_size=64, learning_rate=3e-2, weight_decay=0.0, ema_decay=0.9)
    fp32, _ = train_loop(_fresh(), loss, sample, cfg, progress=False)
    low, history = train_loop(_fresh(), loss, sample, cfg, progress=False, runtime=TrainRuntime(precision=precision))
    assert low.weight.dtype == torch.float32  # the weights stay fp32; only the arithmetic is 16-bit
    np.testing.assert_allclose(low.weight.detach().numpy(), [[2.0, -1.0, 0.5]], atol=0.05)
    np.testing.assert_allclose(low.weight.detach().numpy(), fp32.weight.detach().numpy(), atol=0.05)
    assert not torch.equal(low.weight, fp32.weight)  # autocast did run in 16 bits
    assert np.mean(history[-20:]) < 0.01 * np.mean(history[:20])


def test_compiled_training_matches_eager():
    """torch.compile changes the kernels, not the maths: the same training within float32 rounding."""
    pytest.importorskip("torch._inductor")
    sample, loss = _linear_problem()
    cfg = TrainConfig(steps=30, batch_size=32, learning_rate=1e-2, weight_decay=0.0)
    eager, h_eager = train_loop(_fresh(), loss, sample, cfg, progress=False)
    compiled, h_compiled = train_loop(_fresh(), loss, sample, cfg, progress=False, runtime=TrainRuntime(compile=True))
    np.testing.assert_allclose(h_compiled, h_eager, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(compiled.weight.detach().numpy(), eager.weight.detach().numpy(), rtol=1e-4, atol=1e-6)


def _bundle(tmp_path):
    data = make_toy_dataset(seed=1)
    BundleSpec.fit(data, [data], TINY_MODEL).save(tmp_path)
    return data


def test_loss_log_resumes_without_duplicate_rows(tmp_path):
    """A run interrupted after its step-10 checkpoint logged rows 5, 10, 15; the resumed run drops
    row 15 and logs 15, 20 again: every step once, in order, with the planner's first-action loss."""
    data = _bundle(tmp_path)
    cfg = TrainConfig(steps=20, batch_size=16, checkpoint_every=10)
    runtime = TrainRuntime(log_every=5)
    import mpdiffuser.data.windows as windows

    original = windows.WindowSampler.sample
    calls = {"n": 0}

    def crashing(self, rng, batch):
        calls["n"] += 1
        if calls["n"] == 17:
            raise KeyboardInterrupt
        return original(self, rng, batch)

    windows.WindowSampler.sample = crashing
    try:
        with pytest.raises(KeyboardInterrupt):
            train_model(tmp_path, "planner", [data], cfg, progress=False, runtime=runtime)
    finally:
        windows.WindowSampler.sample = original
    assert [r["step"] for r in read_log(tmp_path / "logs" / "planner.csv")] == [5, 10, 15]
    info = train_model(tmp_path, "planner", [data], cfg, progress=False, runtime=runtime)
    rows = read_log(info["log"])
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    with open(info["log"], newline="") as f:
        assert next(csv.reader(f)) == ["step", "loss", "first_action_loss", "steps_per_s"]
    assert all(r["loss"] > 0 and r["first_action_loss"] > 0 and r["steps_per_s"] > 0 for r in rows)
    # The CSV's loss is the mean of the history over each row's steps.
    history = torch.load(checkpoint_path(tmp_path, "planner"), weights_only=True)["history"].numpy()
    assert rows[-1]["loss"] == pytest.approx(history[15:20].mean(), rel=1e-4)


def test_finished_checkpoint_has_nothing_to_do_and_more_steps_continue(tmp_path):
    data = _bundle(tmp_path)
    first = train_model(tmp_path, "reward", [data], TrainConfig(steps=10, batch_size=16), progress=False)
    assert not first["nothing_to_do"]
    again = train_model(tmp_path, "reward", [data], TrainConfig(steps=10, batch_size=16), progress=False)
    assert again["nothing_to_do"] and again["final_loss"] == pytest.approx(first["final_loss"])
    (tmp_path / "reward.pt").unlink()  # stopped after the last checkpoint, before the weights
    train_model(tmp_path, "reward", [data], TrainConfig(steps=10, batch_size=16), progress=False)
    from_checkpoint = load_weights(tmp_path, "reward", BundleSpec.load(tmp_path)).state_dict()
    more = train_model(tmp_path, "reward", [data], TrainConfig(steps=15, batch_size=16), progress=False)
    assert not more["nothing_to_do"] and more["steps"] == 15
    assert [r["step"] for r in read_log(more["log"])] == [10, 15]  # each run's last step is a row
    forced = train_model(tmp_path, "reward", [data], TrainConfig(steps=10, batch_size=16), progress=False,
                         force=True)
    assert not forced["nothing_to_do"]
    restarted = load_weights(tmp_path, "reward", BundleSpec.load(tmp_path)).state_dict()
    assert all(torch.equal(from_checkpoint[k], restarted[k]) for k in restarted)  # the same 10-step training


def test_validation_holds_out_episodes_and_logs_their_errors(tmp_path):
    data = _bundle(tmp_path)
    cfg = TrainConfig(steps=20, batch_size=16, validate_every=10)
    info = train_model(tmp_path, "planner", [data], cfg, progress=False, runtime=TrainRuntime(log_every=5))
    assert info["held_out_episodes"] == 1  # 5% of 12 episodes, at least one
    rows = read_log(info["log"])
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    for r in rows:
        validated = r["step"] in (10, 20)
        for key in ("val_loss", "val_window_error", "val_first_action_error"):
            assert np.isfinite(r[key]) == validated and (not validated or r[key] > 0)
    dyn = train_model(tmp_path, "dynamics", [data], cfg, progress=False, runtime=TrainRuntime(log_every=10))
    assert list(read_log(dyn["log"])[0]) == ["step", "loss", "val_loss", "steps_per_s"]
    with pytest.raises(ValueError, match="made on other data"):  # the held-out episodes are part of the run
        train_model(tmp_path, "planner", [data], TrainConfig(steps=30, batch_size=16), progress=False)


def test_tensorboard_events_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    data = _bundle(tmp_path)
    train_model(tmp_path, "reward", [data], TrainConfig(steps=10, batch_size=16), progress=False,
                runtime=TrainRuntime(log_every=5))
    assert list((tmp_path / "logs" / "tensorboard" / "reward").glob("events.out.tfevents.*"))
    train_model(tmp_path, "dynamics", [data], TrainConfig(steps=10, batch_size=16), progress=False,
                runtime=TrainRuntime(log_every=5, tensorboard=False))
    assert not (tmp_path / "logs" / "tensorboard" / "dynamics").exists()


def test_checkpoints_and_weights_are_saved_device_agnostic(tmp_path):
    """Everything training writes holds CPU tensors, whatever the device it ran on (the same
    path moves a GPU run's state to the host), so a bundle loads and exports without a GPU."""
    data = _bundle(tmp_path)
    train_model(tmp_path, "planner", [data], TrainConfig(steps=5, batch_size=16), progress=False,
                runtime=TrainRuntime(device=str(resolve_device("auto"))))
    state = torch.load(checkpoint_path(tmp_path, "planner"), weights_only=True)  # no map_location
    for key in ("model", "ema"):
        assert all(t.device.type == "cpu" for t in state[key].values())
    weights = torch.load(tmp_path / "planner.pt", weights_only=True)["state_dict"]
    assert all(t.device.type == "cpu" for t in weights.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_training_is_reproducible_and_its_bundle_loads_on_the_cpu(tmp_path):
    """On a GPU: the same seed gives the same weights twice; the bundle it writes loads and plans
    with CPU tensors only."""
    data = _bundle(tmp_path / "a")
    _bundle(tmp_path / "b")
    runtime = TrainRuntime(device="cuda")
    for d in ("a", "b"):
        train_model(tmp_path / d, "planner", [data], TrainConfig(steps=20, batch_size=16), progress=False,
                    runtime=runtime)
    a = load_weights(tmp_path / "a", "planner", BundleSpec.load(tmp_path / "a")).state_dict()
    b = load_weights(tmp_path / "b", "planner", BundleSpec.load(tmp_path / "b")).state_dict()
    assert all(torch.equal(a[k], b[k]) and a[k].device.type == "cpu" for k in a)
    bf16 = train_model(tmp_path / "a", "dynamics", [data], TrainConfig(steps=20, batch_size=16), progress=False,
                       runtime=TrainRuntime(device="cuda", precision="bf16"))
    assert np.isfinite(bf16["final_loss"])


def test_which_steps_are_captured_as_cuda_graphs():
    """The captured step's rules (training/captured.py), checked without a GPU: every refusal says
    why, and a single-process GPU run with device batches in fp32, tf32 or bf16 is captured."""
    from mpdiffuser.training.captured import capture_refusal

    gpu = TrainRuntime(device="cuda")
    cases = [(TrainRuntime(), True, "not on a GPU"), (gpu, False, "batches are drawn on the host"),
             (dataclasses.replace(gpu, capture="off"), True, "capture is off"),
             (dataclasses.replace(gpu, precision="fp16"), True, "fp16 loss scaling"),
             (dataclasses.replace(gpu, compile=True), True, "torch.compile"),
             (dataclasses.replace(gpu, world_size=2), True, "several processes")]
    for runtime, on_device, reason in cases:
        assert reason in capture_refusal(runtime, on_device)
    if hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
        for precision in ("fp32", "tf32", "bf16"):
            assert capture_refusal(dataclasses.replace(gpu, precision=precision), True) is None
    with pytest.raises(ValueError, match="capture must be auto or off"):
        TrainRuntime(capture="always")
