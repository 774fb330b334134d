"""The recipe's sampler options (design section 3): prediction target, temperature and warm start,
the same in the reference and the native CPU backend, and the reference against an independent
NumPy computation of the update equations.

Tolerances as in test_sampler.py (float32 rounding only): windows within 2e-4 absolute and 1e-5
relative L2, the same chosen candidate.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mpdiffuser import noise
from mpdiffuser.bench import synthetic_model_file
from mpdiffuser.config import ModelConfig, SamplerOptions
from mpdiffuser.export import bundle_from_model_file
from mpdiffuser.models.schedule import CosineSchedule
from mpdiffuser.sampling.reference import ReferenceSampler
from mpdiffuser.sampling.sampler import Sampler

from .test_sampler import WINDOW_ABS, WINDOW_REL_L2, assert_close

TINY = ModelConfig(horizon=4, num_steps=6, width=24, layers=2, ranker_width=16, ranker_layers=2)


@pytest.fixture(scope="module", params=[("epsilon", "minmax"), ("sample", "minmax"), ("sample", "cdf")],
                ids=lambda p: "-".join(p))
def files(request, tmp_path_factory):
    """(model file, CPU sampler, torch sampler) of one prediction target and normalizer."""
    prediction, normalizer = request.param
    model = dataclasses.replace(TINY, prediction=prediction, normalizer=normalizer)
    path = synthetic_model_file(tmp_path_factory.mktemp(prediction) / "m.safetensors", 3, 2, model, seed=4,
                                env_id="Tiny-v0")
    return path, Sampler(path, "cpu"), Sampler(path, "torch")


def _state(spec, seed):
    return np.random.default_rng(seed).uniform(spec.states.low, spec.states.high).astype(np.float32)


@pytest.mark.parametrize("temperature", [1.0, 0.3, 1e-3])
@pytest.mark.parametrize("n, w, lam", [(1, 1.0, 1.0), (5, 2.0, 1.0), (5, 1.5, 0.0)])
def test_native_matches_reference(files, temperature, n, w, lam):
    _, native, reference = files
    options = SamplerOptions(num_candidates=n, guidance=w, dynamics_weight=lam, temperature=temperature)
    state = _state(native.spec, n)
    a, b = native.plan(state, 17, options), reference.plan(state, 17, options)
    assert a.index == b.index
    assert_close(a.windows, b.windows, WINDOW_ABS, WINDOW_REL_L2)
    # actions de-normalized by each backend's own normalizer code (min-max or CDF tables)
    np.testing.assert_allclose(a.actions, b.actions, rtol=0, atol=WINDOW_ABS * 8)
    np.testing.assert_allclose(a.actions, native.spec.actions.unnormalize(a.window[:1, 3:]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("w, w_d", [(1.0, 1.0), (5.0, 1.0), (1.0, 3.0), (2.0, 2.0)])
def test_dynamics_guidance_native_matches_reference(files, w, w_d):
    """The dynamics model's own guidance scale: one pass at w_d = 1, 2N rows otherwise."""
    _, native, reference = files
    options = SamplerOptions(num_candidates=3, guidance=w, dynamics_guidance=w_d, temperature=0.2)
    state = _state(native.spec, 5)
    a, b = native.plan(state, 4, options), reference.plan(state, 4, options)
    assert a.index == b.index
    assert_close(a.windows, b.windows, WINDOW_ABS, WINDOW_REL_L2)
    other = native.plan(state, 4, options.replace(dynamics_guidance=w_d + 1.0))
    assert not np.allclose(other.windows, a.windows)  # the dynamics model's guidance is used


@pytest.mark.parametrize("level", [1, 3, 5])
@pytest.mark.parametrize("shift", [1, 2])
def test_warm_start_native_matches_reference(files, level, shift):
    _, native, reference = files
    options = SamplerOptions(num_candidates=3, guidance=1.2, temperature=0.1, warm_start_level=level,
                             actions_per_plan=shift)
    state = _state(native.spec, 2)
    previous = native.plan(state, 1, options.replace(warm_start_level=0)).window
    a = native.plan(state, 9, options, warm_start=previous)
    b = reference.plan(state, 9, options, warm_start=previous)
    assert a.index == b.index
    assert_close(a.windows, b.windows, WINDOW_ABS, WINDOW_REL_L2)
    cold = native.plan(state, 9, options.replace(warm_start_level=0))
    assert not np.allclose(a.windows, cold.windows)  # the warm window was used


def test_warm_start_equals_cold_plan_from_the_renoised_window(files):
    """A warm start at k_w is the cold sampler's loop run from k_w on the re-noised shifted window."""
    path, _, reference = files
    sampler: ReferenceSampler = reference._reference
    options = SamplerOptions(num_candidates=2, guidance=1.0, dynamics_guidance=1.0, temperature=0.5, warm_start_level=3,
                             actions_per_plan=1)
    previous = np.random.default_rng(0).uniform(-1, 1, (TINY.horizon, 5)).astype(np.float32)
    x0 = np.zeros(3, np.float32)
    warm = sampler.sample_windows(x0, 5, options, warm_start=previous)
    # By hand: S = rows 1..H-1 of previous, then its last row; tau^{k_w} = sqrt(abar) S + sqrt(1-abar) sqrt(tau) z.
    shifted = np.concatenate([previous[1:], previous[-1:]])
    s = CosineSchedule.make(TINY.num_steps)
    z = noise.normal_blocks(5, np.arange(2), TINY.num_steps + 1, shifted.size).reshape(2, *shifted.shape)
    start = np.float32(np.sqrt(s.alpha_bar[2])) * shifted + np.float32(np.sqrt(1 - s.alpha_bar[2])) * (
        np.float32(np.sqrt(np.float32(0.5))) * z)
    draws = torch.from_numpy(np.stack([noise.normal_blocks(5, np.arange(2), k, shifted.size)
                                       for k in range(1, TINY.num_steps + 2)]).reshape(-1, 2, *shifted.shape))
    draws[TINY.num_steps] = torch.from_numpy(start.astype(np.float32))  # the loop's tau^{k_w}
    by_hand = _loop_from(sampler, x0, options, draws, start=3)
    np.testing.assert_allclose(warm.numpy(), by_hand, atol=1e-6)


def _loop_from(sampler, x0, options, draws, start):
    """The reference's step loop from level `start`, written out with NumPy-side control."""
    tau = draws[sampler.num_steps].clone()
    N, dx = tau.shape[0], sampler.dx
    x0_rows = torch.from_numpy(x0).expand(N, dx)
    cond = torch.from_numpy(sampler.condition(options)).expand(N, -1)
    scale = float(np.float32(np.sqrt(np.float32(options.temperature))))
    with torch.no_grad():
        for k in range(start, 0, -1):
            kk = torch.full((N,), k, dtype=torch.long)
            states, actions = tau[..., :dx], tau[..., dx:]
            o = sampler.bundle.dynamics(states, actions, x0_rows, cond, kk)
            tau = torch.cat([sampler.posterior_mean(states, o, k), actions], -1)
            tau = sampler.posterior_mean(tau, sampler.bundle.planner(tau, x0_rows, cond, kk), k)
            if k > 1:
                tau = tau + sampler._sigma[k - 1] * (scale * draws[k - 1])
    return tau.numpy()


def test_reference_matches_numpy_spec(files):
    """Section 3 written again in float64 NumPy (networks evaluated by torch): the reference's
    window agrees to float32 rounding, for either prediction target and a low temperature."""
    path, _, reference = files
    sampler: ReferenceSampler = reference._reference
    bundle, _ = bundle_from_model_file(path)
    options = SamplerOptions(num_candidates=3, guidance=1.7, dynamics_guidance=2.5, temperature=1e-2,
                             dynamics_weight=0.6)
    K, H, dx, du = TINY.num_steps, TINY.horizon, 3, 2
    s = CosineSchedule.make(K)
    sample = bundle.spec.model.prediction == "sample"
    x0 = np.linspace(-0.5, 0.5, dx).astype(np.float32)
    cand = np.arange(3)
    z = lambda step: noise.normal_blocks(8, cand, step, H * (dx + du)).reshape(3, H, dx + du).astype(np.float64)  # noqa: E731
    cond = sampler.condition(options)

    def net(f, w, *args):
        with torch.no_grad():
            t = [torch.from_numpy(np.asarray(a, np.float32)) for a in args]
            k = t[-1].to(torch.long)
            c = f(*t[:-2], torch.from_numpy(np.tile(cond, (3, 1))), k).double().numpy()
            u = f(*t[:-2], torch.zeros(3, len(cond)), k).double().numpy()
        return u + w * (c - u)

    def mean(v, o, k):
        i = k - 1
        clean = o if sample else (v - np.sqrt(1 - s.alpha_bar[i]) * o) / np.sqrt(s.alpha_bar[i])
        return s.posterior_c1[i] * np.clip(clean, -1, 1) + s.posterior_c2[i] * v

    tau = np.sqrt(options.temperature) * z(K + 1)
    x0_rows = np.tile(x0, (3, 1))
    for k in range(K, 0, -1):
        kk = np.full(3, k)
        X, U = tau[..., :dx], tau[..., dx:]
        o = net(bundle.dynamics, options.dynamics_guidance, X, U, x0_rows, None, kk)
        X = (1 - options.dynamics_weight) * X + options.dynamics_weight * mean(X, o, k)
        tau = np.concatenate([X, U], -1)
        tau = mean(tau, net(bundle.planner, options.guidance, tau, x0_rows, None, kk), k)
        if k > 1:
            tau = tau + np.sqrt(options.temperature) * s.posterior_sigma[k - 1] * z(k)
    got = sampler.sample_windows(x0, 8, options).numpy()
    assert_close(got, tau.astype(np.float32), 1e-4, 1e-5)


def test_temperature_one_cold_is_the_plain_sampler(files):
    """tau = 1 and k_w = 0 is DDPM as before the options existed (the same arithmetic: the noise
    scale 1 multiplies exactly), and a warm window passed with k_w = 0 is ignored."""
    _, native, reference = files
    state = _state(native.spec, 3)
    base = SamplerOptions(num_candidates=4, temperature=1.0)
    for s in (native, reference):
        a = s.plan(state, 5, base)
        b = s.plan(state, 5, base.replace(temperature=1.0, warm_start_level=0), warm_start=a.window)
        np.testing.assert_array_equal(a.windows, b.windows)


def test_bad_options_are_rejected(files):
    path, native, reference = files
    with pytest.raises(ValueError, match="temperature"):
        SamplerOptions(temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SamplerOptions(temperature=1.5)
    state = _state(native.spec, 0)
    for s in (native, reference):
        with pytest.raises(ValueError, match="warm_start_level"):
            s.plan(state, 0, SamplerOptions(warm_start_level=TINY.num_steps))
        with pytest.raises(ValueError, match="shape"):
            s.plan(state, 0, SamplerOptions(warm_start_level=2), warm_start=np.zeros((3, 5), np.float32))
        bad = np.zeros((TINY.horizon, 5), np.float32)
        bad[1, 2] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            s.plan(state, 0, SamplerOptions(warm_start_level=2), warm_start=bad)
