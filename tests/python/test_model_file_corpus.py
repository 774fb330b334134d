"""A seeded corpus of corrupted and hostile model files against both readers.

Every file is loaded by the native reader (_core.Model) and by the Python reader as a full load
(bundle_from_model_file, what the torch backend plans with). Required of each: no crash, no hang,
the same verdict from both readers (one policy), every refusal a ValueError with a reason, and
every accepted file's plan either finite or refused (never a NaN plan reported as a success).

Kinds: truncations, bit flips in the header and in the data, changed length fields, duplicate
keys, NaN and infinite weights, hostile metadata values, and huge or inconsistent shapes, offsets
and dtypes. The last three are written with a valid content digest, so that the checks behind the
digest are exercised and not just the digest.
"""

from __future__ import annotations

import json
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from mpdiffuser.bench import synthetic_model_file
from mpdiffuser.config import ModelConfig
from mpdiffuser.digest import DIGEST_KEY, content_digest, read_header

SMALL = ModelConfig(horizon=4, num_steps=3, width=16, layers=2, ranker_width=8, ranker_layers=2)
HOSTILE_VALUES = ["", "nan", "inf", "-inf", "-1", "1e400", " 1", "1 ", "1_0", "0x10", "+1", "99999999999999999999",
                  "1.", ".5", "1e", "abc", "none", "\u00e9", "\x00", "1\x002", "0" * 5000, "-0", "1e-400", "true"]


def _raw(meta: dict, entries: dict, data: bytes, digest: bool = True) -> bytes:
    """A safetensors file from a header that may be anything, with the content digest of what it says
    when `digest` (computed as the readers do, over the entries as given)."""
    meta = dict(meta)
    if digest:
        meta.pop(DIGEST_KEY, None)
        try:
            tensors = [(n, e["dtype"], tuple(e["shape"]), data[e["data_offsets"][0]:e["data_offsets"][1]])
                       for n, e in entries.items()]
            meta[DIGEST_KEY] = content_digest(meta, tensors)
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError, struct.error, UnicodeEncodeError):
            pass  # a header the digest cannot describe: left without one
    header = json.dumps({"__metadata__": meta, **entries}, ensure_ascii=False).encode("utf-8", "surrogatepass")
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def _corpus(base: bytes, rng: np.random.Generator) -> list[tuple[str, bytes]]:
    meta, entries, data = read_header(base)
    data = bytes(data)
    (size,) = struct.unpack("<Q", base[:8])
    files = []
    for _ in range(120):  # truncations
        files.append(("truncated", base[:int(rng.integers(0, len(base)))]))
    for _ in range(200):  # header bit flips
        raw = bytearray(base)
        raw[8 + int(rng.integers(0, size))] ^= 1 << int(rng.integers(0, 8))
        files.append(("header bit", bytes(raw)))
    for _ in range(200):  # data bit flips
        raw = bytearray(base)
        raw[8 + size + int(rng.integers(0, len(base) - 8 - size))] ^= 1 << int(rng.integers(0, 8))
        files.append(("data bit", bytes(raw)))
    for _ in range(60):  # length fields: the header's own and the tensors' offsets
        raw = bytearray(base)
        raw[int(rng.integers(0, 8))] = int(rng.integers(0, 256))
        files.append(("header length", bytes(raw)))
    for _ in range(40):
        name = sorted(entries)[int(rng.integers(0, len(entries)))]
        e = {**entries[name], "data_offsets": [int(v) + int(rng.integers(-8, 9)) * 4 for v in entries[name]["data_offsets"]]}
        files.append(("offsets", _raw(meta, entries | {name: e}, data)))
    text = base[8:8 + size].decode()
    for _ in range(20):  # duplicate keys: a metadata entry or a tensor entry repeated
        key = sorted(meta)[int(rng.integers(0, len(meta)))]
        dup = text.replace('"__metadata__":{', '"__metadata__":{' + json.dumps(key) + ':"1",', 1)
        files.append(("duplicate key", struct.pack("<Q", len(dup)) + dup.encode() + data))
    for _ in range(60):  # NaN and infinite weights, digest valid
        raw = bytearray(data)
        name = sorted(entries)[int(rng.integers(0, len(entries)))]
        begin, end = entries[name]["data_offsets"]
        position = begin + 4 * int(rng.integers(0, (end - begin) // 4))
        raw[position:position + 4] = struct.pack("<f", [np.nan, np.inf, -np.inf][int(rng.integers(0, 3))])
        files.append(("non-finite weight", _raw(meta, entries, bytes(raw))))
    for _ in range(40):  # finite weights so large that a plan would overflow, digest valid: refused at load
        weights = np.frombuffer(data, dtype="<f4").copy()
        net = ("reward.", "planner.", "dynamics.", "cost.")[int(rng.integers(0, 4))]
        for name in (n for n in entries if n.startswith(net)):  # every layer: the scales multiply
            begin, end = entries[name]["data_offsets"]
            weights[begin // 4:end // 4] *= np.float32(10.0 ** int(rng.integers(12, 38)))
        files.append(("huge weights", _raw(meta, entries, weights.tobytes())))
    keys = sorted(k for k in meta if k != DIGEST_KEY)
    for _ in range(300):  # hostile metadata values, digest valid
        key = keys[int(rng.integers(0, len(keys)))]
        value = HOSTILE_VALUES[int(rng.integers(0, len(HOSTILE_VALUES)))]
        files.append((f"metadata {key}", _raw(meta | {key: value}, entries, data)))
    for _ in range(30):  # metadata that is not a string, or not UTF-8 (the env_id)
        key = keys[int(rng.integers(0, len(keys)))]
        files.append((f"metadata {key} not a string", _raw(meta | {key: int(rng.integers(0, 9))}, entries, data)))
    for _ in range(20):
        raw_text = text.replace('"env_id":"', '"env_id":"\udcff', 1).encode("utf-8", "surrogateescape")
        files.append(("env_id not UTF-8", struct.pack("<Q", len(raw_text)) + raw_text + data))
    names = sorted(entries)
    for _ in range(80):  # shapes and dtypes, digest valid
        name = names[int(rng.integers(0, len(names)))]
        e = dict(entries[name])
        choice = int(rng.integers(0, 5))
        if choice == 0:
            e["shape"] = [int(2 ** rng.integers(20, 62))] + list(e["shape"][1:])
        elif choice == 1:
            e["shape"] = list(e["shape"])[::-1] + [1]
        elif choice == 2:
            e["dtype"] = ["F16", "F64", "I32", "F32\u0000x", "f32", ""][int(rng.integers(0, 6))]
        elif choice == 3:
            e["shape"] = [-1] + list(e["shape"][1:])
        else:
            e = {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}
            name = "extra"
        files.append(("shape/dtype", _raw(meta, entries | {name: e}, data)))
    return files


def _verdict(load) -> tuple[bool, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a file without a digest warns; the verdict is what counts
            load()
    except ValueError as exc:
        return False, str(exc)
    return True, ""


def test_a_corrupted_model_file_corpus(tmp_path):
    from mpdiffuser import _core
    from mpdiffuser.export import bundle_from_model_file
    from mpdiffuser.sampling.sampler import Sampler

    base_path = synthetic_model_file(tmp_path / "base.safetensors", model=SMALL, with_cost=True)
    base = base_path.read_bytes()
    files = _corpus(base, np.random.default_rng(20261204))
    assert len(files) >= 1000
    counts = {"files": len(files), "refused": 0, "accepted": 0, "plans refused": 0}
    disagreements, no_reason, slow = [], [], []
    state = np.zeros(11, np.float32)
    path = tmp_path / "case.safetensors"
    for i, (kind, raw) in enumerate(files):
        path.write_bytes(raw)
        start = time.perf_counter()
        native, native_reason = _verdict(lambda: _core.Model(str(path)))
        python, python_reason = _verdict(lambda: bundle_from_model_file(path))
        if time.perf_counter() - start > 2.0:
            slow.append((i, kind))
        if native != python:
            disagreements.append((i, kind, native_reason or "accepted", python_reason or "accepted"))
        for ok, reason in ((native, native_reason), (python, python_reason)):
            if not ok and len(reason.strip()) < 10:
                no_reason.append((i, kind, reason))
        if kind == "huge weights":
            assert not native and "lies outside +-1e+06: a corrupt file" in native_reason, (i, native_reason)
            assert not python and "lies outside +-1e+06: a corrupt file" in python_reason, (i, python_reason)
        if not (native and python):
            counts["refused"] += 1
            continue
        counts["accepted"] += 1
        for backend in ("cpu", "torch"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # files without a digest
                    plan = Sampler(path, backend).plan(state, seed=i)
            except FloatingPointError:
                counts["plans refused"] += 1
                continue
            except ValueError:  # options the file stores that this state cannot use
                continue
            assert np.isfinite(plan.actions).all() and np.isfinite(plan.values).all(), (i, kind, backend)
    print(counts)
    assert not disagreements, f"{len(disagreements)} verdicts differ:\n" + "\n".join(map(str, disagreements[:20]))
    assert not no_reason, no_reason[:5]
    assert not slow, slow[:5]
    assert counts["refused"] >= 900  # nearly every corruption is caught (the rest are harmless, e.g. a flipped space)


def test_a_version_1_file_with_version_2_keys_is_refused_by_both_readers(tmp_path):
    """The two readers once disagreed on such a file (the native one planned it as epsilon-prediction,
    the Python one as its 'prediction' key said): now each of version 2's keys in a file that says
    version 1 is refused by both, with the same reason; on version 2 and 3 the keys are required."""
    from mpdiffuser import _core
    from mpdiffuser.export import VERSION_2_KEYS, bundle_from_model_file

    base = synthetic_model_file(tmp_path / "base.safetensors", model=SMALL).read_bytes()
    meta, entries, data = read_header(base)
    path = tmp_path / "case.safetensors"
    v1 = {k: v for k, v in meta.items() if k not in VERSION_2_KEYS and not k.startswith("default.")}
    v1 |= {"format_version": "1"} | {k: v for k, v in meta.items() if k in ("default.num_candidates",
                                                                             "default.guidance",
                                                                             "default.return_target")}
    path.write_bytes(_raw(v1, entries, bytes(data)))
    assert _verdict(lambda: _core.Model(str(path)))[0] == _verdict(lambda: bundle_from_model_file(path))[0]
    for key in VERSION_2_KEYS:
        path.write_bytes(_raw(v1 | {key: meta.get(key, "1")}, entries, bytes(data)))
        native, python = _verdict(lambda: _core.Model(str(path))), _verdict(lambda: bundle_from_model_file(path))
        assert not native[0] and not python[0], key
        for reason in (native[1], python[1]):
            assert f"metadata '{key}' was added in format version 2, but the file says version 1" in reason


@pytest.mark.parametrize("tensor, index, value, reason", [
    ("normalizer.state_low", 2, 5e3, "tensor 'normalizer.state_low'[2] exceeds 'normalizer.state_high'[2]"),
    ("normalizer.action_low", 0, -3e38, "tensor 'normalizer.action_low'[0] lies outside +-1e+09"),
    ("normalizer.state_high", 1, 3e38, "tensor 'normalizer.state_high'[1] lies outside +-1e+09"),
    ("normalizer.state_high", 4, 1.5e9, "tensor 'normalizer.state_high'[4] lies outside +-1e+09"),
    ("planner.0.weight", 7, 1e38, "tensor 'planner.0.weight'[7] lies outside +-1e+06"),
    ("reward.1.bias", 3, -2e6, "tensor 'reward.1.bias'[3] lies outside +-1e+06"),
    ("planner.0.weight", 7, 1e6, None),  # at the limit: accepted
    ("normalizer.state_high", 4, 1e9, None),
    ("normalizer.state_low", 2, "high", None),  # low == high: a dimension the data never varied
])
def test_corrupt_normalizers_and_weights_are_refused_by_both_readers(tmp_path, tensor, index, value, reason):
    from mpdiffuser import _core
    from mpdiffuser.export import bundle_from_model_file
    from mpdiffuser.sampling.sampler import Sampler

    base = synthetic_model_file(tmp_path / "base.safetensors", model=SMALL).read_bytes()
    meta, entries, data = read_header(base)
    values = np.frombuffer(bytes(data), dtype="<f4").copy()
    begin = entries[tensor]["data_offsets"][0] // 4
    if value == "high":
        value = values[entries["normalizer.state_high"]["data_offsets"][0] // 4 + index]
    values[begin + index] = np.float32(value)
    path = tmp_path / "case.safetensors"
    path.write_bytes(_raw(meta, entries, values.tobytes()))
    native, python = _verdict(lambda: _core.Model(str(path))), _verdict(lambda: bundle_from_model_file(path))
    if reason is None:
        assert native[0] and python[0], (native, python)
        for backend in ("cpu", "torch"):
            assert np.isfinite(Sampler(path, backend).plan(np.zeros(11, np.float32), 0).actions).all()
    else:
        assert not native[0] and not python[0]
        assert reason in native[1] and reason in python[1], (native[1], python[1])
