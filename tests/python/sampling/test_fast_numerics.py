"""The fast numeric mode (option fast_numerics = 1): every weight layer's input rounded to bfloat16
(nearest even) before its products, float32 sums; on a bfloat16-weight file these are the exact
products of AMX tiles and tensor cores (the CPU backend uses AMX where the CPU has it).

Element by element the fast mode cannot be held to the exact mode's float32 tolerance: where two
backends' float32 sums differ in the last bit, an activation can round to the neighbouring bfloat16
(a step of 2^-8 relative for that input) and carry that through the rest of the plan. Measured on
the reference alone: one float32 ulp added to every layer input before the rounding moves a fast
plan by as much as the fast mode moves it from the exact one (0.008-0.026 against 0.007-0.023 on a
random three-level U-Net of 32 channels, H 16, K 5). So the checks are (a) the reference's hooks round exactly the weight layers'
inputs, and one network call agrees with the CPU backend to float32 rounding (a flip needs several
layers to become likely), (b) over whole plans the CPU backend is no farther from the reference
(RMS over the windows) than twice the distance between the reference's fast and exact plans, and the
mode does move plans (it is on), (c) the fast mode is deterministic: one thread or two, N = 3 or the
first 3 of N = 6, the same bits. Closed-loop scores judge it on trained models (docs/results.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpdiffuser.config import SamplerOptions
from mpdiffuser.export import read_model_file
from mpdiffuser.sampling.reference import layer_numerics
from mpdiffuser.sampling.sampler import Sampler
from tests.python.sampling.test_bf16_weights import files as bf16_files  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def files(bf16_files):
    """The bf16 model files of test_bf16_weights (an MLP with a cost model, a three-level U-Net)."""
    return {arch: bf16_files[arch, "bf16"] for arch in ("mlp", "unet")}


def test_layer_numerics_rounds_the_inputs_of_weight_layers_only():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.SiLU())
    seen = []
    net[0].register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    x = torch.tensor([[1.0 + 2 ** -9, 1.0 + 3 * 2 ** -8 / 2, -3.14159]])
    with layer_numerics([net], fast=True):
        net(x)
    net(x)  # the hooks are gone after the block
    rounded = torch.tensor([[1.0, 1.0 + 2 * 2 ** -7 / 2, -3.140625]])
    torch.testing.assert_close(seen[0], rounded, rtol=0, atol=0)
    torch.testing.assert_close(seen[1], x, rtol=0, atol=0)


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


@pytest.mark.parametrize("arch", ["mlp", "unet"])
def test_one_network_call_in_the_fast_mode_agrees_to_float32_rounding(files, arch):
    """A warm start at level 1 with guidance 1 and no dynamics update is one planner call."""
    path = files[arch]
    reference, native = Sampler(path, "torch"), Sampler(path, "cpu", threads=1)
    spec = native.spec
    state = spec.states.unnormalize(np.random.default_rng(1).uniform(-0.5, 0.5, spec.state_dim).astype(np.float32))
    warm = np.random.default_rng(2).uniform(-0.5, 0.5, (spec.model.horizon, spec.state_dim + spec.action_dim))
    options = native.defaults.replace(num_candidates=1, guidance=1.0, dynamics_weight=0.0, warm_start_level=1,
                                      fast_numerics=1, **({"cost_limit": 10.0} if arch == "mlp" else {}))
    a = native.plan(state, 2, options, warm_start=warm.astype(np.float32))
    b = reference.plan(state, 2, options, warm_start=warm.astype(np.float32))
    assert np.abs(a.windows - b.windows).max() < 1e-5


@pytest.mark.parametrize("arch", ["mlp", "unet"])
def test_cpu_backend_plans_the_fast_mode_as_the_reference(files, arch):
    path = files[arch]
    reference, native = Sampler(path, "torch"), Sampler(path, "cpu", threads=1)
    state = np.random.default_rng(1).uniform(-0.5, 0.5, native.spec.state_dim).astype(np.float32)
    state = native.spec.states.unnormalize(state)
    for n in (1, 5):
        options = native.defaults.replace(num_candidates=n, temperature=0.5, fast_numerics=1,
                                          **({"cost_limit": 10.0} if arch == "mlp" else {}))
        a, b = native.plan(state, 2, options), reference.plan(state, 2, options)
        exact = reference.plan(state, 2, options.replace(fast_numerics=0))
        moved = _rms(b.windows - exact.windows)
        assert 1e-6 < moved < 0.05, moved
        assert _rms(a.windows - b.windows) <= 2 * moved


def test_fast_mode_is_deterministic_across_threads_and_batches(files):
    path = files["unet"]
    one, two = Sampler(path, "cpu", threads=1), Sampler(path, "cpu", threads=2)
    state = one.spec.states.unnormalize(np.zeros(one.spec.state_dim, np.float32))
    options = one.defaults.replace(num_candidates=6, fast_numerics=1)
    a = one.plan(state, 4, options)
    np.testing.assert_array_equal(two.plan(state, 4, options).windows, a.windows)
    np.testing.assert_array_equal(one.plan(state, 4, options.replace(num_candidates=3)).windows, a.windows[:3])


def test_the_mode_is_stored_and_read_as_a_default(files, tmp_path):
    from mpdiffuser.export import _read_verified, _write_model_file

    meta, tensors, bf16 = _read_verified(files["mlp"])
    assert meta["default.fast_numerics"] == "0"
    meta["default.fast_numerics"] = "1"
    path = _write_model_file(tensors, meta, tmp_path / "fast.safetensors", bf16=bf16)
    assert read_model_file(path)[2].fast_numerics == 1
    assert Sampler(path, "cpu").defaults.fast_numerics == 1
    meta["default.fast_numerics"] = "2"
    with pytest.raises(ValueError, match="fast_numerics"):
        read_model_file(_write_model_file(tensors, meta, tmp_path / "bad.safetensors", bf16=bf16))
    with pytest.raises(ValueError, match="fast_numerics"):
        SamplerOptions(fast_numerics=2)


def test_build_info_says_whether_amx_runs_and_the_switch_turns_it_off():
    import os
    import subprocess
    import sys

    import mpdiffuser

    assert isinstance(mpdiffuser.build_info()["cpu_amx"], bool)
    code = "import mpdiffuser; print(mpdiffuser.build_info()['cpu_amx'])"
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=os.environ | {"MPDIFFUSER_NO_AMX": "1"})
    assert off.returncode == 0 and off.stdout.strip() == "False", off.stderr[-500:]
