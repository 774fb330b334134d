"""The native CPU backend against the PyTorch reference on the same model file and seeds.

Tolerance (float32 rounding only; the two sum in different orders and use different exp/SiLU
implementations): finished windows within 2e-4 absolute and 1e-5 relative L2, values within 1e-4
relative, the same chosen candidate. Same backend twice and any thread count: bit-identical.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mpdiffuser.bench import synthetic_model_file
from mpdiffuser.config import ModelConfig, SamplerOptions
from mpdiffuser.sampling.sampler import Sampler

WINDOW_ABS, WINDOW_REL_L2, VALUE_REL = 2e-4, 1e-5, 1e-4
# The CUDA kernel adds each dense layer's inputs in slices (split-K) and then the slices' sums, an
# order unlike the reference's and the CPU's; over K steps one window element in 57000 drifted to
# 3e-4 (odd size, N = 1024) while the relative L2 error stayed 2e-6. Same relative bound.
CUDA_WINDOW_ABS = 5e-4

SIZES = {
    "tiny": dict(state_dim=3, action_dim=2, model=ModelConfig(horizon=4, num_steps=5, width=24, layers=2,
                                                              ranker_width=16, ranker_layers=2)),
    "odd": dict(state_dim=5, action_dim=3, model=ModelConfig(horizon=7, num_steps=9, width=72, layers=3,
                                                             ranker_width=40, ranker_layers=3)),
    "hopper": dict(state_dim=11, action_dim=3, model=ModelConfig()),
}


def assert_close(native: np.ndarray, reference: np.ndarray, max_abs: float, rel_l2: float) -> None:
    err = np.abs(native - reference).max()
    rel = np.linalg.norm(native - reference) / max(np.linalg.norm(reference), 1e-12)
    assert err <= max_abs and rel <= rel_l2, f"max abs {err:.3g} (<= {max_abs}), rel L2 {rel:.3g} (<= {rel_l2})"


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("models")
    files = {}
    for name, kw in SIZES.items():
        for cost in (False, True):
            files[name, cost] = synthetic_model_file(root / f"{name}-{int(cost)}.safetensors", with_cost=cost,
                                                     seed=len(files), env_id=f"{name}-v0", **kw)
    return files


@pytest.fixture(scope="module")
def samplers(model_files) -> dict:
    return {key: (Sampler(path, "cpu"), Sampler(path, "torch")) for key, path in model_files.items()}


def _state(spec, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(spec.states.low, spec.states.high)).astype(np.float32)


def _compare(native: Sampler, reference: Sampler, options: SamplerOptions, seed: int,
             window_abs: float = WINDOW_ABS) -> None:
    state = _state(native.spec, seed)
    a, b = native.plan(state, seed, options), reference.plan(state, seed, options)
    assert a.index == b.index
    assert_close(a.windows, b.windows.astype(np.float32), window_abs, WINDOW_REL_L2)
    np.testing.assert_allclose(a.values, b.values, rtol=VALUE_REL, atol=VALUE_REL * np.abs(b.values).max())
    np.testing.assert_allclose(a.actions, b.actions, rtol=0, atol=window_abs * 4)
    if b.costs is not None:
        np.testing.assert_allclose(a.costs, b.costs, rtol=VALUE_REL, atol=VALUE_REL * max(np.abs(b.costs).max(), 1))


@pytest.mark.parametrize("size", ["tiny", "odd"])
@pytest.mark.parametrize("cost", [False, True])
@pytest.mark.parametrize("n", [1, 7, 64])
@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("w", [1.0, 2.0])
def test_matches_reference(samplers, size, cost, n, lam, w):
    native, reference = samplers[size, cost]
    options = native.defaults.replace(num_candidates=n, dynamics_weight=lam, guidance=w)
    if cost:
        options = options.replace(cost_limit=3.0, cost_budget=0.5)
    _compare(native, reference, options, seed=11 * n + int(10 * lam))


@pytest.mark.parametrize("cost", [False, True])
def test_matches_reference_at_default_size(samplers, cost):
    native, reference = samplers["hopper", cost]
    for n, lam, w in [(1, 1.0, 1.2), (16, 0.5, 2.0), (64, 1.0, 1.0)]:
        options = native.defaults.replace(num_candidates=n, dynamics_weight=lam, guidance=w)
        _compare(native, reference, options, seed=n)


def test_dynamics_schedules_match_reference(samplers):
    native, reference = samplers["odd", False]
    for every, last in [(2, 0), (3, 0), (1, 4), (4, 5)]:
        options = native.defaults.replace(num_candidates=9, dynamics_every=every, dynamics_last=last)
        _compare(native, reference, options, seed=every * 10 + last)


def test_actions_per_plan_and_discount(samplers):
    native, reference = samplers["odd", True]
    options = native.defaults.replace(num_candidates=5, actions_per_plan=3, discount=0.9, cost_limit=1.0)
    state = _state(native.spec, 3)
    a, b = native.plan(state, 3, options), reference.plan(state, 3, options)
    assert a.actions.shape == (3, 3) and a.index == b.index
    np.testing.assert_allclose(a.actions, b.actions, atol=1e-3)


def test_repeat_and_thread_count_are_bit_identical(model_files):
    path = model_files["hopper", False]
    options = SamplerOptions(num_candidates=37)
    state = _state(Sampler(path, "cpu").spec, 0)
    plans = [Sampler(path, "cpu", threads=t).plan(state, 5, options) for t in (1, 2, 3, 1)]
    for p in plans[1:]:
        assert p.index == plans[0].index
        assert np.array_equal(p.windows, plans[0].windows) and np.array_equal(p.values, plans[0].values)


def test_candidates_do_not_depend_on_batch_size(samplers):
    native, _ = samplers["odd", False]
    state = _state(native.spec, 1)
    big = native.plan(state, 9, native.defaults.replace(num_candidates=64))
    small = native.plan(state, 9, native.defaults.replace(num_candidates=32))
    assert np.array_equal(big.windows[:32], small.windows)


def test_plan_batch_equals_single_plans(samplers):
    native, _ = samplers["tiny", True]
    states = np.stack([_state(native.spec, s) for s in range(4)])
    batch = native.plan_batch(states, [3, 1, 4, 1])
    for state, seed, plan in zip(states, [3, 1, 4, 1], batch):
        single = native.plan(state, seed)
        assert single.index == plan.index and np.array_equal(single.windows, plan.windows)


def test_bad_input_names_the_problem(samplers, model_files):
    native, _ = samplers["tiny", False]
    dx = native.spec.state_dim
    with pytest.raises(ValueError, match=rf"state must have shape \({dx},\)"):
        native.plan(np.zeros(dx + 1), 0)
    with pytest.raises(ValueError, match="NaN"):
        native.plan(np.array([0.0, np.nan, 0.0]), 0)
    with pytest.raises(ValueError, match="seed"):
        native.plan(np.zeros(dx), -1)
    with pytest.raises(ValueError, match="cost_limit"):
        native.plan(np.zeros(dx), 0, native.defaults.replace(cost_limit=1.0))
    with pytest.raises(ValueError, match="actions_per_plan"):
        native.plan(np.zeros(dx), 0, native.defaults.replace(actions_per_plan=99))
    costly, _ = samplers["tiny", True]
    with pytest.raises(ValueError, match="cost_limit"):
        costly.plan(np.zeros(dx), 0, costly.defaults.replace(cost_limit=None))
    with pytest.raises(ValueError, match="backend"):
        Sampler(model_files["tiny", False], "gpu")
    with pytest.raises(ValueError, match="holds models for tiny-v0, not Hopper-v5"):
        Sampler(model_files["tiny", False], "cpu", env_id="Hopper-v5")
    # The sampler still works after each error, with the same answer as before.
    first = native.plan(np.zeros(dx), 7)
    with pytest.raises(ValueError):
        native.plan(np.full(dx, np.inf), 7)
    assert np.array_equal(native.plan(np.zeros(dx), 7).windows, first.windows)


def test_native_binding_checks_arguments(model_files):
    from mpdiffuser import _core

    model = _core.Model(str(model_files["tiny", False]))
    ws = _core.Workspace(model, "cpu", 4, 1)
    options = model.default_options()
    options.num_candidates = 4
    with pytest.raises(ValueError, match=r"states must have shape \(2, 3\), got \(2, 4\)"):
        ws.plan_batch(np.zeros((2, 4), np.float32), np.zeros(2, np.uint64), options)
    with pytest.raises(ValueError, match="seeds must be a 1-D integer array of length 2"):
        ws.plan_batch(np.zeros((2, 3), np.float32), np.zeros(3, np.uint64), options)
    with pytest.raises(ValueError, match="non-negative"):
        ws.plan_batch(np.zeros((1, 3), np.float32), np.array([-1]), options)
    options.num_candidates = 5
    with pytest.raises(ValueError, match=r"num_candidates must be in \[1, 4\]"):
        ws.plan_batch(np.zeros((1, 3), np.float32), np.zeros(1, np.uint64), options)
    with pytest.raises(ValueError, match="max_candidates"):
        _core.Workspace(model, "cpu", -1, 1)
    with pytest.raises(ValueError, match="backend must be 'cpu' or 'cuda'"):
        _core.Workspace(model, "tpu", 4, 1)


def test_bad_model_files_are_rejected(tmp_path, model_files):
    from mpdiffuser import _core

    data = model_files["tiny", False].read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="outside the .*data section|truncated"):
        _core.Model(str(truncated))
    with pytest.raises(ValueError):
        Sampler(truncated, "cpu")
    with pytest.raises(FileNotFoundError):
        _core.Model(str(tmp_path / "missing.safetensors"))


def test_gil_is_released_while_planning(samplers):
    native, _ = samplers["hopper", False]
    states = np.stack([_state(native.spec, s) for s in range(30)])
    done = threading.Event()
    worker = threading.Thread(target=lambda: (native.plan_batch(states, list(range(30)),
                                                                native.defaults.replace(num_candidates=32)),
                                              done.set()))
    ticks = 0
    worker.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    worker.join()
    assert ticks >= 5  # the main thread ran while the native plans were in progress


def _cuda_device() -> bool:
    from mpdiffuser import _core

    return bool(_core.build_info()["cuda_compiled"] and _core.cuda_device_available())


@pytest.mark.skipif(not _cuda_device(), reason="no CUDA device")
@pytest.mark.parametrize("size", ["tiny", "odd", "hopper"])
@pytest.mark.parametrize("cost", [False, True])
@pytest.mark.parametrize("n", [1, 7, 64, 1024])
@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_cuda_matches_reference_and_cpu(model_files, samplers, size, cost, n, lam):
    """The CUDA backend against the PyTorch reference (the CPU backend's tolerances, but 5e-4 on a
    window element: CUDA_WINDOW_ABS) and against the CPU backend (same chosen index); repeats are
    bit-identical."""
    cuda = Sampler(model_files[size, cost], "cuda")
    cpu, reference = samplers[size, cost]
    options = cuda.defaults.replace(num_candidates=n, dynamics_weight=lam,
                                    cost_limit=2.0 if cost else None, cost_budget=0.5 if cost else None)
    _compare(cuda, reference, options, seed=5, window_abs=CUDA_WINDOW_ABS)
    state = _state(cuda.spec, 5)
    a, b = cuda.plan(state, 9, options), cpu.plan(state, 9, options)
    assert a.index == b.index
    assert_close(a.windows, b.windows, CUDA_WINDOW_ABS, WINDOW_REL_L2)
    again = cuda.plan(state, 9, options)
    assert np.array_equal(again.windows, a.windows) and again.index == a.index


@pytest.mark.skipif(not _cuda_device(), reason="no CUDA device")
@pytest.mark.parametrize("size", ["odd", "hopper"])
def test_cuda_kernel_variants_agree_bit_for_bit(model_files, monkeypatch, size):
    """1, 2 or 4 candidates per thread block (MPD_CUDA_CANDIDATES_PER_BLOCK, read when the
    workspace is made) change the grid, never a plan: windows, values and index bit-identical."""
    plans = []
    for cpb in ("1", "2", "4"):
        monkeypatch.setenv("MPD_CUDA_CANDIDATES_PER_BLOCK", cpb)
        sampler = Sampler(model_files[size, True], "cuda")
        options = sampler.defaults.replace(num_candidates=37, cost_limit=2.0, cost_budget=0.5)
        plans.append(sampler.plan(_state(sampler.spec, 3), 11, options))
    for plan in plans[1:]:
        assert np.array_equal(plan.windows, plans[0].windows) and np.array_equal(plan.values, plans[0].values)
        assert np.array_equal(plan.costs, plans[0].costs) and plan.index == plans[0].index


def test_cuda_backend_without_a_device_says_so(model_files):
    from mpdiffuser import _core

    if _cuda_device():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="cuda"):
        Sampler(model_files["tiny", False], "cuda")
    if _core.build_info()["cuda_compiled"]:  # compiled in: the workspace itself reports the missing device
        with pytest.raises(RuntimeError, match="not available"):
            _core.Workspace(_core.Model(str(model_files["tiny", False])), "cuda", 4, 0)


class _FakeDeviceArray:
    """Only the __cuda_array_interface__ of a device array, for checking the argument checks."""

    def __init__(self, shape, typestr="<f4", strides=None, read_only=False, pointer=0x7f0000001000):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "strides": strides,
                                         "data": (pointer, read_only), "version": 3}


def test_device_array_checks():
    from mpdiffuser.sampling.sampler import device_pointer, stream_handle

    assert device_pointer(_FakeDeviceArray((4, 3)), "windows", (4, 3), ("<f4",)) == 0x7f0000001000
    assert device_pointer(_FakeDeviceArray((4, 3), strides=(12, 4)), "w", (4, 3), ("<f4",)) == 0x7f0000001000
    assert device_pointer(None, "values", (4,), ("<f4",)) == 0
    with pytest.raises(TypeError, match="__cuda_array_interface__"):
        device_pointer(np.zeros(3, np.float32), "state", (3,), ("<f4",))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        device_pointer(_FakeDeviceArray((4,)), "state", (3,), ("<f4",))
    with pytest.raises(ValueError, match="dtype"):
        device_pointer(_FakeDeviceArray((3,), "<f8"), "state", (3,), ("<f4",))
    with pytest.raises(ValueError, match="C-contiguous"):
        device_pointer(_FakeDeviceArray((4, 3), strides=(4, 16)), "windows", (4, 3), ("<f4",))
    with pytest.raises(ValueError, match="read-only"):
        device_pointer(_FakeDeviceArray((2,), read_only=True), "actions", (2,), ("<f4",))

    class TorchLikeStream:
        cuda_stream = 1234

    assert stream_handle(None) == 0 and stream_handle(TorchLikeStream()) == 1234 and stream_handle(77) == 77
    with pytest.raises(TypeError, match="stream"):
        stream_handle("default")


def test_plan_device_needs_the_cuda_backend(samplers):
    cpu, _ = samplers["tiny", False]
    with pytest.raises(ValueError, match="backend 'cuda'"):
        cpu.plan_device(_FakeDeviceArray((3,)), 0, actions=_FakeDeviceArray((1, 2)), index=_FakeDeviceArray((1,), "<u4"))


@pytest.mark.skipif(not _cuda_device(), reason="no CUDA device")
def test_plan_device_with_torch_tensors_equals_plan(model_files):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    sampler = Sampler(model_files["odd", True], "cuda")
    options = sampler.defaults.replace(num_candidates=33, cost_limit=2.0, cost_budget=0.5)
    state = _state(sampler.spec, 3)
    expected = sampler.plan(state, 12, options)
    H, D = sampler.spec.model.horizon, sampler.spec.state_dim + sampler.spec.action_dim
    dev = dict(device="cuda", dtype=torch.float32)
    actions, values, costs = torch.empty(1, sampler.spec.action_dim, **dev), torch.empty(33, **dev), torch.empty(33, **dev)
    windows, index = torch.empty(33, H, D, **dev), torch.empty(1, device="cuda", dtype=torch.int32)
    stream = torch.cuda.current_stream()
    sampler.plan_device(torch.from_numpy(state).cuda(), 12, options, actions=actions, index=index, values=values,
                        costs=costs, windows=windows, stream=stream)
    stream.synchronize()
    assert int(index.item()) == expected.index
    assert np.array_equal(windows.cpu().numpy(), expected.windows)
    assert np.array_equal(actions.cpu().numpy(), expected.actions)


def test_warm_up_sizes_the_workspace_before_the_first_timed_plan(model_files):
    sampler = Sampler(model_files["tiny", False], "cpu", threads=1)
    options = sampler.defaults.replace(num_candidates=37)
    sampler.warm_up(options)
    workspace = sampler._workspace
    assert workspace.max_candidates >= 37
    plan = sampler.plan(_state(sampler.spec, 1), 4, options)
    assert sampler._workspace is workspace and plan.windows.shape[0] == 37  # no second workspace
    Sampler(model_files["tiny", False], "torch").warm_up(options)  # the reference has none; still plans


@pytest.mark.skipif(_cuda_device(), reason="a CUDA device is present")
def test_cuda_backend_says_whether_the_build_or_the_device_is_missing(model_files):
    from mpdiffuser import _core

    with pytest.raises(RuntimeError) as missing:
        Sampler(next(iter(model_files.values())), "cuda")
    expected = "no CUDA device is visible" if _core.build_info()["cuda_compiled"] else "built without CUDA"
    assert expected in str(missing.value) and "use backend 'cpu'" in str(missing.value)


@pytest.mark.skipif(not _cuda_device(), reason="no CUDA device")
@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize("horizon, dim, mults", [(8, 8, (1, 2)), (16, 32, (1, 2, 4))])
def test_cuda_plans_the_unet_family_as_the_cpu_backend(tmp_path, prediction, horizon, dim, mults):
    """The unet family on the CUDA backend (csrc/cuda/unet.cuh) against the CPU backend and the
    reference, the tests' tiny U-Net and the default size: the same chosen index, windows within
    the CUDA tolerance, cold and warm-started, guided and not; repeats bit-identical."""
    from mpdiffuser.bench import synthetic_model_file
    from mpdiffuser.config import ModelConfig

    model = ModelConfig(architecture="unet", horizon=horizon, num_steps=8, unet_dim=dim, unet_mults=mults,
                        unet_embed_dim=dim, prediction=prediction, normalizer="cdf" if prediction == "sample" else "minmax")
    path = synthetic_model_file(tmp_path / "unet.safetensors", model=model)
    cuda, cpu, reference = Sampler(path, "cuda"), Sampler(path, "cpu", threads=2), Sampler(path, "torch")
    state = _state(cuda.spec, 4)
    for options in (cuda.defaults.replace(num_candidates=1),
                    cuda.defaults.replace(num_candidates=16, guidance=1.0, dynamics_weight=0.5, temperature=0.3),
                    cuda.defaults.replace(num_candidates=16, dynamics_guidance=1.0, actions_per_plan=3)):
        a, b = cuda.plan(state, 9, options), cpu.plan(state, 9, options)
        assert a.index == b.index
        assert_close(a.windows, b.windows, CUDA_WINDOW_ABS, WINDOW_REL_L2)
        assert_close(a.windows, reference.plan(state, 9, options).windows, CUDA_WINDOW_ABS, WINDOW_REL_L2)
        again = cuda.plan(state, 9, options)
        assert np.array_equal(again.windows, a.windows) and again.index == a.index
        warm = options.replace(warm_start_level=3)
        wa = cuda.plan(state, 10, warm, warm_start=a.window)
        wb = cpu.plan(state, 10, warm, warm_start=a.window)
        assert wa.index == wb.index
        assert_close(wa.windows, wb.windows, CUDA_WINDOW_ABS, WINDOW_REL_L2)
