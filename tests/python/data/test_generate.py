"""Dataset generation: kinds, the recipe check of cached files, cached policies with their replay
buffers, mixed-safety data."""

from __future__ import annotations

import pytest

from mpdiffuser.data.dataset import load_dataset
from mpdiffuser.data.generate import GenerateConfig, generate


def test_generate_validates_kinds_and_refuses_a_file_of_another_recipe(tmp_path):
    with pytest.raises(ValueError, match="constrained"):
        GenerateConfig("Hopper-v5", "mixed")
    with pytest.raises(ValueError, match="medium-replay"):
        GenerateConfig("Hopper-v5", "medium-replay", constrained=True)
    path = generate(GenerateConfig("Hopper-v5", "random", 200), tmp_path, progress=False)
    assert generate(GenerateConfig("Hopper-v5", "random", 200), tmp_path, progress=False) == path
    with pytest.raises(ValueError, match="another recipe .*transitions"):
        generate(GenerateConfig("Hopper-v5", "random", 300), tmp_path, progress=False)


def test_medium_replay_after_a_cached_policy_and_mixed_safety_data(tmp_path):
    medium = load_dataset(generate(GenerateConfig("Hopper-v5", "medium", 300, policy_steps=300), tmp_path, progress=False))
    # The policy is now cached: medium-replay must still find its replay buffer (saved beside it).
    replay = load_dataset(generate(GenerateConfig("Hopper-v5", "medium-replay", 300, policy_steps=300), tmp_path,
                                   progress=False))
    assert replay.num_transitions == 300 and medium.num_transitions == 300
    # The same recipe with the policy loaded from the cache (not trained in this process first) and
    # torch's generator in another state: the same data, action for action.
    import numpy as np
    import torch

    torch.rand(1000)
    again = load_dataset(generate(GenerateConfig("Hopper-v5", "medium", 300, policy_steps=300), tmp_path / "again",
                                  progress=False, policy_dir=tmp_path / "policies"))
    assert len(again.episodes) == len(medium.episodes)
    for a, b in zip(again.episodes, medium.episodes):
        np.testing.assert_array_equal(a.actions, b.actions)
    mixed = load_dataset(generate(GenerateConfig("Hopper-v5", "mixed", 300, policy_steps=300, constrained=True,
                                                 cost_penalty=3.0), tmp_path, progress=False))
    assert mixed.has_costs and mixed.num_transitions == 600
    assert mixed.metadata["recipe"]["cost_penalty"] == 3.0
    assert (tmp_path / "policies" / "sac-Hopper-v5-300-pen3-s0.zip").exists()


def test_new_rollouts_of_one_cached_policy_under_another_seed(tmp_path):
    """policy_seed rolls out the policy trained with that seed under a new rollout seed: no new
    policy is trained, the data differ, and the name and recipe say so; policy_seed = seed is the
    plain recipe (so files made before the field existed still match)."""
    import numpy as np

    first = load_dataset(generate(GenerateConfig("Hopper-v5", "medium", 300, policy_steps=300), tmp_path, progress=False))
    config = GenerateConfig("Hopper-v5", "medium", 300, policy_steps=300, seed=1, policy_seed=0)
    assert config.name == "hopper-medium-s1-policy0" and config.trained_with == 0
    other = load_dataset(generate(config, tmp_path, progress=False))
    assert sorted(p.name for p in (tmp_path / "policies").glob("*.zip")) == ["sac-Hopper-v5-300-s0.zip"]
    assert other.metadata["recipe"]["policy_seed"] == 0 and "policy_seed" not in first.metadata["recipe"]
    assert not np.array_equal(other.episodes[0].actions[:10], first.episodes[0].actions[:10])
    same = GenerateConfig("Hopper-v5", "medium", 300, policy_steps=300, seed=0, policy_seed=0)
    assert same == GenerateConfig("Hopper-v5", "medium", 300, policy_steps=300) and same.name == "hopper-medium-s0"
    assert GenerateConfig("Hopper-v5", "random", 300, seed=2, policy_seed=0).name == "hopper-random-s2"


def test_training_a_behaviour_policy_leaves_no_logger_folder(tmp_path, monkeypatch):
    """SB3's default logger makes an empty tempdir/SB3-<date> folder per training run; one per
    cached policy piled up hundreds in /tmp."""
    import tempfile

    from mpdiffuser.data.generate import train_behaviour_policy

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    model, seconds = train_behaviour_policy("Hopper-v5", 120, 0, tmp_path / "policies", progress=False)
    assert seconds > 0 and model.num_timesteps == 120
    assert list(scratch.glob("SB3-*")) == []
