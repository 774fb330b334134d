"""Shared pytest fixtures and helpers for the mpdiffuser test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


import numpy as np  # noqa: E402

from mpdiffuser.config import ModelConfig  # noqa: E402
from mpdiffuser.data.dataset import Episode, OfflineDataset  # noqa: E402


def make_toy_dataset(seed: int = 0, episodes: int = 12, state_dim: int = 4, action_dim: int = 2,
                     costs: bool = False, env_id: str = "Toy-v0") -> OfflineDataset:
    """Random episodes of varied length, every other one terminated."""
    rng = np.random.default_rng(seed)
    eps = []
    for i in range(episodes):
        T = int(rng.integers(6, 40))
        eps.append(Episode(rng.normal(size=(T + 1, state_dim)), rng.uniform(-1, 1, (T, action_dim)),
                           rng.normal(size=T), bool(i % 2),
                           rng.integers(0, 2, T).astype(np.float32) if costs else None))
    return OfflineDataset(eps, {"env_id": env_id, "name": f"toy-{seed}"})


# Epsilon-prediction: a few training steps leave the networks near their zero initialization, and
# only then does the clean estimate still track the noisy input level by level (the diagnostics'
# tests rely on it); sample-prediction is covered by the synthetic models of the sampling tests.
TINY_MODEL = ModelConfig(horizon=6, num_steps=5, width=32, layers=2, ranker_width=16, ranker_layers=2,
                         prediction="epsilon")


@pytest.fixture(scope="session")
def toy_bundle(tmp_path_factory):
    """A bundle of tiny models trained for a few steps on toy data (with costs): (dir, dataset)."""
    from mpdiffuser.config import TrainConfig
    from mpdiffuser.models.bundle import BundleSpec
    from mpdiffuser.training.train import train_model

    directory = tmp_path_factory.mktemp("toy_bundle")
    data = make_toy_dataset(costs=True)
    BundleSpec.fit(data, [data], TINY_MODEL).save(directory)
    for name in ("planner", "dynamics", "reward", "cost"):
        train_model(directory, name, [data], TrainConfig(steps=30, batch_size=32, checkpoint_every=10), progress=False)
    return directory, data
