"""Model files with bfloat16 weights (export --weights bf16, config.WEIGHT_FORMATS).

The weight matrices and kernels are rounded to bfloat16 (nearest even) at export and stored as
BF16; biases, GroupNorm parameters and normalizer tables stay F32. Every reader widens them to
float32 exactly, so every backend plans with the same weights: the native CPU backend (which packs
them in half the bytes) against the PyTorch reference is held to the float32 files' own derived
tolerances (tests/python/sampling/test_sampler.py, tests/python/models/test_unet.py), not a wider one.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from mpdiffuser.bench import synthetic_model_file
from mpdiffuser.config import ModelConfig, SamplerOptions
from mpdiffuser.export import _read_verified, _write_model_file, read_model_file, with_defaults
from mpdiffuser.sampling.sampler import Sampler

from tests.python.sampling.test_sampler import VALUE_REL, WINDOW_ABS, WINDOW_REL_L2, assert_close


def _dtypes(path) -> dict[str, str]:
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    return {name: e["dtype"] for name, e in header.items() if name != "__metadata__"}


def _round_bf16(a: np.ndarray) -> np.ndarray:
    bits = a.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).view(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    out = {}
    for arch, model in (("mlp", ModelConfig()),
                        ("unet", ModelConfig(horizon=16, num_steps=5, architecture="unet", unet_dim=16,
                                             unet_mults=(1, 2, 4), unet_embed_dim=16))):
        for weights in ("float32", "bf16"):
            out[arch, weights] = synthetic_model_file(root / f"{arch}-{weights}.safetensors", model=model, seed=3,
                                                      with_cost=arch == "mlp", weights=weights)
    return out


@pytest.mark.parametrize("arch", ["mlp", "unet"])
def test_bf16_file_stores_rounded_weights_in_half_the_bytes(files, arch):
    single, half = files[arch, "float32"], files[arch, "bf16"]
    dtypes = _dtypes(half)
    _, tensors32, none = _read_verified(single)
    _, tensors16, bf16 = _read_verified(half)
    assert not none and bf16 and set(tensors16) == set(tensors32)
    for name, value in tensors32.items():
        if name in bf16:
            assert dtypes[name] == "BF16" and value.ndim >= 2 and not name.startswith("normalizer.")
            np.testing.assert_array_equal(tensors16[name], _round_bf16(value))  # nearest even, as torch rounds
        else:
            assert dtypes[name] == "F32" and (value.ndim < 2 or name.startswith("normalizer."))
            np.testing.assert_array_equal(tensors16[name], value)
    assert half.stat().st_size < 0.55 * single.stat().st_size


@pytest.mark.parametrize("n, lam, w", [(1, 1.0, 2.0), (7, 0.0, 1.0), (16, 1.0, 2.0)])
def test_cpu_backend_plans_a_bf16_mlp_file_as_the_reference(files, n, lam, w):
    path = files["mlp", "bf16"]
    native, reference = Sampler(path, "cpu"), Sampler(path, "torch")
    options = native.defaults.replace(num_candidates=n, dynamics_weight=lam, guidance=w, cost_budget=0.5)
    state = np.random.default_rng(n).uniform(native.spec.states.low, native.spec.states.high).astype(np.float32)
    a, b = native.plan(state, n, options), reference.plan(state, n, options)
    assert a.index == b.index
    assert_close(a.windows, b.windows.astype(np.float32), WINDOW_ABS, WINDOW_REL_L2)
    np.testing.assert_allclose(a.values, b.values, rtol=VALUE_REL, atol=VALUE_REL * np.abs(b.values).max())
    np.testing.assert_allclose(a.costs, b.costs, rtol=VALUE_REL, atol=VALUE_REL * max(np.abs(b.costs).max(), 1))


def test_cpu_backend_plans_a_bf16_unet_file_as_the_reference(files):
    """The unet test's tolerance (test_unet.py: windows within 1e-3, values 1e-4 relative); the
    bfloat16 packing gives the same bits as float32 panels of the same weights, so one thread
    equals two and N = 7 equals the first 7 of N = 16."""
    path = files["unet", "bf16"]
    reference, one, two = Sampler(path, "torch"), Sampler(path, "cpu", threads=1), Sampler(path, "cpu", threads=2)
    state = np.random.default_rng(0).uniform(-1, 1, 11).astype(np.float32)
    for n, lam, w in [(1, 1.0, 2.0), (7, 0.0, 1.0), (16, 1.0, 2.0)]:
        options = one.defaults.replace(num_candidates=n, dynamics_weight=lam, guidance=w, temperature=1.0)
        a, b = two.plan(state, 3, options), reference.plan(state, 3, options)
        assert np.abs(a.windows - b.windows).max() < 1e-3
        np.testing.assert_allclose(a.values, b.values, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(one.plan(state, 3, options).windows, a.windows)
        if n == 16:
            np.testing.assert_array_equal(two.plan(state, 3, options.replace(num_candidates=7)).windows,
                                          a.windows[:7])


def test_bf16_plans_differ_from_float32_plans_by_the_rounding_only(files):
    """Rounding every weight by at most 2^-9 relative moves an untrained network's plan a little,
    not a lot: the same file's float32 and bf16 exports plan windows within 0.1 of each other (values
    of order 1), and not identically (the weights did change)."""
    state = np.zeros(11, np.float32)
    a = Sampler(files["mlp", "float32"], "cpu").plan(state, 1, SamplerOptions(num_candidates=4, cost_limit=10.0))
    b = Sampler(files["mlp", "bf16"], "cpu").plan(state, 1, SamplerOptions(num_candidates=4, cost_limit=10.0))
    diff = np.abs(a.windows - b.windows).max()
    assert 0 < diff < 0.1, diff


def test_tune_keeps_bf16_storage(files, tmp_path):
    out = with_defaults(files["mlp", "bf16"], tmp_path / "tuned.safetensors",
                        SamplerOptions(num_candidates=3, cost_limit=5.0))
    assert _dtypes(out) == _dtypes(files["mlp", "bf16"])
    assert read_model_file(out)[0].sampler_defaults.num_candidates == 3


def test_bf16_normalizer_and_unrounded_bf16_are_refused(files, tmp_path):
    meta, tensors, bf16 = _read_verified(files["mlp", "bf16"])
    with pytest.raises(ValueError, match="normalizer tables are stored as float32 only"):
        _write_model_file(tensors, meta, tmp_path / "x.safetensors", bf16 | {"normalizer.state_low"})
    _, plain, _ = _read_verified(files["mlp", "float32"])
    with pytest.raises(ValueError, match="not bfloat16 values"):
        _write_model_file(plain, meta, tmp_path / "y.safetensors", {"planner.0.weight"})


def test_native_reader_refuses_a_bf16_normalizer(files, tmp_path):
    """A file whose normalizer table is BF16 (written by hand: the writer refuses it) is refused by
    both readers with the same reason."""
    import torch
    from safetensors.torch import save_file

    from mpdiffuser import native

    if not native.available():
        pytest.skip("the native core is not built")
    from mpdiffuser.digest import DIGEST_KEY, content_digest

    meta, tensors, bf16 = _read_verified(files["mlp", "bf16"])
    meta = {k: v for k, v in meta.items() if k != DIGEST_KEY}
    bf16 = bf16 | {"normalizer.state_low"}
    tensors["normalizer.state_low"] = _round_bf16(tensors["normalizer.state_low"])
    out = {k: torch.from_numpy(v.copy()).to(torch.bfloat16 if k in bf16 else torch.float32) for k, v in tensors.items()}
    stored = [(k, "BF16" if k in bf16 else "F32", v.shape,
               out[k].view(torch.int16).numpy().tobytes() if k in bf16 else v.astype("<f4").tobytes())
              for k, v in tensors.items()]
    meta[DIGEST_KEY] = content_digest(meta, stored)
    bad = tmp_path / "bad.safetensors"
    save_file(out, str(bad), metadata=meta)
    with pytest.raises(ValueError, match="normalizer tables must be F32"):
        read_model_file(bad)
    with pytest.raises(Exception, match="normalizer tables must be F32"):
        native.core().Model(str(bad))
