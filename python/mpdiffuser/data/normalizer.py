"""Min-max normalization of states and actions to [-1, 1], stored with the model."""

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
        return {"low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "MinMaxNormalizer":
        return cls(np.asarray(d["low"], dtype=np.float32), np.asarray(d["high"], dtype=np.float32))
