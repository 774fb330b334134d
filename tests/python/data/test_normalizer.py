"""The normalizers (design section 3): min-max and CDF, their round trips, monotonicity, ties,
and the native core's copy of the CDF maps on the same float32 tables."""

from __future__ import annotations

import numpy as np
import pytest

from mpdiffuser.data.normalizer import CdfNormalizer, MinMaxNormalizer, fit_normalizer, normalizer_from_dict


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return np.c_[rng.normal(size=5000) ** 3, rng.exponential(size=5000), rng.integers(0, 4, 5000),
                 np.full(5000, 2.5)]  # heavy-tailed, skewed, discrete, constant


def test_cdf_round_trip_within_float32_rounding(data):
    n = CdfNormalizer.fit(data)
    y = n.normalize(data)
    assert y.dtype == np.float32 and np.all(np.abs(y) <= 1.0)
    continuous = slice(0, 2)
    back = n.unnormalize(y)
    scale = np.abs(data[:, continuous]).max(axis=0)
    assert np.max(np.abs(back[:, continuous] - data[:, continuous]) / scale) < 1e-5
    np.testing.assert_array_equal(back[:, 2:], data[:, 2:].astype(np.float32))  # tied values come back exactly


def test_cdf_is_monotone_and_uniformizes(data):
    n = CdfNormalizer.fit(data)
    grid = np.linspace(data.min(axis=0) - 1, data.max(axis=0) + 1, 2001)
    y = n.normalize(grid)
    assert np.all(np.diff(y, axis=0) >= 0)  # monotone in every dimension
    y_data = n.normalize(data)[:, :2]
    hist, _ = np.histogram(y_data[:, 0], bins=10, range=(-1, 1))
    assert hist.min() > 0.8 * hist.mean()  # the marginal becomes (nearly) uniform
    np.testing.assert_array_equal(n.normalize(data)[:, 3], 0.0)  # a constant dimension maps to 0
    assert n.normalize(np.full((1, 4), -1e9)).min() == -1.0 and n.normalize(np.full((1, 4), 1e9))[0, :3].min() == 1.0


def test_cdf_rejects_tables_that_are_not_a_function():
    with pytest.raises(ValueError, match="non-decreasing"):
        CdfNormalizer(np.array([[0.0, 2.0, 1.0]], np.float32))
    with pytest.raises(ValueError, match="finite"):
        CdfNormalizer(np.array([[0.0, np.nan, 1.0]], np.float32))
    with pytest.raises(ValueError, match="Q >= 2"):
        CdfNormalizer(np.zeros((2, 1), np.float32))


def test_bundle_dicts_round_trip(data):
    for kind in ("minmax", "cdf"):
        n = fit_normalizer(kind, data)
        again = normalizer_from_dict(n.to_dict())
        np.testing.assert_array_equal(again.normalize(data[:50]), n.normalize(data[:50]))
    old = {"low": [0.0], "high": [1.0]}  # a bundle.json from before normalizer kinds
    assert isinstance(normalizer_from_dict(old), MinMaxNormalizer)
    with pytest.raises(ValueError, match="unknown normalizer"):
        fit_normalizer("zscore", data)
