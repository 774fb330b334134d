"""The content digest of a model file: SHA-256 over its metadata and tensors, stored in the file's
own metadata as `digest.sha256` and verified by both readers at load (safetensors has no checksum
of its own). csrc/format/model_file.cpp computes the same bytes; docs/design.md, "Model file", states
the layout:

    u64 number of metadata entries, then per entry in byte order of the key (the digest key
    itself left out): str key, str value
    u64 number of tensors, then per tensor in byte order of the name:
        str name, str dtype, u64 rank, u64 per dimension, u64 byte count, the stored bytes

where u64 is little-endian and str is a u64 byte count followed by the UTF-8 bytes. The digest
covers content, not layout: the same tensors and metadata give the same digest whatever order
safetensors writes the header in.

The raw header is parsed here, not by the safetensors package, so that what is verified is
exactly what the C++ reader sees: strict UTF-8, no duplicate keys, string metadata values.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

DIGEST_KEY = "digest.sha256"
MAX_HEADER_BYTES = 1 << 26  # as the C++ reader: 64 MiB of JSON is not a model file


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def _str(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _u64(len(raw)) + raw


def content_digest(metadata: dict[str, str], tensors: list[tuple[str, str, tuple[int, ...], bytes | memoryview]]) -> str:
    """The hex SHA-256 of metadata {key: value} and tensors [(name, dtype, shape, stored bytes)]."""
    h = hashlib.sha256()
    entries = sorted((k, v) for k, v in metadata.items() if k != DIGEST_KEY)
    h.update(_u64(len(entries)))
    for key, value in entries:
        h.update(_str(key) + _str(value))
    h.update(_u64(len(tensors)))
    for name, dtype, shape, data in sorted(tensors, key=lambda t: t[0]):
        h.update(_str(name) + _str(dtype) + _u64(len(shape)) + b"".join(_u64(d) for d in shape) + _u64(len(data)))
        h.update(data)
    return h.hexdigest()


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"the header repeats the key {duplicate!r}")
    return dict(pairs)


def read_header(raw: bytes) -> tuple[dict[str, str], dict[str, dict], memoryview]:
    """(metadata, {tensor name: header entry}, data section) of a safetensors file's bytes, checked
    as the C++ reader checks them. Raises ValueError with the reason."""
    if len(raw) < 8:
        raise ValueError(f"file of {len(raw)} bytes is too short for a safetensors header")
    (size,) = struct.unpack("<Q", raw[:8])
    if size > MAX_HEADER_BYTES or size > len(raw) - 8:
        raise ValueError(f"header length {size} exceeds the file's {len(raw) - 8} remaining bytes (truncated or not "
                         "a safetensors file)")
    try:
        header = json.loads(raw[8:8 + size].decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as exc:
        raise ValueError(f"header is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"header is not valid JSON: {exc.msg} at offset {exc.pos}") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict):
        raise ValueError("__metadata__ is not an object")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise ValueError(f"metadata {key!r} is not a string")
    data = memoryview(raw)[8 + size:]
    for name, entry in header.items():
        if (not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str)
                or not isinstance(entry.get("shape"), list) or not isinstance(entry.get("data_offsets"), list)
                or len(entry["data_offsets"]) != 2
                or not all(type(v) is int and v >= 0 for v in entry["shape"] + entry["data_offsets"])):
            raise ValueError(f"tensor {name!r}: needs 'dtype' (string), 'shape' (non-negative integers) and "
                             "'data_offsets' ([begin, end])")
        begin, end = entry["data_offsets"]
        if begin > end or end > len(data):
            raise ValueError(f"tensor {name!r}: data_offsets [{begin}, {end}] fall outside the {len(data)}-byte data "
                             "section (truncated file?)")
    return metadata, header, data


def file_content_digest(metadata: dict[str, str], entries: dict[str, dict], data: memoryview) -> str:
    """content_digest of a parsed file (read_header's output)."""
    return content_digest(metadata, [(name, e["dtype"], tuple(e["shape"]), data[e["data_offsets"][0]:e["data_offsets"][1]])
                                     for name, e in entries.items()])


def stored_and_actual(path: str | Path) -> tuple[str | None, str]:
    """(the digest the file stores or None, the digest of its content)."""
    metadata, entries, data = read_header(Path(path).read_bytes())
    return metadata.get(DIGEST_KEY), file_content_digest(metadata, entries, data)
