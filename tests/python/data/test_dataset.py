"""Dataset readers and writers: D4RL-style HDF5, .npz, Minari; errors on bad files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mpdiffuser.data.dataset import OfflineDataset, load_dataset, load_hdf5, load_minari
from mpdiffuser.data.normalizer import MinMaxNormalizer
from tests.python.conftest import make_toy_dataset


def _assert_same(a: OfflineDataset, b: OfflineDataset) -> None:
    assert len(a.episodes) == len(b.episodes)
    for x, y in zip(a.episodes, b.episodes):
        np.testing.assert_array_equal(x.observations, y.observations)
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.rewards, y.rewards)
        assert x.terminated == y.terminated
        if x.costs is not None:
            np.testing.assert_array_equal(x.costs, y.costs)


@pytest.mark.parametrize("costs", [False, True])
def test_hdf5_round_trip(tmp_path, costs):
    data = make_toy_dataset(costs=costs)
    loaded = load_dataset(data.save_hdf5(tmp_path / "d.hdf5"))
    _assert_same(data, loaded)
    assert loaded.env_id == "Toy-v0" and loaded.has_costs == costs


def test_d4rl_file_without_next_observations_drops_last_step(tmp_path):
    # A D4RL-style file as users have them: no next_observations, episodes split by flags.
    flat = make_toy_dataset().to_flat()
    del flat["next_observations"]
    with h5py.File(tmp_path / "d4rl.hdf5", "w") as f:
        for k, v in flat.items():
            f[k] = v
    loaded = load_hdf5(tmp_path / "d4rl.hdf5")
    original = make_toy_dataset()
    assert len(loaded.episodes) == len(original.episodes)
    for a, b in zip(loaded.episodes, original.episodes):
        assert a.length == b.length - 1
        np.testing.assert_array_equal(a.observations, b.observations[:-1])
        np.testing.assert_array_equal(a.actions, b.actions[:-1])


def test_npz_round_trip(tmp_path):
    data = make_toy_dataset(seed=3)
    np.savez(tmp_path / "d.npz", **data.to_flat())
    _assert_same(data, load_dataset(tmp_path / "d.npz"))


@pytest.mark.parametrize("missing", ["actions", "rewards", "terminals", "timeouts", "observations"])
def test_missing_key_is_named(tmp_path, missing):
    flat = make_toy_dataset().to_flat()
    del flat[missing]
    np.savez(tmp_path / "bad.npz", **flat)
    with pytest.raises(ValueError, match=f"missing required key '{missing}'"):  # a user error: one line in the CLI
        load_dataset(tmp_path / "bad.npz")


def test_bad_shapes_are_named(tmp_path):
    flat = make_toy_dataset().to_flat()
    flat["actions"] = flat["actions"][:-3]
    np.savez(tmp_path / "bad.npz", **flat)
    with pytest.raises(ValueError, match="'actions' must be"):
        load_dataset(tmp_path / "bad.npz")
    flat = make_toy_dataset().to_flat()
    flat["rewards"] = flat["rewards"][:5]
    np.savez(tmp_path / "bad2.npz", **flat)
    with pytest.raises(ValueError, match="'rewards'"):
        load_dataset(tmp_path / "bad2.npz")


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset(tmp_path / "d.csv")
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "absent.hdf5")


def test_minari_round_trip_local_only(tmp_path):
    data = make_toy_dataset(seed=5, state_dim=11, action_dim=3, env_id="Hopper-v5")
    data.save_minari("mpdtest/toy-v0", "Hopper-v5", root=tmp_path)
    loaded = load_minari("mpdtest/toy-v0", root=tmp_path)
    _assert_same(data, loaded)
    with pytest.raises(FileNotFoundError, match="not in local storage") as missing:
        load_minari("mpdtest/absent-v0", root=tmp_path)
    # What a user can do, not minari's "Use download=True" (a keyword of an API call).
    assert "download=True" not in str(missing.value)
    assert "mpdiffuser generate-data --minari-id mpdtest/absent-v0" in str(missing.value)


def test_normalizer_maps_range_to_unit_box():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 5)) * [1, 10, 0.1, 3, 1]
    x[:, 4] = 2.0  # a constant dimension
    n = MinMaxNormalizer.fit(x)
    y = n.normalize(x)
    np.testing.assert_allclose(y[:, :4].min(0), -1, atol=1e-6)
    np.testing.assert_allclose(y[:, :4].max(0), 1, atol=1e-6)
    assert np.all(y[:, 4] == 0)
    np.testing.assert_allclose(n.unnormalize(y), x, rtol=1e-5, atol=1e-5)
    assert MinMaxNormalizer.from_dict(n.to_dict()).normalize(x).tolist() == y.tolist()


def test_episode_validation():
    with pytest.raises(ValueError, match="observations"):
        OfflineDataset.from_flat({"observations": np.zeros(5), "actions": np.zeros((5, 1)), "rewards": np.zeros(5),
                                  "terminals": np.zeros(5), "timeouts": np.zeros(5)})


def test_non_finite_data_is_refused_with_its_place():
    import numpy as np

    from mpdiffuser.data.dataset import Episode, OfflineDataset

    obs = np.zeros((5, 3))
    obs[3, 1] = np.nan
    episode = Episode(obs, np.zeros((4, 2)), np.zeros(4), False)
    with pytest.raises(ValueError, match=r"toy: 'observations' holds NaN or infinity \(episode 0, step 3\)"):
        OfflineDataset([episode], {"name": "toy"})
    rewards = np.array([0.0, np.inf, 0.0, 0.0])
    with pytest.raises(ValueError, match="'rewards' holds NaN"):
        OfflineDataset([Episode(np.zeros((5, 3)), np.zeros((4, 2)), rewards, False)])


def test_the_authors_episode_group_layout_is_read_and_written(tmp_path, capsys):
    """The MPDiffuser authors' HDF5 layout (a group sample_<i> per episode, observations with the
    last next observation) round-trips through data convert, and load_dataset, inspect and train
    read it as the D4RL layout of the same episodes."""
    import h5py

    from mpdiffuser import cli
    from mpdiffuser.data.dataset import load_dataset
    from tests.python.conftest import make_toy_dataset

    data = make_toy_dataset(costs=True)
    flat = data.save_hdf5(tmp_path / "flat.hdf5")
    assert cli.main(["data", "convert", str(flat), str(tmp_path / "groups.hdf5"), "--layout", "episodes"]) == 0
    with h5py.File(tmp_path / "groups.hdf5") as f:
        assert sorted(f.keys(), key=lambda n: int(n.split("_")[1]))[:3] == ["sample_0", "sample_1", "sample_2"]
        g = f["sample_1"]
        assert g["observations"].shape[0] == g["actions"].shape[0] + 1 and g["terminations"][-1]  # episode 1 fell
        assert "costs" in g and not g["truncations"][-1]
    back = load_dataset(tmp_path / "groups.hdf5")
    assert len(back.episodes) == len(data.episodes) and back.has_costs
    for a, b in zip(back.episodes, data.episodes):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.rewards, b.rewards)
        assert a.terminated == b.terminated
    assert cli.main(["data", "convert", str(tmp_path / "groups.hdf5"), str(tmp_path / "again.hdf5")]) == 0
    assert load_dataset(tmp_path / "again.hdf5").num_transitions == data.num_transitions
    assert cli.main(["data", "inspect", str(tmp_path / "groups.hdf5")]) == 0
    with h5py.File(tmp_path / "short.hdf5", "w") as f:
        f["sample_0/observations"] = np.zeros((5, 4))
        f["sample_0/actions"] = np.zeros((5, 2))
        f["sample_0/rewards"] = np.zeros(5)
        f["sample_0/terminations"] = np.zeros(5, bool)
    capsys.readouterr()
    assert cli.main(["data", "inspect", str(tmp_path / "short.hdf5")]) == 2
    assert "episode group 'sample_0' holds 5 observations for 5 actions" in capsys.readouterr().err
    assert cli.main(["data", "convert", str(flat), str(tmp_path / "x.npz"), "--layout", "episodes"]) == 2
