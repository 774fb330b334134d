"""The cosine diffusion schedule and its posterior coefficients (design section 3).

Computed in float64 with NumPy, exactly as ``csrc/math/schedule.h`` does; the sampler and the
trainers take float32 copies. Index ``k - 1`` of every array holds step ``k`` (1..K).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CosineSchedule:
    """Per-step coefficients of a K-step cosine schedule; every array is float64 [K]."""

    num_steps: int
    beta: np.ndarray
    alpha: np.ndarray
    alpha_bar: np.ndarray
    alpha_bar_prev: np.ndarray
    posterior_c1: np.ndarray
    posterior_c2: np.ndarray
    posterior_sigma: np.ndarray

    @classmethod
    def make(cls, num_steps: int) -> "CosineSchedule":
        if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
        s = np.arange(num_steps + 1, dtype=np.float64)
        alpha_bar_continuous = np.cos((s / num_steps + 0.008) / 1.008 * np.pi / 2) ** 2
        beta = np.minimum(1.0 - alpha_bar_continuous[1:] / alpha_bar_continuous[:-1], 0.999)
        alpha = 1.0 - beta
        alpha_bar = np.cumprod(alpha)
        alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
        return cls(
            num_steps=int(num_steps),
            beta=beta,
            alpha=alpha,
            alpha_bar=alpha_bar,
            alpha_bar_prev=alpha_bar_prev,
            posterior_c1=beta * np.sqrt(alpha_bar_prev) / (1.0 - alpha_bar),
            posterior_c2=np.sqrt(alpha) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar),
            posterior_sigma=np.sqrt(beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)),
        )
