"""Diffuser and Decision Diffuser (control/diffusion_baselines.py): their updates against hand-computed
cases, their losses, training resumable and skipped when done, and plans through the MPC policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpdiffuser.config import SamplerOptions, TrainConfig
from mpdiffuser.control import diffusion_baselines as db
from mpdiffuser.control.mpc import MPCPolicy
from tests.python.conftest import make_toy_dataset


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A tiny unconstrained bundle (planner, dynamics, reward) plus both baselines' networks."""
    from mpdiffuser.models.bundle import BundleSpec
    from mpdiffuser.training.train import train_model
    from tests.python.conftest import TINY_MODEL

    directory = tmp_path_factory.mktemp("baselines")
    data = make_toy_dataset()
    BundleSpec.fit(data, [data], TINY_MODEL).save(directory)
    for name in ("planner", "dynamics", "reward"):
        train_model(directory, name, [data], TrainConfig(steps=20, batch_size=16), progress=False)
    config = TrainConfig(steps=20, batch_size=16, checkpoint_every=10)
    for name in db.BASELINES:
        summary = db.train_baseline(directory, name, data, config, progress=False)
        assert set(summary) == set(db.NETWORKS[name]) and all(np.isfinite(s["final_loss"]) for s in summary.values())
    return directory, data


class _Linear(torch.nn.Module):
    """V(tau) = sum(a * tau): its gradient is `a` everywhere."""

    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, tau, x0, k):
        return (self.a * tau).flatten(1).sum(1)


def test_value_guidance_climbs_the_gradient_by_the_scaled_variance(bundle):
    directory, _ = bundle
    sampler = db.DiffuserSampler(directory, value_scale=0.5, guide_steps=3, stop_grad_steps=2)
    H, D = sampler.horizon, sampler.dx + sampler.du
    a = torch.linspace(-1, 1, H * D).view(1, H, D)
    sampler.value = _Linear(a)
    tau, x0 = torch.zeros(2, H, D), torch.zeros(2, sampler.dx)
    k = 4
    sigma2 = float(sampler.reference.posterior_sigma(k)) ** 2
    # by hand: three steps of 0.5 sigma_k^2 a
    torch.testing.assert_close(sampler.value_guided(tau, x0, k), (3 * 0.5 * sigma2 * a).expand(2, H, D), rtol=1e-6,
                               atol=1e-7)
    assert torch.equal(sampler.value_guided(tau, x0, 2), tau)  # k <= stop_grad_steps: no guidance
    sampler.value_scale = 0.0
    assert torch.equal(sampler.value_guided(tau, x0, k), tau)


def test_diffuser_plan_is_the_denoiser_chain_plus_guidance(bundle):
    """With guidance off and a denoiser that predicts a fixed clean window (sample-prediction),
    the last step (c2 = 0 at k = 1) returns that window clipped: the plan's first action is its u_0."""
    directory, _ = bundle
    sampler = db.DiffuserSampler(directory, value_scale=0.0)
    sampler.reference.sample_prediction = True
    H, D, dx = sampler.horizon, sampler.dx + sampler.du, sampler.dx
    target = torch.linspace(-1.5, 1.5, H * D).view(H, D)
    sampler.denoiser = lambda tau, x0, cond, k: target.expand(tau.shape[0], H, D)
    plan = sampler.plan(np.zeros(dx, np.float32), 3, SamplerOptions(num_candidates=3, temperature=1.0))
    np.testing.assert_allclose(plan.window, target.clamp(-1, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(plan.actions[0], sampler.spec.actions.unnormalize(target.clamp(-1, 1)[0, dx:].numpy()),
                               rtol=1e-6, atol=1e-6)


def test_decision_diffuser_actions_come_from_inverse_dynamics_along_its_states(bundle):
    directory, _ = bundle
    sampler = db.DecisionDiffuserSampler(directory)
    sampler.reference.sample_prediction = True
    H, dx = sampler.horizon, sampler.dx
    states = torch.linspace(-0.9, 0.9, H * dx).view(H, dx)
    calls = []

    def denoiser(x, x0, cond, k):
        calls.append(cond.clone())
        return states.expand(x.shape[0], H, dx)

    sampler.denoiser = denoiser
    state = np.zeros(dx, np.float32)
    options = SamplerOptions(num_candidates=1, guidance=1.5, return_target=0.7)
    plan = sampler.plan(state, 0, options)
    np.testing.assert_allclose(plan.window[:, :dx], states.numpy(), atol=1e-6)
    x0 = torch.from_numpy(sampler.spec.states.normalize(state))[None]
    previous = torch.cat([x0, states[:-1]])
    with torch.no_grad():
        expected = sampler.inverse(previous, states).numpy()
    np.testing.assert_allclose(plan.window[:, dx:], expected, atol=1e-6)
    # guided: a conditional and an unconditional half in one batch of 2N, the condition g = 0.7
    assert calls[0].shape == (2, 1) and calls[0][0, 0] == pytest.approx(
        float(sampler.spec.conditions.condition(0.7, None)[0])) and calls[0][1, 0] == 0.0


def test_losses_against_hand_computed_values():
    gen = torch.Generator().manual_seed(0)
    batch = {"x0": torch.zeros(4, 2), "states": torch.zeros(4, 3, 2), "actions": torch.full((4, 3, 1), 0.5),
             "cond": torch.tensor([[0.0], [1.0], [2.0], [3.0]])}
    loss = db.ValueLoss(5, 0.0, "sample")(lambda tau, x0, k: torch.ones(tau.shape[0]), batch, gen)
    assert float(loss) == pytest.approx(np.mean([1.0, 0.0, 1.0, 4.0]))
    batch["actions"][:, 1:] = 9.0  # later rows (padding past a fall) do not enter the inverse-dynamics loss
    loss = db.inverse_dynamics_loss(lambda x, x_next: torch.zeros(x.shape[0], 1), batch, gen)
    assert float(loss) == pytest.approx(0.25)


def test_training_resumes_and_skips_what_is_done(bundle, tmp_path):
    directory, data = bundle
    again = db.train_baseline(directory, "decision-diffuser", data, TrainConfig(steps=20, batch_size=16,
                                                                               checkpoint_every=10), progress=False)
    assert all(s.get("nothing_to_do") for s in again.values())
    more = db.train_baseline(directory, "decision-diffuser", data, TrainConfig(steps=30, batch_size=16,
                                                                              checkpoint_every=10), progress=False)
    assert not any(s.get("nothing_to_do") for s in more.values())


def test_policies_plan_and_rank(bundle):
    directory, data = bundle
    state = data.episodes[0].observations[0].astype(np.float32)
    for sampler in (db.baseline_sampler("diffuser", directory, value_scale=0.1),
                    db.baseline_sampler("decision-diffuser", directory)):
        plan = sampler.plan(state, 1, sampler.defaults.replace(num_candidates=4))
        assert plan.windows.shape == (4, sampler.horizon, sampler.dx + sampler.du)
        assert plan.index == int(np.argmax(plan.values))
        again = sampler.plan(state, 1, sampler.defaults.replace(num_candidates=4))
        np.testing.assert_array_equal(plan.windows, again.windows)  # the seed decides every draw
        policy = MPCPolicy(sampler)
        assert policy.act(state).shape == (data.action_dim,)


def test_bad_names_and_scales_are_refused(bundle, tmp_path):
    directory, _ = bundle
    with pytest.raises(ValueError, match="unknown diffusion baseline 'difuser': choose from diffuser, decision-diffuser"):
        db.baseline_sampler("difuser", directory)
    with pytest.raises(ValueError, match="value_scale must be a finite number >= 0"):
        db.DiffuserSampler(directory, value_scale=float("nan"))
    with pytest.raises(ValueError, match="value_scale is Diffuser's"):
        db.baseline_sampler("decision-diffuser", directory, value_scale=1.0)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    shutil.rmtree(copy / "baselines")
    with pytest.raises(FileNotFoundError, match="baseline network 'diffuser-denoiser' has not been trained"):
        db.DiffuserSampler(copy)
