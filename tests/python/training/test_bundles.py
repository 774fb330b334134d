"""mpd.fit: every setting of `mpdiffuser train` by its flag's name, with the same checks, and
nothing written when one is wrong."""

from __future__ import annotations

import pytest
import torch

import mpdiffuser as mpd
from tests.python.conftest import make_toy_dataset

TINY = dict(horizon=4, diffusion_steps=3, width=16, layers=2, batch_size=8)


def test_fit_takes_the_train_commands_names(tmp_path):
    data = make_toy_dataset()
    bundle = mpd.fit(data, tmp_path / "b", steps=4, lr=1e-3, seed=3, checkpoint_every=2, action_weight=2.0,
                     log_every=2, tensorboard=False, device="cpu", progress=False, **TINY)
    spec = mpd.BundleSpec.load(bundle.path)
    m = spec.model
    assert (m.horizon, m.num_steps, m.width, m.layers) == (4, 3, 16, 2)
    info = torch.load(bundle.path / "planner.pt", weights_only=True)["info"]["train_config"]
    assert info["learning_rate"] == 1e-3 and info["seed"] == 3 and info["action_weight"] == 2.0
    rows = (bundle.path / "logs" / "planner.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # a row every 2 steps
    assert not (bundle.path / "logs" / "tensorboard").exists()


@pytest.mark.parametrize("settings, error, message", [
    ({"lr": float("nan")}, ValueError, "learning_rate must be a finite number > 0, got nan"),
    ({"horizon": 0}, ValueError, "ModelConfig.horizon must be a positive integer, got 0"),
    ({"precision": "fp8"}, ValueError, "precision must be one of"),
    ({"learning_rate": 1e-3}, TypeError, r"unknown training fields \['learning_rate'\]; the fields are at_once, "
                                         r"device, env, .* and the settings steps, batch_size, lr"),
])
def test_fit_refuses_a_bad_setting_before_writing(tmp_path, settings, error, message):
    with pytest.raises(error, match=message):
        mpd.fit(make_toy_dataset(), tmp_path / "b", steps=2, device="cpu", progress=False, **settings)
    assert not (tmp_path / "b").exists()
