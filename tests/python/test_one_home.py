"""One home per concept in each language, checked against each other: the shared constants and
name lists (python/mpdiffuser/config.py, models/networks.py, export.py against
csrc/core/model_file.h), the sampler options (SamplerOptions against the C struct mpd_options),
and the model file's metadata keys (what export writes against what the C++ reader uses)."""

from __future__ import annotations

import dataclasses

import pytest

from mpdiffuser import _core
from mpdiffuser.config import (ARCHITECTURES, MAX_CANDIDATES, MIN_HALF_RANGE, NORMALIZERS, PREDICTIONS, RETURN_CONDITIONS,
                               STATE_RANGE_LIMIT, TERMINATION_PENALTY, ModelConfig, SamplerOptions)


def test_constants_and_name_lists_agree():
    from mpdiffuser.export import FORMAT_VERSION, WRITERS
    from mpdiffuser.models.networks import EMBED_DIM

    core = _core.constants()
    assert core["model_format_version"] == FORMAT_VERSION
    assert core["embed_dim"] == EMBED_DIM
    assert core["termination_penalty"] == TERMINATION_PENALTY
    assert (core["state_range_limit"], core["min_half_range"]) == (STATE_RANGE_LIMIT, MIN_HALF_RANGE)
    assert core["max_candidates"] == MAX_CANDIDATES
    assert tuple(core["architectures"]) == ARCHITECTURES
    assert tuple(core["predictions"]) == PREDICTIONS
    assert tuple(core["normalizers"]) == NORMALIZERS
    assert tuple(core["writers"]) == WRITERS
    assert tuple(core["return_conditions"]) == RETURN_CONDITIONS


def test_sampler_options_mirror_the_c_struct():
    fields = {f.name for f in dataclasses.fields(SamplerOptions)}
    struct = {name for name in dir(_core.Options()) if not name.startswith("_")}
    # The C struct flags an unset cost limit or budget; Python says None.
    assert struct == fields | {"has_cost_limit", "has_cost_budget"}


@pytest.mark.parametrize("model, with_cost", [
    (ModelConfig(), False),
    (ModelConfig(normalizer="cdf", prediction="epsilon"), True),
    (ModelConfig(architecture="unet", unet_dim=8, unet_mults=(1, 2), unet_embed_dim=8, horizon=8), False),
])
def test_the_reader_uses_every_key_export_writes(tmp_path, model, with_cost):
    from safetensors import safe_open

    from mpdiffuser.bench import synthetic_model_file
    from mpdiffuser.export import PYTHON_ONLY_KEYS

    path = synthetic_model_file(tmp_path / "m.safetensors", model=model, with_cost=with_cost)
    with safe_open(str(path), framework="numpy") as f:
        written = set(f.metadata())
    read = set(_core.model_file_keys(str(path)))
    assert read <= written, f"the reader asks for keys export never writes: {sorted(read - written)}"
    # Every key is checked by both readers (one policy for both, the stricter); PYTHON_ONLY_KEYS
    # are those the native planner checks but does not use.
    assert written == read, f"written but not checked by the C++ reader: {sorted(written - read)}"
    assert PYTHON_ONLY_KEYS <= written
