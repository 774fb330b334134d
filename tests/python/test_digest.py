"""The model file's content digest (mpdiffuser.digest): every writer stores it, both readers
verify it at load, a changed byte or metadata value is refused by both, a file without one loads
with a warning (Python) or digest_verified = False (native), and a plan that comes out NaN or
infinite is refused by every backend rather than reported as a success."""

from __future__ import annotations

import hashlib
import struct
import warnings

import numpy as np
import pytest

from mpdiffuser import digest as digest_module
from mpdiffuser.bench import synthetic_model_file
from mpdiffuser.config import ModelConfig
from mpdiffuser.export import _read_verified, _write_model_file, model_file_digest, read_model_file, with_defaults

SMALL = ModelConfig(horizon=4, num_steps=3, width=16, layers=2, ranker_width=8, ranker_layers=2)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return synthetic_model_file(tmp_path_factory.mktemp("digest") / "m.safetensors", model=SMALL)


def _native(path):
    from mpdiffuser import _core

    return _core.Model(str(path))


def _header(raw: bytes) -> tuple[int, bytes]:
    (size,) = struct.unpack("<Q", raw[:8])
    return size, raw[8:8 + size]


def test_the_digest_is_the_documented_layout(model_file):
    meta, entries, data = digest_module.read_header(model_file.read_bytes())
    # An independent transcription of the layout in the module docstring.
    h = hashlib.sha256()
    keys = sorted(k for k in meta if k != "digest.sha256")
    h.update(struct.pack("<Q", len(keys)))
    for k in keys:
        for text in (k, meta[k]):
            h.update(struct.pack("<Q", len(text.encode())) + text.encode())
    h.update(struct.pack("<Q", len(entries)))
    for name in sorted(entries):
        e = entries[name]
        for text in (name, e["dtype"]):
            h.update(struct.pack("<Q", len(text.encode())) + text.encode())
        h.update(struct.pack("<Q", len(e["shape"])) + b"".join(struct.pack("<Q", d) for d in e["shape"]))
        begin, end = e["data_offsets"]
        h.update(struct.pack("<Q", end - begin) + bytes(data[begin:end]))
    assert meta["digest.sha256"] == h.hexdigest() == model_file_digest(model_file)


def test_both_readers_verify_a_written_file(model_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no digest" warning for a file this version wrote
        read_model_file(model_file)
    assert _native(model_file).info()["digest_verified"] is True


def test_tune_out_keeps_the_digest_valid(model_file, tmp_path):
    _, _, defaults = read_model_file(model_file)
    out = with_defaults(model_file, tmp_path / "tuned.safetensors", defaults.replace(return_target=0.4))
    spec, _, tuned = read_model_file(out)
    assert tuned.return_target == 0.4
    assert _native(out).info()["digest_verified"] is True
    assert model_file_digest(out) != model_file_digest(model_file)


def _flip(raw: bytes, position: int, bit: int = 0) -> bytes:
    changed = bytearray(raw)
    changed[position] ^= 1 << bit
    return bytes(changed)


def test_a_flipped_data_bit_is_refused_by_both_readers(model_file, tmp_path):
    raw = model_file.read_bytes()
    size, _ = _header(raw)
    for position in (8 + size, 8 + size + (len(raw) - 8 - size) // 2, len(raw) - 1):
        bad = tmp_path / f"data{position}.safetensors"
        bad.write_bytes(_flip(raw, position, 3))
        with pytest.raises(ValueError, match="content digest mismatch"):
            read_model_file(bad)
        with pytest.raises(ValueError, match="content digest mismatch"):
            _native(bad)


def test_a_changed_metadata_value_is_refused_by_both_readers(model_file, tmp_path):
    # The case: one flipped bit turns default.temperature 0.001 into 0.081 ('0' -> '8').
    raw = model_file.read_bytes()
    size, header = _header(raw)
    text = header.decode()
    key = '"default.temperature":"'
    start = text.index(key) + len(key)
    value = text[start:text.index('"', start)]
    digit = start + next(i for i, c in enumerate(value) if c in "0123456789" and i > 0)
    changed = header[:digit] + bytes([header[digit] ^ 0x08]) + header[digit + 1:]
    assert changed != header and len(changed) == len(header)
    bad = tmp_path / "meta.safetensors"
    bad.write_bytes(raw[:8] + changed + raw[8 + size:])
    with pytest.raises(ValueError, match="content digest mismatch"):
        read_model_file(bad)
    with pytest.raises(ValueError, match="content digest mismatch"):
        _native(bad)


def test_a_file_without_a_digest_loads_with_a_warning(model_file, tmp_path):
    from safetensors.numpy import save_file

    meta, tensors, _ = _read_verified(model_file)
    meta.pop("digest.sha256")
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata=meta)
    with pytest.warns(UserWarning, match="no content digest"):
        read_model_file(old)
    assert _native(old).info()["digest_verified"] is False


def _overflowing(model_file, tmp_path):
    """A file whose finite reward weights are as large as a model file may hold (WEIGHT_LIMIT)
    through a ranker of nine layers, so that the values overflow, with a valid digest. (Larger
    weights, what random bytes in a file's data often are, are refused at load.)"""
    import dataclasses

    from mpdiffuser.config import WEIGHT_LIMIT

    deep = synthetic_model_file(tmp_path / "deep.safetensors", model=dataclasses.replace(SMALL, ranker_layers=8))
    meta, tensors, _ = _read_verified(deep)
    for name in tensors:
        if name.startswith("reward."):
            tensors[name] = (tensors[name] / np.abs(tensors[name]).max() * np.float32(WEIGHT_LIMIT)).astype(np.float32)
    return _write_model_file(tensors, meta, tmp_path / "overflow.safetensors")


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_a_non_finite_plan_raises_instead_of_returning(model_file, tmp_path, backend):
    import mpdiffuser as mpd

    sampler = mpd.Sampler(_overflowing(model_file, tmp_path), backend=backend)
    state = np.zeros(11, np.float32)
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        sampler.plan(state, seed=3)

