"""One home per concept in each language, checked against each other: the shared constants and
name lists (python/mpdiffuser/config.py, models/networks.py, export.py against
csrc/format/model_file.h), the sampler options (SamplerOptions against the C struct mpd_options),
and the model file's metadata keys (what export writes against what the C++ reader uses)."""

from __future__ import annotations

import dataclasses

import pytest

from mpdiffuser import _core
import numpy as np

from mpdiffuser.config import (ARCHITECTURES, BACKENDS, MAX_CANDIDATES, MIN_HALF_RANGE, NORMALIZERS, OPTION_SPECS, PREDICTIONS,
                               RETURN_CONDITIONS, STATE_RANGE_LIMIT, TERMINATION_PENALTY, ModelConfig, SamplerOptions)


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
    assert BACKENDS == ("torch", *core["backends"])  # the reference, then the native registry's


def test_sampler_options_mirror_the_c_struct():
    fields = {f.name for f in dataclasses.fields(SamplerOptions)}
    struct = {name for name in dir(_core.Options()) if not name.startswith("_")}
    # The C struct flags an unset cost limit or budget; Python says None.
    assert struct == fields | {"has_cost_limit", "has_cost_budget"}


def test_defaults_agree_across_the_languages():
    """SamplerOptions() and the C table's defaults (a new _core.Options, table_defaults) are one set."""
    native, python = _core.Options(), SamplerOptions()
    for spec in OPTION_SPECS:
        value = getattr(python, spec.name)
        if spec.kind == "optional_real":
            assert value is None and getattr(native, f"has_{spec.name}") == 0, spec.name
        else:
            assert getattr(native, spec.name) == value and type(value) is (int if spec.kind == "count" else float)


def _model_file(tmp_path, **model):
    from mpdiffuser.bench import synthetic_model_file

    return synthetic_model_file(tmp_path / "m.safetensors", model=ModelConfig(horizon=8, num_steps=6, width=32, **model))


def test_ranges_agree_across_the_languages(tmp_path):
    """At each end of every option's range (H and K - 1 for the model-bound ones) and just past it,
    Python's SamplerOptions and the C API's mpd_options_check (through a plan) give the same verdict,
    and when they refuse, the same message."""
    from mpdiffuser.sampling.sampler import Sampler

    sampler = Sampler(_model_file(tmp_path), "cpu", threads=1)
    H, K = sampler.spec.model.horizon, sampler.spec.model.num_steps
    states = np.asarray(sampler.spec.states.low, np.float32)[None]
    checked = unrepresentable = 0
    for spec in OPTION_SPECS:
        high = spec.high_for(K, H)
        step = 1 if spec.kind == "count" else max(abs(high), 1.0) * 1e-6
        for value, valid in ((spec.low, True), (high, True), (spec.low - step, False), (high + step, False)):
            if spec.kind == "count" and value < 0:
                unrepresentable += 1
                continue  # not representable in the C struct's uint32_t
            python_error = native_error = None
            try:
                SamplerOptions(**{spec.name: value}).check_for(K, H)
            except ValueError as exc:
                python_error = str(exc)
            assert (python_error is None) == valid, (spec.name, value, python_error)
            if spec.name == "num_candidates" and value > 1 or spec.name == "cost_limit":
                continue  # the workspace's own limit (N <= 1 here); a model without costs refuses any l
            raw = sampler._native_options(SamplerOptions())
            setattr(raw, spec.name, value)
            if spec.kind == "optional_real":
                setattr(raw, f"has_{spec.name}", 1)
            try:
                sampler._workspace.plan_batch(states, np.zeros(1, np.uint64), raw)
            except ValueError as exc:
                native_error = str(exc)
            assert (native_error is None) == valid, (spec.name, value, native_error)
            if not valid:
                expected = _core.option_range_message(spec.name, value, H, K)
                if spec.bound == "none":  # else SamplerOptions() names the table's range, check_for the model's
                    assert python_error == expected
                if spec.name != "num_candidates":  # the workspace's own limit speaks first
                    assert expected in native_error, (expected, native_error)
            checked += 1
    assert checked + unrepresentable >= 4 * len(OPTION_SPECS) - 8


DECLARATION = {  # how a sampler option would be declared again, per language
    # a class field (not a function parameter, not one whose default is read from SamplerOptions),
    # a flag table's entry
    ".py": r"^\s+{name}\s*:\s*[\w.| \[\]]+(\s*=(?!\s*SamplerOptions\.{name}\b)[^()]*)?$|[\"']{name}[\"']\s*:\s*\(",
    ".h": r"\b(?:uint32_t|double|float|int|unsigned)\s+{name}\s*[;=]", ".hpp": None, ".cpp": None, ".cu": None,
}


def test_each_sampler_option_is_declared_in_one_place(repo_root):
    """Only csrc/include/mpdiffuser/options.def declares a sampler option: no struct field, dataclass
    field or flag table anywhere else names one. The one resolved form every backend reads
    (backend/backend.h PlanRequest) is built from the options in one function, resolve_plan."""
    import re

    places = {spec.name: [] for spec in OPTION_SPECS}
    resolved = repo_root / "csrc" / "backend" / "backend.h"  # PlanRequest: each value converted once, for the kernels
    assert "struct PlanRequest" in resolved.read_text()
    for path in [*(repo_root / "csrc").rglob("*"), *(repo_root / "python" / "mpdiffuser").rglob("*.py")]:
        pattern = DECLARATION.get(path.suffix, False)
        if pattern is False or path == resolved:
            continue
        pattern = pattern or DECLARATION[".h"]
        text = path.read_text()
        for name in places:
            if re.search(pattern.format(name=name), text, re.MULTILINE):
                places[name].append(str(path.relative_to(repo_root)))
    assert {name: where for name, where in places.items() if where} == {}
    table = (repo_root / "csrc" / "include" / "mpdiffuser" / "options.def").read_text()
    assert [spec.name for spec in OPTION_SPECS] == re.findall(r"^MPD_OPTION_\w+\((\w+),", table, re.MULTILINE)


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


def test_the_constraints_file_pins_every_library_a_result_records(repo_root):
    """scripts/constraints.txt (the versions docs/results.md was measured with, checked by
    make_suite.sh) pins every library a result JSON records (experiments.common.RESULT_LIBRARIES)."""
    from mpdiffuser.experiments.common import RESULT_LIBRARIES

    text = (repo_root / "scripts" / "constraints.txt").read_text()
    pins = {line.split("==")[0].strip() for line in text.splitlines() if "==" in line.split("#")[0]}
    assert set(RESULT_LIBRARIES) <= pins
    assert "scripts/constraints.txt" in (repo_root / "scripts" / "make_suite.sh").read_text()
    assert "scripts/constraints.txt" in (repo_root / "docs" / "results.md").read_text()
