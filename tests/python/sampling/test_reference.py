"""The reference alternating sampler against design section 3, written out again independently."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mpdiffuser import noise
from mpdiffuser.config import SamplerOptions
from mpdiffuser.models.bundle import ModelBundle
from mpdiffuser.models.schedule import CosineSchedule
from mpdiffuser.sampling.reference import ReferenceSampler, select_candidate


@pytest.fixture(scope="module")
def sampler(toy_bundle):
    return ReferenceSampler(ModelBundle.load(toy_bundle[0]))


@pytest.fixture(scope="module")
def state(toy_bundle):
    return toy_bundle[1].episodes[0].observations[3]


OPTS = SamplerOptions(num_candidates=8, guidance=1.5, cost_limit=5.0)


def _spec_sampler_float64(bundle, x0, seed, opts, N):
    """design section 3 step by step in float64 with float64 copies of the networks."""
    planner, dynamics = copy.deepcopy(bundle.planner).double(), copy.deepcopy(bundle.dynamics).double()
    spec = bundle.spec
    H, dx, du, K = spec.model.horizon, spec.state_dim, spec.action_dim, spec.model.num_steps
    s = CosineSchedule.make(K)
    c = torch.tensor(spec.conditions.condition(opts.return_target, opts.cost_limit), dtype=torch.float64)
    c = c.expand(N, -1)
    x0t = torch.tensor(x0, dtype=torch.float64).expand(N, dx)

    def guided(eps_c, eps_u, w=opts.guidance):
        return eps_u + w * (eps_c - eps_u)

    def mu(v, eps, k):
        i = k - 1
        if spec.model.prediction == "sample":
            v_hat = eps.clamp(-1, 1)
        else:
            v_hat = ((v - np.sqrt(1 - s.alpha_bar[i]) * eps) / np.sqrt(s.alpha_bar[i])).clamp(-1, 1)
        return s.posterior_c1[i] * v_hat + s.posterior_c2[i] * v

    z = lambda step: torch.tensor(noise.normal_blocks(seed, np.arange(N), step, H * (dx + du)),  # noqa: E731
                                  dtype=torch.float64).view(N, H, dx + du)
    root = np.sqrt(opts.temperature)
    tau = root * z(K + 1)
    lam = opts.dynamics_weight
    for k in range(K, 0, -1):
        kk = torch.full((N,), k)
        X, U = tau[..., :dx], tau[..., dx:]
        if lam > 0:
            eps_d = guided(dynamics(X, U, x0t, c, kk), dynamics(X, U, x0t, 0 * c, kk), opts.dynamics_guidance)
            X = (1 - lam) * X + lam * mu(X, eps_d, k)
        tau_p = torch.cat([X, U], -1)
        eps_p = guided(planner(tau_p, x0t, c, kk), planner(tau_p, x0t, 0 * c, kk))
        tau = mu(tau_p, eps_p, k) + (root * s.posterior_sigma[k - 1] * z(k) if k > 1 else 0)
    return tau


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_matches_the_equations_in_float64(sampler, state, lam):
    opts = OPTS.replace(dynamics_weight=lam)
    x0 = sampler.spec.states.normalize(state)
    got = sampler.sample_windows(x0, 11, opts).double()
    with torch.no_grad():
        want = _spec_sampler_float64(sampler.bundle, x0, 11, opts, opts.num_candidates)
    # float32 vs float64 over K=5 steps of tiny networks: rounding only.
    assert (got - want).abs().max().item() < 2e-4


def test_shapes_and_action_units(sampler, state):
    plan = sampler.plan(state, 0, OPTS.replace(actions_per_plan=3))
    H, dx, du = sampler.horizon, sampler.dx, sampler.du
    assert plan.windows.shape == (8, H, dx + du) and plan.window.shape == (H, dx + du)
    assert plan.actions.shape == (3, du) and plan.values.shape == (8,) and plan.costs.shape == (8,)
    np.testing.assert_allclose(plan.actions, sampler.spec.actions.unnormalize(plan.window[:3, dx:]))
    assert np.all(np.abs(plan.windows) <= 1.0)  # the last step returns the clipped clean estimate


def test_same_seed_same_plan_other_seed_other_plan(sampler, state):
    a, b, c = (sampler.plan(state, seed, OPTS) for seed in (4, 4, 5))
    assert np.array_equal(a.windows, b.windows) and a.index == b.index
    assert not np.array_equal(a.windows, c.windows)


def test_one_batch_of_64_equals_two_of_32(sampler, state):
    opts = OPTS.replace(num_candidates=64)
    x0 = sampler.spec.states.normalize(state)
    whole = sampler.sample_windows(x0, 9, opts)
    halves = torch.cat([sampler.sample_windows(x0, 9, opts, np.arange(32)),
                        sampler.sample_windows(x0, 9, opts, np.arange(32, 64))])
    assert torch.equal(whole, halves)


def test_lambda_zero_is_the_plain_planner_path(sampler, state):
    """lambda = 0 never calls the dynamics model: a plain Diffuser-style sampler (at temperature 1,
    DDPM's own noise)."""
    opts = OPTS.replace(dynamics_weight=0.0, temperature=1.0)
    x0 = sampler.spec.states.normalize(state)
    baseline = sampler.sample_windows(x0, 2, opts)
    broken = copy.deepcopy(sampler.bundle)
    broken.dynamics.forward = lambda *a: (_ for _ in ()).throw(AssertionError("dynamics called at lambda=0"))
    assert torch.equal(ReferenceSampler(broken).sample_windows(x0, 2, opts), baseline)
    # ... and it is Diffuser's loop: planner posterior mean plus sigma z, written out directly.
    s, N, H, D = sampler, 8, sampler.horizon, sampler.dx + sampler.du
    tau = torch.from_numpy(noise.normal_blocks(2, np.arange(N), 6, H * D)).view(N, H, D)
    cond = torch.from_numpy(s.condition(opts)).expand(N, -1)
    x0r = torch.from_numpy(x0).expand(N, -1)
    with torch.no_grad():
        for k in range(5, 0, -1):
            kk = torch.full((N,), k)
            both = s.bundle.planner(torch.cat([tau, tau]), torch.cat([x0r, x0r]), torch.cat([cond, 0 * cond]),
                                    torch.cat([kk, kk]))
            eps = both[N:] + 1.5 * (both[:N] - both[N:])
            tau = s.posterior_mean(tau, eps, k)
            if k > 1:
                tau = tau + s._sigma[k - 1] * torch.from_numpy(noise.normal_blocks(2, np.arange(N), k, H * D)).view(N, H, D)
    assert torch.equal(tau, baseline)


def test_dynamics_model_changes_the_plan_when_lambda_positive(sampler, state):
    x0 = sampler.spec.states.normalize(state)
    a = sampler.sample_windows(x0, 2, OPTS.replace(dynamics_weight=1.0))
    b = sampler.sample_windows(x0, 2, OPTS.replace(dynamics_weight=0.0))
    assert not torch.equal(a, b)


def test_guidance_one_uses_conditional_rows_only(sampler, state):
    x0 = sampler.spec.states.normalize(state)
    calls = []
    original = sampler.bundle.planner.forward
    sampler.bundle.planner.forward = lambda *a: calls.append(a[0].shape[0]) or original(*a)
    try:
        sampler.sample_windows(x0, 1, OPTS.replace(guidance=1.0))
        assert set(calls) == {8}
        calls.clear()
        sampler.sample_windows(x0, 1, OPTS.replace(guidance=2.0))
        assert set(calls) == {16}  # conditional and unconditional rows as one batch of 2N
    finally:
        sampler.bundle.planner.forward = original


def test_dynamics_schedule():
    o = SamplerOptions(dynamics_every=3)
    assert [k for k in range(20, 0, -1) if o.dynamics_at(k)] == [19, 16, 13, 10, 7, 4, 1]
    o = SamplerOptions(dynamics_last=4)
    assert [k for k in range(20, 0, -1) if o.dynamics_at(k)] == [4, 3, 2, 1]
    assert not any(SamplerOptions(dynamics_weight=0.0).dynamics_at(k) for k in range(1, 21))


def test_ranking_value_and_termination_penalty(sampler, state):
    x0 = sampler.spec.states.normalize(state)
    tau = sampler.sample_windows(x0, 3, OPTS)
    values, costs = sampler.rank(x0, tau, 0.9)
    dx = sampler.dx
    x = torch.cat([torch.from_numpy(x0).expand(8, 1, dx), tau[:, :-1, :dx]], 1)
    with torch.no_grad():
        out = sampler.bundle.reward(x, tau[..., dx:]).double().numpy()
        c = sampler.bundle.cost(x, tau[..., dx:]).double().numpy()[..., 0]
    g = 0.9 ** np.arange(sampler.horizon)
    want = (out[..., 0] * g).sum(1)
    for n in range(8):
        fell = np.flatnonzero(out[n, :, 1] > 0)
        if fell.size:
            want[n] -= 100 * g[fell[0]]
    np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(costs, (c * g).sum(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "values,costs,budget,want",
    [
        ([1, 3, 3, 2], None, None, 1),  # argmax, tie to the lowest index
        ([1, 3, 3, 2], [0, 0, 0, 0], None, 1),  # no budget: costs ignored
        ([1, 5, 3, 4], [0, 9, 1, 1], 1.0, 3),  # best feasible (index 1 is over budget)
        ([1, 5, 4, 4], [0, 9, 1, 1], 1.0, 2),  # feasible tie to the lowest index
        ([1, 5, 3, 4], [7, 9, 6, 6], 1.0, 2),  # none feasible: least cost, tie to the lowest index
        ([1, 5, 3, 4], [1, 9, 1, 1], 1.0, 3),  # C == b counts as feasible
    ],
)
def test_selection_rules(values, costs, budget, want):
    assert select_candidate(np.array(values, float), None if costs is None else np.array(costs, float), budget) == want


def test_bad_state(sampler):
    with pytest.raises(ValueError, match="shape"):
        sampler.plan(np.zeros(3), 0, OPTS)
    bad = np.zeros(sampler.dx)
    bad[1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sampler.plan(bad, 0, OPTS)


def test_bad_options(sampler, state):
    with pytest.raises(ValueError, match="cost_limit"):
        sampler.plan(state, 0, SamplerOptions())  # a cost-conditioned bundle needs a limit
    with pytest.raises(ValueError, match="num_candidates"):
        SamplerOptions(num_candidates=0)
    with pytest.raises(ValueError, match="lambda"):
        SamplerOptions(dynamics_weight=1.5)
    with pytest.raises(ValueError, match="actions_per_plan"):
        sampler.plan(state, 0, OPTS.replace(actions_per_plan=99))


def test_precomputed_draws_and_tensor_inputs_give_the_same_plan(sampler, state):
    """The GPU benchmark's PyTorch peer passes x0 as a tensor and every draw precomputed (so the
    loop can be captured in a CUDA graph); that must be the same computation, bit for bit."""
    options = OPTS.replace(num_candidates=6)
    x0 = sampler.spec.states.normalize(state)
    default = sampler.sample_windows(x0, 3, options)
    draws = sampler.noise(3, np.arange(6))
    assert draws.shape == (sampler.num_steps + 1, 6, sampler.horizon, sampler.dx + sampler.du)
    precomputed = sampler.sample_windows(torch.from_numpy(x0), 3, options, draws=draws)
    assert torch.equal(default, precomputed)
    v1, c1 = sampler.rank(x0, default, 0.99)
    v2, c2 = sampler.rank_tensors(torch.from_numpy(x0), precomputed, 0.99)
    assert np.array_equal(v1, v2.numpy()) and (c1 is None) == (c2 is None)
