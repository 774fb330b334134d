"""The Philox noise: known answers, native == NumPy element for element, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from mpdiffuser import _core, noise

# Random123 tests/kat_vectors, "philox4x32 10": counter[4], key[2] -> result[4].
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_numpy_philox_known_answers(counter, key, expected):
    assert tuple(int(v) for v in noise.philox4x32_10(np.array(counter), key)) == expected


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_native_philox_known_answers(counter, key, expected):
    assert _core.philox4x32_10(counter, key) == expected


KEYS = [(0, 0, 0), (1, 0, 1), (12345, 63, 20), (2**32 - 1, 7, 21), (2**32, 1, 2), (2**64 - 1, 2**32 - 1, 2**32 - 1)]
COUNTS = [1, 2, 3, 5, 7, 13, 448, 1001]


@pytest.mark.parametrize("seed,candidate,step", KEYS)
@pytest.mark.parametrize("count", COUNTS)
def test_native_equals_numpy_bit_for_bit(seed, candidate, step, count):
    native = _core.noise_normal(seed, candidate, step, count)
    reference = noise.normal(seed, candidate, step, count)
    assert native.dtype == np.float32 and native.shape == (count,)
    assert np.array_equal(native.view(np.uint32), reference.view(np.uint32))


def test_prefix_property_and_lane_layout():
    # A shorter draw is a prefix of a longer one: element e depends only on (key, e).
    long = noise.normal(9, 3, 4, 4096)
    for count in (1, 5, 99, 4095):
        assert np.array_equal(noise.normal(9, 3, 4, count), long[:count])
    # Lanes 0..3 of block b are elements 4b..4b+3: the uniforms of block 1 give elements 4..7.
    words = noise.philox4x32_10(np.array([1, 3, 4, 0]), (9, 0)).astype(np.float64)
    u = (words + 0.5) * 2.0**-32
    r0, r1 = np.sqrt(-2 * np.log(u[0])), np.sqrt(-2 * np.log(u[2]))
    manual = np.array([r0 * np.cos(2 * np.pi * u[1]), r0 * np.sin(2 * np.pi * u[1]),
                       r1 * np.cos(2 * np.pi * u[3]), r1 * np.sin(2 * np.pi * u[3])], np.float32)
    assert np.array_equal(long[4:8], manual)


def test_normal_blocks_equals_per_candidate():
    batch = noise.normal_blocks(77, np.arange(5), 3, 30)
    for n in range(5):
        assert np.array_equal(batch[n], noise.normal(77, n, 3, 30))


def test_distribution_moments():
    z = _core.noise_normal(2024, 0, 1, 1 << 18).astype(np.float64)
    se = 1 / np.sqrt(z.size)
    assert abs(z.mean()) < 5 * se
    assert abs(z.var() - 1) < 5 * np.sqrt(2) * se
    assert abs(np.mean(z**3)) < 5 * np.sqrt(15) * se  # symmetric
    assert np.isfinite(z).all()


def test_keys_give_different_streams():
    base = noise.normal(5, 0, 1, 64)
    for other in [(6, 0, 1), (5, 1, 1), (5, 0, 2), (5 + 2**32, 0, 1)]:
        assert not np.array_equal(base, noise.normal(*other, 64))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(seed=-1, candidate=0, step=0, count=4), ValueError, "seed"),
        (dict(seed=2**64, candidate=0, step=0, count=4), ValueError, "seed"),
        (dict(seed=0, candidate=2**32, step=0, count=4), ValueError, "candidate"),
        (dict(seed=0, candidate=0, step=-3, count=4), ValueError, "step"),
        (dict(seed=0, candidate=0, step=0, count=-1), ValueError, "count"),
        (dict(seed=1.5, candidate=0, step=0, count=4), TypeError, "seed"),
        (dict(seed=0, candidate="0", step=0, count=4), TypeError, "candidate"),
        (dict(seed=0, candidate=0, step=True, count=4), TypeError, "step"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        _core.noise_normal(**kwargs)
    with pytest.raises(error, match=match):
        noise.normal(**kwargs)


def test_numpy_integers_are_accepted():
    assert np.array_equal(_core.noise_normal(np.uint64(3), np.int32(1), np.int64(2), np.int16(9)),
                          noise.normal(3, 1, 2, 9))


def test_cuda_kernel_equals_numpy():
    if not _core.cuda_device_available():
        pytest.skip("no CUDA device")
    for seed, candidate, step in KEYS[:4]:
        got = _core.cuda_noise_normal(seed, candidate, step, 1003)
        assert np.array_equal(got, noise.normal(seed, candidate, step, 1003))


def test_cuda_entry_point_without_device_raises():
    if _core.cuda_device_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="CUDA|device"):
        _core.cuda_noise_normal(0, 0, 0, 4)
