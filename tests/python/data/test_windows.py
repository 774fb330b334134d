"""Windows and transitions: content, padding after termination, conditions."""

from __future__ import annotations

import numpy as np
import pytest

from mpdiffuser.data.dataset import Episode, OfflineDataset
from mpdiffuser.data.normalizer import MinMaxNormalizer
from mpdiffuser.data.windows import ConditionScale, TransitionSampler, WindowSampler
from mpdiffuser.models.bundle import BundleSpec
from tests.python.conftest import TINY_MODEL, make_toy_dataset


def _dataset(terminated: bool, T: int = 10, costs: bool = False) -> OfflineDataset:
    obs = np.arange((T + 1) * 2, dtype=np.float32).reshape(T + 1, 2)
    act = np.arange(T, dtype=np.float32).reshape(T, 1)
    return OfflineDataset([Episode(obs, act, np.ones(T), terminated, np.ones(T) if costs else None)], {})


def _identity(dim, low=-1000.0, high=1000.0):
    return MinMaxNormalizer(np.full(dim, low, np.float32), np.full(dim, high, np.float32))


def test_window_content_and_padding():
    data = _dataset(terminated=True)
    cond = ConditionScale(0.0, 10.0, 1.0, 0.1, False)
    sx, su = _identity(2), _identity(1)
    s = WindowSampler(data, sx, su, 4, cond)
    assert len(s) == 10  # terminated: every start 0..T-1, padded past the end
    batch = s.sample(np.random.default_rng(0), 400)
    obs, act = data.episodes[0].observations, data.episodes[0].actions
    for x0, states, actions, c in zip(batch["x0"], batch["states"], batch["actions"], batch["cond"]):
        t = int(round(float(sx.unnormalize(x0)[0]))) // 2
        want_states = obs[np.minimum(np.arange(t + 1, t + 5), 10)]
        np.testing.assert_allclose(sx.unnormalize(states), want_states, atol=1e-3)
        want_actions = [act[i, 0] if i < 10 else None for i in range(t, t + 4)]
        for got, want in zip(su.unnormalize(actions)[:, 0], want_actions):
            if want is None:
                assert got == pytest.approx(0.0, abs=1e-3)  # padded actions are zero (normalized mid-range)
            else:
                assert got == pytest.approx(want, abs=1e-3)
        assert c[0] == pytest.approx((10 - t) / 10.0)  # undiscounted return-to-go / range


def test_time_limited_episodes_are_not_padded():
    s = WindowSampler(_dataset(terminated=False), _identity(2), _identity(1), 4, ConditionScale(0, 10, 1.0, 0.1, False))
    assert len(s) == 10 - 4 + 1


def test_cost_condition_is_scaled_cost_to_go():
    s = WindowSampler(_dataset(True, costs=True), _identity(2), _identity(1), 3, ConditionScale(0, 10, 1.0, 0.1, True))
    b = s.sample(np.random.default_rng(1), 50)
    g, l = b["cond"][:, 0], b["cond"][:, 1]
    np.testing.assert_allclose(l, g * 10 * 0.1, atol=1e-6)  # here cost-to-go equals return-to-go


def test_discounted_return_to_go():
    c = ConditionScale(0, 1, 0.5, 0.1, False)
    np.testing.assert_allclose(c.returns_to_go(np.array([1.0, 1.0, 1.0])), [1.75, 1.5, 1.0])


def test_condition_vector_checks_cost_usage():
    with pytest.raises(ValueError, match="cost_limit"):
        ConditionScale(0, 1, 1.0, 0.1, True).condition(0.9, None)
    with pytest.raises(ValueError, match="without costs"):
        ConditionScale(0, 1, 1.0, 0.1, False).condition(0.9, 3.0)
    np.testing.assert_allclose(ConditionScale(0, 1, 1.0, 0.1, True).condition(0.9, 20.0), [0.9, 2.0])


def test_too_short_for_any_window():
    with pytest.raises(ValueError, match="long enough"):
        WindowSampler(_dataset(False, T=3), _identity(2), _identity(1), 8, ConditionScale(0, 1, 1.0, 0.1, False))


def test_transitions_mark_terminal_step():
    t = TransitionSampler(_dataset(True), _identity(2), _identity(1))
    assert len(t) == 10 and t.terminal.sum() == 1 and t.terminal[-1] == 1


def test_authors_return_condition_penalizes_falls_and_scales_by_the_best_start():
    import numpy as np

    from mpdiffuser.data.dataset import Episode, OfflineDataset
    from mpdiffuser.data.windows import ConditionScale

    fell = Episode(np.zeros((4, 2)), np.zeros((3, 1)), np.array([1.0, 1.0, 1.0]), True)
    ran = Episode(np.zeros((4, 2)), np.zeros((3, 1)), np.array([2.0, 2.0, 2.0]), False)
    c = ConditionScale.fit(OfflineDataset([fell, ran]), 0.5, 0.1, "authors")
    assert c.termination_penalty == 100.0 and c.return_low == 0.0
    np.testing.assert_allclose(c.returns_to_go(fell.rewards, True), [1 + 0.5 + 0.25 * (1 - 100), 1 + 0.5 * (1 - 100), -99])
    assert c.return_high == 2 + 1 + 0.5  # the best episode start: the one that did not fall
    assert c.normalized_return(np.array([3.5]))[0] == 1.0
    only_falls = ConditionScale.fit(OfflineDataset([fell]), 0.5, 0.1, "authors")  # every start negative
    start = 1 + 0.5 + 0.25 * (1 - 100)
    assert (only_falls.return_low, only_falls.return_high) == (start - 1.0, start)  # one start: a span of 1
    # A goal-reaching robot's rewards (-1 a step until success): the starts span [worst, best] -> [0, 1]
    slow = Episode(np.zeros((5, 2)), np.zeros((4, 1)), -np.ones(4), False)
    quick = Episode(np.zeros((5, 2)), np.zeros((4, 1)), np.array([-1.0, 0.0, 0.0, 0.0]), False)
    goal = ConditionScale.fit(OfflineDataset([slow, quick]), 0.5, 0.1, "authors")
    worst, best = -(1 + 0.5 + 0.25 + 0.125), -1.0
    assert (goal.return_low, goal.return_high) == (worst, best)
    np.testing.assert_allclose(goal.normalized_return(np.array([worst, best])), [0.0, 1.0])
    minmax = ConditionScale.fit(OfflineDataset([fell, ran]), 0.5, 0.1, "minmax")
    assert minmax.termination_penalty == 0.0 and minmax.return_high == 3.5


def test_device_windows_draw_what_the_host_sampler_draws():
    """The device sampler (batches drawn with a torch.Generator on the training device): every
    window is the host sampler's window at the same start, the starts are the host's valid starts,
    and they are uniform over them. Bound: Pearson's chi-square over S starts must stay below
    df + 6 sqrt(2 df) (df = S - 1; about 6 standard deviations, a false alarm below 1e-8), and
    every start is drawn."""
    import torch

    data = make_toy_dataset(seed=5, episodes=20)
    spec = BundleSpec.fit(data, [data], TINY_MODEL)
    host = WindowSampler(data, spec.states, spec.actions, TINY_MODEL.horizon, spec.conditions)
    device = host.on_device("cpu")
    gen = torch.Generator().manual_seed(7)
    state = gen.get_state()
    batch = device.sample(gen, 64)
    gen.set_state(state)
    t = device.draw(gen, 64).numpy()
    rows = t[:, None] + np.arange(TINY_MODEL.horizon)
    np.testing.assert_array_equal(batch["x0"].numpy(), host._obs[t])
    np.testing.assert_array_equal(batch["states"].numpy(), host._obs[rows + 1])
    np.testing.assert_array_equal(batch["actions"].numpy(), host._act[rows])
    np.testing.assert_array_equal(batch["cond"].numpy(), host._cond[t])

    S, draws = len(host), 200 * len(host)
    starts = device.draw(gen, draws).numpy()
    assert set(np.unique(starts)) == set(host._starts)  # only valid starts, and every one of them
    counts = np.bincount(np.searchsorted(host._starts, starts), minlength=S)
    chi2 = ((counts - draws / S) ** 2 / (draws / S)).sum()
    df = S - 1
    assert chi2 < df + 6 * np.sqrt(2 * df), (chi2, df)
    # A sampler that skipped half the starts fails the same test (the bound has teeth).
    half = np.where(np.arange(S) % 2 == 0, 2 * draws / S, 0)
    assert ((half - draws / S) ** 2 / (draws / S)).sum() > df + 6 * np.sqrt(2 * df)


def test_device_transitions_are_the_host_transitions():
    import torch

    data = make_toy_dataset(seed=6, costs=True)
    spec = BundleSpec.fit(data, [data], TINY_MODEL)
    host = TransitionSampler(data, spec.states, spec.actions).shard(1, 2)
    device = host.on_device("cpu")
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    batch = device.sample(gen, 500)
    gen.set_state(state)
    i = device.index[torch.randint(len(device.index), (500,), generator=gen)].numpy()
    assert set(i) <= set(range(1, len(host.x), 2))  # the shard's own transitions only
    for key, table in (("x", host.x), ("u", host.u), ("reward", host.reward), ("terminal", host.terminal),
                       ("cost", host.cost)):
        np.testing.assert_array_equal(batch[key].numpy(), table[i])
