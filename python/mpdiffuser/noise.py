"""Philox4x32-10 standard normals in NumPy: the noise of design section 3.1.

``normal(seed, candidate, step, count)`` equals the native core's ``mpd_noise_normal`` and the
CUDA kernel's draws bit for bit: the uniforms ``(v + 0.5) * 2**-32`` and the Box-Muller
transform are computed in float64 and rounded once to float32.
"""

from __future__ import annotations

import numpy as np

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = 0x9E3779B9
_W1 = 0xBB67AE85
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


def philox4x32_10(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32-10 block function.

    counter: [..., 4] uint32 counter words.  key: two uint32 key words.
    Returns [..., 4] uint32 output words.
    """
    c = np.asarray(counter, dtype=np.uint64)
    if c.shape[-1:] != (4,):
        raise ValueError(f"counter must have a last axis of 4 words, got shape {c.shape}")
    c0, c1, c2, c3 = (c[..., i] for i in range(4))
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    for r in range(10):
        if r > 0:
            k0 = (k0 + _W0) & 0xFFFFFFFF
            k1 = (k1 + _W1) & 0xFFFFFFFF
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = (
            (p1 >> _SHIFT32) ^ c1 ^ np.uint64(k0),
            p1 & _MASK32,
            (p0 >> _SHIFT32) ^ c3 ^ np.uint64(k1),
            p0 & _MASK32,
        )
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def _check_key(seed: int, candidate: int, step: int) -> None:
    for name, value, bits in (("seed", seed, 64), ("candidate", candidate, 32), ("step", step, 32)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
        if not 0 <= int(value) < 2**bits:
            raise ValueError(f"{name} must be an integer in [0, 2**{bits}), got {value}")


def normal_blocks(seed: int, candidates: np.ndarray, step: int, count: int) -> np.ndarray:
    """z(seed, n, step)[0:count] for every n in candidates at once.

    candidates: [C] candidate indices.  Returns float32 [C, count].
    """
    _check_key(seed, 0, step)
    cand = np.asarray(candidates)
    if cand.ndim != 1 or (cand.size and (cand.min() < 0 or cand.max() >= 2**32)):
        raise ValueError(f"candidates must be a 1-D array of indices in [0, 2**32), got {cand!r}")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    blocks = (int(count) + 3) // 4
    counter = np.zeros((cand.size, blocks, 4), dtype=np.uint64)
    counter[..., 0] = np.arange(blocks, dtype=np.uint64)[None, :]
    counter[..., 1] = cand.astype(np.uint64)[:, None]
    counter[..., 2] = np.uint64(step)
    bits = philox4x32_10(counter, (int(seed) & 0xFFFFFFFF, int(seed) >> 32)).astype(np.float64)
    u = (bits + 0.5) * 2.0**-32  # [C, blocks, 4], exact in float64
    radius = np.sqrt(-2.0 * np.log(u[..., 0::2]))  # [C, blocks, 2]
    angle = 2.0 * np.pi * u[..., 1::2]
    z = np.empty_like(u)
    z[..., 0::2] = radius * np.cos(angle)
    z[..., 1::2] = radius * np.sin(angle)
    return z.reshape(cand.size, blocks * 4)[:, :count].astype(np.float32)


def normal(seed: int, candidate: int, step: int, count: int) -> np.ndarray:
    """z(seed, candidate, step)[0:count] as float32 [count] (design section 3.1)."""
    _check_key(seed, candidate, step)
    return normal_blocks(seed, np.array([candidate]), step, count)[0]
