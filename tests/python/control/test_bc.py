"""Behaviour cloning, the locomotion suite's offline-RL baseline."""

from __future__ import annotations

import numpy as np

from mpdiffuser.config import TrainConfig
from mpdiffuser.data.dataset import Episode, OfflineDataset
from mpdiffuser.data.normalizer import MinMaxNormalizer


def test_behaviour_cloning_fits_a_known_policy():
    from mpdiffuser.control.bc import BCPolicy

    rng = np.random.default_rng(0)
    A = rng.normal(size=(2, 4)) * 0.5
    policy = lambda s: 3.0 * np.tanh(s @ A.T)  # noqa: E731  actions in [-3, 3]
    episodes = []
    for _ in range(20):
        s = rng.uniform(-1, 1, size=(51, 4)).astype(np.float32)
        episodes.append(Episode(s, policy(s[:-1]), np.zeros(50), False))
    data = OfflineDataset(episodes)
    obs = np.concatenate([e.observations for e in episodes])
    act = np.concatenate([e.actions for e in episodes])
    bc, info = BCPolicy.train(data, MinMaxNormalizer.fit(obs), MinMaxNormalizer.fit(act),
                              TrainConfig(steps=1200, batch_size=128, learning_rate=1e-3), width=64, layers=2,
                              progress=False)
    test_states = rng.uniform(-1, 1, size=(50, 4)).astype(np.float32)
    errors = np.abs(np.stack([bc.act(s) for s in test_states]) - policy(test_states))
    assert info["final_loss"] < 0.01 and errors.mean() < 0.15  # 2.5% of the action range
    assert bc.act(test_states[0]).dtype == np.float32 and bc.act(test_states[0]).shape == (2,)
