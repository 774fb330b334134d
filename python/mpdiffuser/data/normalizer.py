"""Normalization of states and actions to [-1, 1], stored with the model (design section 3):
min-max (affine) or CDF (each dimension through its empirical CDF, the authors' and Decision
Diffuser's choice). `csrc/math/normalizer.h` computes the same maps in the native core."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MinMaxNormalizer:
    """Per-dimension affine map [low, high] -> [-1, 1]. low, high: float32 [dim].

    A dimension with no spread (high == low) maps to 0 and back to low.
    """

    low: np.ndarray
    high: np.ndarray

    @classmethod
    def fit(cls, data: np.ndarray) -> "MinMaxNormalizer":
        data = np.asarray(data, dtype=np.float64)
        return cls(data.min(axis=0).astype(np.float32), data.max(axis=0).astype(np.float32))

    @property
    def dim(self) -> int:
        return int(self.low.shape[0])

    def _half_range(self) -> np.ndarray:
        half = (self.high.astype(np.float64) - self.low) / 2
        return np.where(half > 0, half, 1.0)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """x: [..., dim] -> float32 [..., dim] in [-1, 1] for data inside the fitted range."""
        mid = (self.high.astype(np.float64) + self.low) / 2
        return ((np.asarray(x, dtype=np.float64) - mid) / self._half_range()).astype(np.float32)

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        """y: [..., dim] in [-1, 1] -> float32 [..., dim] in data units."""
        mid = (self.high.astype(np.float64) + self.low) / 2
        return (np.asarray(y, dtype=np.float64) * self._half_range() + mid).astype(np.float32)

    def to_dict(self) -> dict:
        return {"kind": "minmax", "low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "MinMaxNormalizer":
        return cls(np.asarray(d["low"], dtype=np.float32), np.asarray(d["high"], dtype=np.float32))


CDF_QUANTILES = 257  # Q: stored quantiles per dimension (F(q_j) = j / (Q - 1))


@dataclass(frozen=True)
class CdfNormalizer:
    """y = 2 F(x) - 1 per dimension, F piecewise linear between Q stored quantiles q_j with
    F(q_j) = j / (Q - 1), 0 below q_0 and 1 above q_{Q-1}. Where quantiles tie (a dimension that
    repeats one value, or is constant), F at that value is the middle of the tied run, so F stays
    a monotone function and a constant dimension maps to 0. The inverse is F's exact
    piecewise-linear inverse. quantiles: float32 [dim, Q], non-decreasing along Q.
    """

    quantiles: np.ndarray

    @classmethod
    def fit(cls, data: np.ndarray, num_quantiles: int = CDF_QUANTILES) -> "CdfNormalizer":
        data = np.asarray(data, dtype=np.float64)
        q = np.quantile(data, np.linspace(0.0, 1.0, num_quantiles), axis=0).T  # [dim, Q]
        return cls(np.maximum.accumulate(q.astype(np.float32), axis=1))  # float32 rounding keeps it monotone

    def __post_init__(self) -> None:
        q = np.asarray(self.quantiles)
        if q.ndim != 2 or q.shape[1] < 2:
            raise ValueError(f"CDF quantiles must be [dim, Q] with Q >= 2, got shape {q.shape}")
        if not np.isfinite(q).all() or (np.diff(q, axis=1) < 0).any():
            raise ValueError("CDF quantiles must be finite and non-decreasing in every dimension")

    @property
    def dim(self) -> int:
        return int(self.quantiles.shape[0])

    @property
    def low(self) -> np.ndarray:
        return self.quantiles[:, 0]

    @property
    def high(self) -> np.ndarray:
        return self.quantiles[:, -1]

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """x: [..., dim] -> float32 [..., dim] in [-1, 1]."""
        x = np.asarray(x, dtype=np.float64)
        out = np.empty(x.shape, dtype=np.float64)
        last = self.quantiles.shape[1] - 1
        for i in range(self.dim):
            q = self.quantiles[i].astype(np.float64)
            v = x[..., i]
            a = np.searchsorted(q, v, "left")  # first q >= v
            b = np.searchsorted(q, v, "right") - 1  # last q <= v
            lo, hi = np.clip(b, 0, last), np.clip(a, 0, last)
            gap = q[hi] - q[lo]
            between = (b + (v - q[lo]) / np.where(gap > 0, gap, 1.0)) / last
            tied = (a + b) / 2.0 / last
            f = np.where(a > b, between, tied)
            f = np.where(b < 0, 0.0, np.where(a > last, 1.0, f))
            out[..., i] = 2.0 * f - 1.0
        return out.astype(np.float32)

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        """y: [..., dim] in [-1, 1] -> float32 [..., dim] in data units."""
        y = np.asarray(y, dtype=np.float64)
        last = self.quantiles.shape[1] - 1
        t = np.clip((y + 1.0) / 2.0, 0.0, 1.0) * last  # [..., dim]
        j = np.minimum(np.floor(t), last - 1).astype(np.int64)
        q = self.quantiles.astype(np.float64)
        rows = np.arange(self.dim)
        lo, hi = q[rows, j], q[rows, j + 1]
        return (lo + (t - j) * (hi - lo)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"kind": "cdf", "quantiles": self.quantiles.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "CdfNormalizer":
        return cls(np.asarray(d["quantiles"], dtype=np.float32))


NORMALIZER_KINDS = {"minmax": MinMaxNormalizer, "cdf": CdfNormalizer}


def fit_normalizer(kind: str, data: np.ndarray):
    """A normalizer of `kind` ("minmax" or "cdf") fitted to data [n, dim]."""
    if kind not in NORMALIZER_KINDS:
        raise ValueError(f"unknown normalizer {kind!r}, expected one of {', '.join(NORMALIZER_KINDS)}")
    return NORMALIZER_KINDS[kind].fit(data)


def normalizer_from_dict(d: dict):
    """The normalizer a bundle stored (bundles made before CDF existed hold min-max ones)."""
    return NORMALIZER_KINDS[d.get("kind", "minmax")].from_dict(d)
