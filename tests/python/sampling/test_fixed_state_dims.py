"""Fixed state dimensions (a goal-conditioned robot's desired goal): every planned state keeps x_0's
value in them, on every backend, after the initial window and after every update; the model file
stores them (format 4) and both readers hold them to one rule."""

from __future__ import annotations

import numpy as np
import pytest

from mpdiffuser.bench import synthetic_model_file
from mpdiffuser.config import ModelConfig
from mpdiffuser.export import read_model_file
from mpdiffuser.sampling.sampler import Sampler

from tests.python.sampling.test_sampler import VALUE_REL, WINDOW_ABS, WINDOW_REL_L2, assert_close

FIXED = (1, 3, 4)


@pytest.fixture(scope="module", params=["mlp", "unet"])
def model_file(request, tmp_path_factory):
    model = (ModelConfig(horizon=8, num_steps=6, width=48, layers=2, ranker_width=16, ranker_layers=2)
             if request.param == "mlp" else
             ModelConfig(horizon=8, num_steps=6, architecture="unet", unet_dim=8, unet_mults=(1, 2), unet_embed_dim=8))
    return synthetic_model_file(tmp_path_factory.mktemp("fixed") / f"{request.param}.safetensors", state_dim=6,
                                action_dim=2, model=model, seed=5, env_id="Toy-v0", fixed_state_dims=FIXED)


def test_the_file_stores_the_fixed_dimensions(model_file):
    spec = read_model_file(model_file)[0]
    assert spec.fixed_state_dims == FIXED


@pytest.mark.parametrize("n, lam, w, warm", [(1, 1.0, 2.0, False), (7, 0.5, 1.0, False), (5, 1.0, 2.0, True)])
def test_every_backend_keeps_the_fixed_dimensions_at_x0(model_file, n, lam, w, warm):
    native, reference = Sampler(model_file, "cpu"), Sampler(model_file, "torch")
    spec = native.spec
    state = np.random.default_rng(n).uniform(spec.states.low, spec.states.high).astype(np.float32)
    options = native.defaults.replace(num_candidates=n, dynamics_weight=lam, guidance=w, temperature=1.0)
    previous = None
    if warm:
        previous = native.plan(state, 2, options).window
        options = options.replace(warm_start_level=3)
    a, b = native.plan(state, 4, options, warm_start=previous), reference.plan(state, 4, options, warm_start=previous)
    x0 = spec.states.normalize(state)
    for plan in (a, b):
        np.testing.assert_array_equal(plan.windows[:, :, list(FIXED)],
                                      np.broadcast_to(x0[list(FIXED)], (n, 8, len(FIXED))))
    free = [j for j in range(6) if j not in FIXED]
    assert np.abs(a.windows[:, :, free] - x0[free]).max() > 1e-3  # the others are planned
    assert a.index == b.index
    tolerance = WINDOW_ABS if spec.model.architecture == "mlp" else 1e-3  # test_unet.py's for the unet family
    assert_close(a.windows, b.windows.astype(np.float32), tolerance, WINDOW_REL_L2 if tolerance == WINDOW_ABS else 1e-4)
    np.testing.assert_allclose(a.values, b.values, rtol=VALUE_REL, atol=VALUE_REL * np.abs(b.values).max())


def test_goal_dims_of_robots(monkeypatch):
    from mpdiffuser.envs import goal_dims

    assert goal_dims("Hopper-v5") == () and goal_dims(None) == () and goal_dims("NoSuchRobot-v0") == ()
