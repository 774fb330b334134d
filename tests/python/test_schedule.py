"""The cosine schedule: NumPy formulas, the native header's values, and their invariants."""

from __future__ import annotations

import numpy as np
import pytest

from mpdiffuser import _core
from mpdiffuser.models.schedule import CosineSchedule


@pytest.mark.parametrize("num_steps", [1, 2, 5, 20, 100])
def test_native_schedule_equals_numpy(num_steps):
    native = _core.cosine_schedule(num_steps)
    schedule = CosineSchedule.make(num_steps)
    for name, values in native.items():
        np.testing.assert_allclose(values, getattr(schedule, name), rtol=1e-13, atol=1e-15, err_msg=name)


def test_formulas_by_hand_for_k_equals_two():
    # Step k=2 of a K=4 schedule, written out from design section 3.
    K = 4
    abar = lambda s: np.cos(((s / K) + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    b1, b2 = 1 - abar(1) / abar(0), 1 - abar(2) / abar(1)
    ab1, ab2 = 1 - b1, (1 - b1) * (1 - b2)
    s = CosineSchedule.make(K)
    assert s.beta[1] == pytest.approx(b2, rel=1e-14)
    assert s.posterior_c1[1] == pytest.approx(b2 * np.sqrt(ab1) / (1 - ab2), rel=1e-13)
    assert s.posterior_c2[1] == pytest.approx(np.sqrt(1 - b2) * (1 - ab1) / (1 - ab2), rel=1e-13)
    assert s.posterior_sigma[1] == pytest.approx(np.sqrt(b2 * (1 - ab1) / (1 - ab2)), rel=1e-13)


def test_invariants():
    s = CosineSchedule.make(20)
    assert np.all(np.diff(s.alpha_bar) < 0)
    assert s.alpha_bar[-1] < 1e-3
    assert s.posterior_c1[0] == pytest.approx(1.0) and s.posterior_sigma[0] == 0.0
    # DDPM identity: for a noiseless x_k = sqrt(abar_k) x0 and a perfect clean estimate x0, the
    # posterior mean is sqrt(abar_{k-1}) x0.
    lhs = s.posterior_c1 + s.posterior_c2 * np.sqrt(s.alpha_bar)
    np.testing.assert_allclose(lhs, np.sqrt(s.alpha_bar_prev), rtol=1e-12)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_step_count(bad):
    with pytest.raises(ValueError, match="num_steps"):
        CosineSchedule.make(bad)


def test_native_bad_step_count():
    with pytest.raises(ValueError, match="num_steps"):
        _core.cosine_schedule(0)
