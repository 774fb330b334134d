"""The shared training loop: determinism, resume after interruption, learning, fine-tuning."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from mpdiffuser.config import TrainConfig
from mpdiffuser.models.bundle import BundleSpec, ModelBundle, load_weights
from mpdiffuser.training.loop import NothingToDo, train_loop
from mpdiffuser.training.train import train_model
from tests.python.conftest import TINY_MODEL, make_toy_dataset


def _linear_problem():
    w_true = torch.tensor([[2.0, -1.0, 0.5]])

    def sample(rng, batch):
        x = rng.normal(size=(batch, 3)).astype(np.float32)
        return {"x": x, "y": (x @ w_true.numpy().T).astype(np.float32)}

    def loss(model, batch, gen):
        return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])

    return sample, loss


def _fresh(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 1)


def test_learns_and_is_deterministic():
    sample, loss = _linear_problem()
    cfg = TrainConfig(steps=300, batch_size=64, learning_rate=3e-2, weight_decay=0.0, ema_decay=0.9)
    ema_a, hist_a = train_loop(_fresh(), loss, sample, cfg, progress=False)
    ema_b, hist_b = train_loop(_fresh(), loss, sample, cfg, progress=False)
    assert hist_a == hist_b
    assert torch.equal(ema_a.weight, ema_b.weight)
    assert np.mean(hist_a[-20:]) < 0.01 * np.mean(hist_a[:20])
    np.testing.assert_allclose(ema_a.weight.detach().numpy(), [[2.0, -1.0, 0.5]], atol=0.05)


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    sample, loss = _linear_problem()
    cfg = TrainConfig(steps=60, batch_size=16, learning_rate=1e-2, checkpoint_every=20)
    full_ema, full_hist = train_loop(_fresh(), loss, sample, cfg, progress=False)

    calls = {"n": 0}

    def crashing_sample(rng, batch):
        calls["n"] += 1
        if calls["n"] == 35:
            raise KeyboardInterrupt  # the process dies between checkpoints 20 and 40
        return sample(rng, batch)

    ckpt = tmp_path / "m.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_loop(_fresh(), loss, crashing_sample, cfg, checkpoint=ckpt, progress=False)
    assert torch.load(ckpt, weights_only=True)["step"] == 20  # lost at most one interval
    resumed_ema, resumed_hist = train_loop(_fresh(seed=123), loss, sample, cfg, checkpoint=ckpt, progress=False)
    assert resumed_hist == full_hist
    assert torch.equal(resumed_ema.weight, full_ema.weight)


def test_checkpoint_of_other_config_is_refused(tmp_path):
    sample, loss = _linear_problem()
    ckpt = tmp_path / "m.ckpt"
    train_loop(_fresh(), loss, sample, TrainConfig(steps=5, checkpoint_every=5), checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match=r"another training config \(action_weight\); --force starts over"):
        train_loop(_fresh(), loss, sample, TrainConfig(steps=5, checkpoint_every=5, action_weight=3.0),
                   checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match=r"another training config \(ema_every\)"):
        train_loop(_fresh(), loss, sample, TrainConfig(steps=5, checkpoint_every=5, ema_every=10),
                   checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="at step 5, past --steps 4: give at least 5 steps"):
        train_loop(_fresh(), loss, sample, TrainConfig(steps=4, checkpoint_every=5), checkpoint=ckpt, progress=False)
    with pytest.raises(NothingToDo):
        train_loop(_fresh(), loss, sample, TrainConfig(steps=5, checkpoint_every=5), checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="on other data"):
        train_loop(_fresh(), loss, sample, TrainConfig(steps=6, checkpoint_every=5), checkpoint=ckpt,
                   progress=False, identity={"data": [("other", 5)]})


def test_continued_training_equals_one_longer_run(tmp_path):
    """--steps beyond a finished checkpoint continues it: 30 then 50 steps give the weights and
    loss history of one 50-step run (no schedule depends on the total), whatever the checkpoint
    interval; the checkpoint loads with weights_only=True (no unpickling)."""
    sample, loss = _linear_problem()
    cfg = TrainConfig(steps=50, batch_size=16, learning_rate=1e-2, checkpoint_every=20)
    full_ema, full_hist = train_loop(_fresh(), loss, sample, cfg, progress=False)
    ckpt = tmp_path / "m.ckpt"
    train_loop(_fresh(), loss, sample, TrainConfig(steps=30, batch_size=16, learning_rate=1e-2, checkpoint_every=7),
               checkpoint=ckpt, progress=False)
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 30 and state["format"] == 2 and state["history"].shape == (30,)
    more_ema, more_hist = train_loop(_fresh(seed=5), loss, sample, cfg, checkpoint=ckpt, progress=False)
    assert more_hist == full_hist
    assert torch.equal(more_ema.weight, full_ema.weight)


def test_checkpoint_from_before_action_weight_resumes(tmp_path):
    """Checkpoints written before TrainConfig.action_weight and ema_every existed hold no such keys;
    they resume under the values of the training they came from (weight 1, EMA every step) and are
    refused under any other."""
    sample, loss = _linear_problem()
    ckpt = tmp_path / "m.ckpt"
    cfg = TrainConfig(steps=10, batch_size=16, checkpoint_every=5, action_weight=1.0, ema_every=1)
    full_ema, full_hist = train_loop(_fresh(), loss, sample, cfg, progress=False)
    train_loop(_fresh(), loss, sample, cfg.__class__(**{**cfg.__dict__, "steps": 5}), checkpoint=ckpt,
               progress=False)
    state = torch.load(ckpt, weights_only=False)
    del state["config"]["action_weight"]
    del state["config"]["ema_every"]
    state["config"]["steps"] = 10  # as if the old run had been asked for 10 steps and stopped at 5
    torch.save(state, ckpt)
    resumed_ema, resumed_hist = train_loop(_fresh(), loss, sample, cfg, checkpoint=ckpt, progress=False)
    assert resumed_hist == full_hist and torch.equal(resumed_ema.weight, full_ema.weight)
    with pytest.raises(ValueError, match="another training config"):
        train_loop(_fresh(), loss, sample, TrainConfig(steps=10, batch_size=16, checkpoint_every=5),
                   checkpoint=ckpt, progress=False)  # today's default weight 10


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fine_tuning_dynamics_leaves_other_models_byte_identical(tmp_path):
    data = make_toy_dataset(seed=1)
    BundleSpec.fit(data, [data], TINY_MODEL).save(tmp_path)
    cfg = TrainConfig(steps=10, batch_size=16, checkpoint_every=5)
    for name in ("planner", "dynamics", "reward"):
        train_model(tmp_path, name, [data], cfg, progress=False)
    before = {n: _digest(tmp_path / f"{n}.pt") for n in ("planner", "reward", "dynamics")}
    new_data = make_toy_dataset(seed=2)
    info = train_model(tmp_path, "dynamics", [new_data], cfg, fine_tune=True, progress=False)
    assert info["fine_tuned"]
    assert _digest(tmp_path / "planner.pt") == before["planner"]
    assert _digest(tmp_path / "reward.pt") == before["reward"]
    assert _digest(tmp_path / "dynamics.pt") != before["dynamics"]
    ModelBundle.load(tmp_path)  # still loads as one bundle


def test_initial_weights_depend_on_the_seed_alone(tmp_path):
    """The same bundle, data and seed train the same weights whatever the process did before (for
    example training a SAC policy, which draws from torch's generator); another seed does not."""
    data = make_toy_dataset(seed=1)
    cfg = TrainConfig(steps=5, batch_size=16)
    weights = []
    for i, seed in enumerate((0, 0, 1)):
        BundleSpec.fit(data, [data], TINY_MODEL).save(tmp_path / str(i))
        torch.rand(100 * (i + 1))  # a different generator state each time
        train_model(tmp_path / str(i), "planner", [data], TrainConfig(steps=5, batch_size=16, seed=seed), progress=False)
        weights.append(load_weights(tmp_path / str(i), "planner", BundleSpec.load(tmp_path / str(i))).state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    state = torch.random.get_rng_state()
    train_model(tmp_path / "0", "reward", [data], cfg, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left as it was
    with pytest.raises(ValueError, match="unknown model"):
        train_model(tmp_path / "0", "ranker", [data], cfg, progress=False)


def test_models_of_another_environment_are_rejected(tmp_path):
    data = make_toy_dataset(seed=1)
    BundleSpec.fit(data, [data], TINY_MODEL).save(tmp_path)
    for name in ("planner", "dynamics", "reward"):
        train_model(tmp_path, name, [data], TrainConfig(steps=2, batch_size=8), progress=False)
    with pytest.raises(ValueError, match="trained for Toy-v0, not Hopper-v5"):
        ModelBundle.load(tmp_path, env_id="Hopper-v5")
    other = make_toy_dataset(seed=1, env_id="Other-v0")
    with pytest.raises(ValueError, match="Other-v0"):
        train_model(tmp_path, "dynamics", [other], TrainConfig(steps=2), progress=False)
    # A weight file copied in from a bundle of another environment.
    other_dir = tmp_path / "other"
    BundleSpec.fit(other, [other], TINY_MODEL).save(other_dir)
    train_model(other_dir, "planner", [other], TrainConfig(steps=2, batch_size=8), progress=False)
    (tmp_path / "planner.pt").write_bytes((other_dir / "planner.pt").read_bytes())
    with pytest.raises(ValueError, match="trained for Other-v0"):
        ModelBundle.load(tmp_path)


def test_untrained_model_is_reported(tmp_path):
    data = make_toy_dataset()
    BundleSpec.fit(data, [data], TINY_MODEL).save(tmp_path)
    with pytest.raises(FileNotFoundError, match="'planner' has not been trained"):
        ModelBundle.load(tmp_path)


def test_planner_loss_weights_the_first_action_only():
    """action_weight scales the squared error of u_0 (row 0, the last du columns) and nothing else:
    with the same noise draws, loss(w) - loss(1) = (w - 1) * sum(err of u_0) / numel."""
    from mpdiffuser.training.losses import PlannerLoss

    B, H, dx, du = 6, 4, 3, 2
    batch = {"states": torch.rand(B, H, dx) * 2 - 1, "actions": torch.rand(B, H, du) * 2 - 1,
             "x0": torch.zeros(B, dx), "cond": torch.zeros(B, 1)}
    seen = {}

    def model(tau_k, x0, cond, k):  # predicts a fixed offset so the error depends on the element
        out = torch.linspace(-1.0, 1.0, H * (dx + du)).view(1, H, dx + du).expand_as(tau_k)
        seen["out"] = out
        return out

    def run(weight):
        loss, extra = PlannerLoss(5, 0.0, weight)(model, batch, torch.Generator().manual_seed(3))
        seen["first_action_loss"] = extra["first_action_loss"]
        return loss

    base, weighted = run(1.0), run(10.0)
    gen = torch.Generator().manual_seed(3)  # the same draws, in the loss's order: levels, then noise
    ref = PlannerLoss(5, 0.0)
    tau = torch.cat([batch["states"], batch["actions"]], -1)
    k = ref.levels(B, gen)
    _, eps = ref.noised(tau, k, gen)
    err = (seen["out"] - eps).square()
    assert base.item() == pytest.approx(err.mean().item(), rel=1e-6)
    expected = base.item() + 9.0 * err[:, 0, dx:].sum().item() / err.numel()
    assert weighted.item() == pytest.approx(expected, rel=1e-6)
    assert seen["first_action_loss"].item() == pytest.approx(err[:, 0, dx:].mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="action_weight"):
        TrainConfig(action_weight=0.0)


def test_format_1_checkpoints_load_with_weights_only_and_resume(tmp_path):
    """A checkpoint of the old format (RNG states as their own objects, the history a list, no
    world size) loads with weights_only=True and resumes to the uninterrupted result."""
    import json

    sample, loss = _linear_problem()
    cfg = TrainConfig(steps=10, batch_size=16, checkpoint_every=5)
    full_ema, full_hist = train_loop(_fresh(), loss, sample, cfg, progress=False)
    ckpt = tmp_path / "m.ckpt"
    train_loop(_fresh(), loss, sample, TrainConfig(steps=5, batch_size=16, checkpoint_every=5), checkpoint=ckpt,
               progress=False)
    state = torch.load(ckpt, weights_only=True)
    old = {k: state[k] for k in ("model", "ema", "optimizer", "step", "config", "identity")}
    old |= {"numpy_rng": json.loads(state["rng"][0]["numpy"]), "noise_rng": state["rng"][0]["noise"],
            "history": state["history"].tolist()}
    torch.save(old, ckpt)
    torch.load(ckpt, weights_only=True)  # no unpickling of arbitrary objects needed
    resumed_ema, resumed_hist = train_loop(_fresh(), loss, sample, cfg, checkpoint=ckpt, progress=False)
    assert resumed_hist == full_hist and torch.equal(resumed_ema.weight, full_ema.weight)


def test_device_batches_repeat_bit_for_bit_resume_and_learn(tmp_path):
    """Batches drawn on the training device (here the CPU, as a GPU run draws them): a repeat from
    the seed is bit-identical, an interrupted run resumes to the uninterrupted result, a host-batch
    checkpoint is refused with the reason, and the planner learns as on the host path."""
    from mpdiffuser.data.windows import WindowSampler
    from mpdiffuser.training.loop import initialized
    from mpdiffuser.training.losses import PlannerLoss
    from mpdiffuser.training.runtime import TrainRuntime

    data = make_toy_dataset(seed=4)
    spec = BundleSpec.fit(data, [data], TINY_MODEL)
    host = WindowSampler(data, spec.states, spec.actions, TINY_MODEL.horizon, spec.conditions)
    device = host.on_device("cpu")
    loss = PlannerLoss(TINY_MODEL.num_steps, TINY_MODEL.condition_dropout, 1.0, TINY_MODEL.prediction)
    cfg = TrainConfig(steps=60, batch_size=16, learning_rate=3e-3, checkpoint_every=20)
    on_device = TrainRuntime(batches="device")

    def fresh():
        return initialized(lambda: spec.build("planner"), 0)

    def run(**kw):
        return train_loop(fresh(), loss, host.sample, cfg, progress=False, device_sample=device.sample, **kw)

    ema, history = run(runtime=on_device)
    again_ema, again = run(runtime=on_device)
    assert history == again and all(torch.equal(a, b) for a, b in zip(ema.parameters(), again_ema.parameters()))
    host_ema, host_history = run(runtime=TrainRuntime(batches="host"))
    assert host_history != history  # another stream ...
    for h in (history, host_history):  # ... that learns alike
        assert np.mean(h[-10:]) < 0.8 * np.mean(h[:10])

    calls = {"n": 0}

    def crashing(gen, batch):
        calls["n"] += 1
        if calls["n"] == 35:
            raise KeyboardInterrupt
        return device.sample(gen, batch)

    ckpt = tmp_path / "device.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_loop(fresh(), loss, host.sample, cfg, ckpt, progress=False, runtime=on_device, device_sample=crashing)
    assert torch.load(ckpt, weights_only=True)["step"] == 20
    resumed_ema, resumed = run(runtime=on_device, checkpoint=ckpt)
    assert resumed == history and all(torch.equal(a, b) for a, b in zip(ema.parameters(), resumed_ema.parameters()))

    host_ckpt = tmp_path / "host.ckpt"
    train_loop(fresh(), loss, host.sample, dataclasses.replace(cfg, steps=20), host_ckpt, progress=False)
    with pytest.raises(ValueError, match="drew its batches on the host, this run draws them on the device"):
        run(runtime=on_device, checkpoint=host_ckpt)


def test_train_model_draws_device_batches_for_every_model(tmp_path):
    from mpdiffuser.training.runtime import TrainRuntime

    data = make_toy_dataset(seed=8, costs=True)
    BundleSpec.fit(data, [data], TINY_MODEL).save(tmp_path)
    for name in ("planner", "dynamics", "reward", "cost"):
        info = train_model(tmp_path, name, [data], TrainConfig(steps=6, batch_size=8, checkpoint_every=3),
                           progress=False, runtime=TrainRuntime(batches="device"))
        assert info["steps"] == 6 and np.isfinite(info["final_loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_training_draws_batches_on_the_gpu_and_repeats_bit_for_bit(tmp_path):
    from mpdiffuser.training.runtime import TrainRuntime

    runtime = TrainRuntime(device="cuda")
    assert runtime.device_batches  # auto: on the device on a GPU
    data = make_toy_dataset(seed=9)
    weights = []
    for run in ("a", "b"):
        BundleSpec.fit(data, [data], TINY_MODEL).save(tmp_path / run)
        train_model(tmp_path / run, "planner", [data], TrainConfig(steps=40, batch_size=32, checkpoint_every=20),
                    progress=False, runtime=runtime)
        weights.append(load_weights(tmp_path / run, "planner", BundleSpec.load(tmp_path / run)).state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_captured_step_trains_as_the_eager_step(tmp_path, capsys):
    """The step replayed as a CUDA graph (training/captured.py) draws the same batches and noise
    and applies the same update as the eager step: the loss histories agree to float32 rounding
    (relative 1e-4: the same kernels in another launch order), and a resumed captured run equals
    an uninterrupted one."""
    from mpdiffuser.data.windows import WindowSampler
    from mpdiffuser.training.captured import capture_refusal
    from mpdiffuser.training.loop import initialized
    from mpdiffuser.training.losses import PlannerLoss
    from mpdiffuser.training.runtime import TrainRuntime

    data = make_toy_dataset(seed=4)
    spec = BundleSpec.fit(data, [data], TINY_MODEL)
    host = WindowSampler(data, spec.states, spec.actions, TINY_MODEL.horizon, spec.conditions)
    device = host.on_device("cuda")
    loss = PlannerLoss(TINY_MODEL.num_steps, TINY_MODEL.condition_dropout, 1.0, TINY_MODEL.prediction)
    cfg = TrainConfig(steps=40, batch_size=32, checkpoint_every=20)
    captured_rt, eager_rt = TrainRuntime(device="cuda"), TrainRuntime(device="cuda", capture="off")
    assert capture_refusal(captured_rt, True) is None, capture_refusal(captured_rt, True)

    def run(runtime, **kw):
        model = initialized(lambda: spec.build("planner"), 0)
        return train_loop(model, loss, host.sample, cfg, progress=False, runtime=runtime, device_sample=device.sample,
                          **kw)

    _, captured = run(captured_rt)
    assert "captured as a CUDA graph" in capsys.readouterr().err + capsys.readouterr().out
    _, eager = run(eager_rt)
    np.testing.assert_allclose(captured, eager, rtol=1e-4)
    # 20 steps, then continued to 40 from the checkpoint (a fresh capture after 3 eager steps).
    ckpt = tmp_path / "half.ckpt"
    model = initialized(lambda: spec.build("planner"), 0)
    train_loop(model, loss, host.sample, dataclasses.replace(cfg, steps=20), ckpt, progress=False,
               runtime=captured_rt, device_sample=device.sample)
    _, resumed = run(captured_rt, checkpoint=ckpt)
    np.testing.assert_allclose(resumed, captured, rtol=1e-4)


def test_models_trained_at_once_equal_models_trained_one_after_another(tmp_path):
    """train_models(at_once=True): a thread per model (and a CUDA stream on a GPU); each model
    keeps its own generators, so the weights equal sequential training's, bit for bit."""
    from mpdiffuser.training.train import train_models

    data = make_toy_dataset(seed=10)
    cfg = TrainConfig(steps=30, batch_size=16, checkpoint_every=15)
    names = ("planner", "dynamics", "reward")
    weights = {}
    for mode in (False, True):
        bundle = tmp_path / str(mode)
        BundleSpec.fit(data, [data], TINY_MODEL).save(bundle)
        infos = train_models([(bundle, name, [data], cfg, False) for name in names], at_once=mode, progress=False)
        assert [i["steps"] for i in infos] == [30, 30, 30]
        spec = BundleSpec.load(bundle)
        weights[mode] = {n: load_weights(bundle, n, spec).state_dict() for n in names}
    for name in weights[False]:
        for key, value in weights[False][name].items():
            assert torch.equal(value, weights[True][name][key]), (name, key)
