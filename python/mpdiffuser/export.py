"""Trained models -> one .safetensors model file that the C++ core loads (design section 2).

The file holds every weight (float32, or BF16 for weight matrices exported with weights="bf16"),
named ``<net>.<l>.weight`` ([out, in]) and ``<net>.<l>.bias``
for ``<net>`` in planner, dynamics, reward and (constrained tasks) cost, the normalizer as
``normalizer.{state,action}_{low,high}`` tensors (float32, so the native core reads them exactly;
for the CDF normalizer also ``normalizer.{state,action}_quantiles`` [dim, Q], whose first and last
columns are low and high),
and string metadata:

    format = "mpdiffuser.model", format_version = "5", schedule = "cosine", env_id,
    state_dim, action_dim, cond_dim, horizon, num_steps, width, layers, ranker_width,
    ranker_layers, reward_outputs, has_cost ("0"/"1"), cost_scale, return_low, return_high,
    return_discount, condition_dropout,
    prediction ("epsilon"/"sample"), normalizer ("minmax"/"cdf"), normalizer_quantiles (Q, cdf only),
    return_condition, termination_penalty,
    fixed_state_dims ("" or increasing state dimensions that every plan keeps at x_0's value:
    a goal-conditioned robot's desired goal; version 4),
    default.<option> for every SamplerOptions field ("none" for an unset cost limit or budget;
    fast_numerics from version 5),
    digest.sha256 (the content digest of everything else, mpdiffuser.digest; both readers verify it).

Version 1 files (before prediction, normalizer, return condition, temperature and warm start)
still load: they are epsilon-prediction, min-max models, and their missing sampler defaults are
temperature 1 and a cold start, which is how they were sampled. Every option newer than a file
takes its `legacy` value from the option table (csrc/include/mpdiffuser/options.def): version 2
files (before max_plan_ms) plan with no deadline; files before version 4 fix no state dimension;
files before version 5 plan in the exact numeric mode (fast_numerics 0).

Numbers are written with repr(), which round-trips float64 exactly.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from mpdiffuser.config import (ARCHITECTURES, LEGACY_MODEL_FIELDS, MODEL_NAMES, NORMALIZER_LIMIT, NORMALIZERS,
                               OPTION_SPECS, PREDICTIONS, RETURN_CONDITIONS, WEIGHT_FORMATS, WEIGHT_LIMIT, ModelConfig,
                               SamplerOptions)
from mpdiffuser.digest import DIGEST_KEY, content_digest, file_content_digest, read_header, stored_and_actual

FORMAT = "mpdiffuser.model"
FORMAT_VERSION = 5
READABLE_VERSIONS = tuple(range(1, FORMAT_VERSION + 1))
# The model keys format version 2 added (csrc/format/model_file.h: kVersion2Keys; a test holds both readers to them).
VERSION_2_KEYS = ("prediction", "normalizer", "normalizer_quantiles", "return_condition", "termination_penalty")
# Metadata only Python reads: the condition's scale and the training settings, which rebuild the
# torch bundle (bundle_from_model_file); the native core plans in normalized condition units.
# tests/python/test_one_home.py checks that every other key is read by the C++ reader.
PYTHON_ONLY_KEYS = frozenset({"return_low", "return_high", "return_discount", "condition_dropout", "return_condition",
                              "termination_penalty", "written_by"})
# Which command wrote a model file (metadata written_by): eval --bundle re-exports over its own
# automatic export only, never over a file that `export`, `tune --out` or `train --export-at` wrote.
WRITERS = ("export", "eval", "tune", "train")


def _metadata(spec, options: SamplerOptions) -> dict[str, str]:
    m = spec.model
    meta = {
        "format": FORMAT, "format_version": str(FORMAT_VERSION), "schedule": "cosine",
        "env_id": spec.env_id or "",
        "state_dim": str(spec.state_dim), "action_dim": str(spec.action_dim),
        "cond_dim": str(spec.conditions.dim), "horizon": str(m.horizon), "num_steps": str(m.num_steps),
        "width": str(m.width), "layers": str(m.layers), "ranker_width": str(m.ranker_width),
        "ranker_layers": str(m.ranker_layers), "reward_outputs": str(2 if spec.reward_has_termination else 1),
        "has_cost": "1" if spec.with_cost else "0", "cost_scale": repr(float(spec.conditions.cost_scale)),
        "return_low": repr(float(spec.conditions.return_low)), "return_high": repr(float(spec.conditions.return_high)),
        "return_discount": repr(float(spec.conditions.return_discount)),
        "condition_dropout": repr(float(m.condition_dropout)),
        "architecture": m.architecture,
        **({"unet_dim": str(m.unet_dim), "unet_mults": ",".join(map(str, m.unet_mults)),
            "unet_embed_dim": str(m.unet_embed_dim)} if m.architecture == "unet" else {}),
        "prediction": m.prediction, "normalizer": m.normalizer, "return_condition": m.return_condition,
        "termination_penalty": repr(float(spec.conditions.termination_penalty)),
        "fixed_state_dims": ",".join(map(str, spec.fixed_state_dims)),
    }
    if m.normalizer == "cdf":
        meta["normalizer_quantiles"] = str(spec.states.quantiles.shape[1])
    return meta | _default_entries(options)


def _default_entries(options: SamplerOptions) -> dict[str, str]:
    """The metadata entries of the sampler defaults: default.<field> = value ("none" for None)."""
    entries = {}
    for spec in OPTION_SPECS:
        value = getattr(options, spec.name)
        entries[f"default.{spec.name}"] = "none" if value is None else (
            str(int(value)) if spec.kind == "count" else repr(float(value)))
    return entries


def with_defaults(path: str | Path, out_path: str | Path, options: SamplerOptions, written_by: str = "tune") -> Path:
    """A copy of model file `path` at `out_path` (which may be `path`) whose stored sampler defaults
    are `options`; the weights and every other entry are unchanged (written_by becomes
    `written_by`). Returns out_path."""
    meta, tensors, bf16 = _read_verified(Path(path))
    spec, _, _ = _parse_model_file(Path(path), meta, tensors)  # a file this version cannot read is an error here
    _check_defaults(spec, options)
    return _write_model_file(tensors, meta | _default_entries(options) | {"written_by": written_by}, out_path, bf16)


def file_tensor_names(net: str, state_dict: dict, architecture: str = "mlp") -> dict[str, str]:
    """{module parameter name: model-file tensor name} of network `net`. mlp (and the ranker of
    every family): "<mlp>.net.<l>.weight" -> "<net>.<l>.weight", the layer index and kind. unet
    planner and dynamics: the module path behind the net, "unet.down.0.0.first.conv.weight" ->
    "<net>.down.0.0.first.conv.weight" (the C++ reader lists the same names, core/unet_layout.cpp).
    Two parameters that would share a file name are an error, never a silent overwrite."""
    unet = architecture == "unet" and net in ("planner", "dynamics")
    names: dict[str, str] = {}
    owner: dict[str, str] = {}
    for name in state_dict:
        if unet:
            key = f"{net}.{name.removeprefix('unet.')}"
        else:
            layer, kind = name.split(".")[-2:]
            key = f"{net}.{layer}.{kind}"
        if key in owner:
            raise ValueError(f"{net}: parameters '{owner[key]}' and '{name}' would both be written as '{key}'; "
                             "this network's layout has no model-file naming yet")
        owner[key] = name
        names[name] = key
    return names


def file_tensors(net: str, state_dict: dict, architecture: str = "mlp") -> dict:
    """{model-file tensor name: tensor} of network `net` (see file_tensor_names)."""
    return {key: state_dict[name] for name, key in file_tensor_names(net, state_dict, architecture).items()}


def export_model(bundle_dir: str | Path, out_path: str | Path, options: SamplerOptions | None = None,
                 written_by: str = "export", weights: str | None = None) -> Path:
    """Write the trained models of `bundle_dir` to `out_path` (.safetensors); returns the path.

    options: the sampler defaults stored in the file (default: the bundle's, else SamplerOptions()).
    written_by: the command that writes it (WRITERS), stored in the file.
    weights: "float32", or "bf16": every network's weight matrices and kernels rounded to bfloat16
    (nearest even) and stored so (config.WEIGHT_FORMATS): half the file, and on the CPU backend
    half the bytes streamed per plan step; every backend plans with exactly the rounded values.
    None: bf16 for a large robot's U-Net (ModelConfig.large_robot_model), else float32.
    """
    import torch

    from mpdiffuser.models.bundle import ModelBundle

    if weights is not None and weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    bundle = ModelBundle.load(bundle_dir)
    if weights is None:
        large = bundle.spec.model.large_robot_model(bundle.spec.state_dim, bundle.spec.action_dim)
        weights = "bf16" if large else "float32"
    options = options or bundle.spec.sampler_defaults or SamplerOptions()
    spec = bundle.spec
    _check_defaults(spec, options)
    tensors: dict[str, np.ndarray] = {}
    bf16: set[str] = set()
    for net in MODEL_NAMES:
        module = getattr(bundle, net)
        if module is None:
            continue
        for key, value in file_tensors(net, module.state_dict(), spec.model.architecture).items():
            value = value.detach().cpu().to(torch.float32)
            if weights == "bf16" and value.dim() >= 2:
                value = value.to(torch.bfloat16).to(torch.float32)
                bf16.add(key)
            tensors[key] = np.ascontiguousarray(value.numpy(), dtype=np.float32)
    tensors["normalizer.state_low"] = spec.states.low.astype(np.float32)
    tensors["normalizer.state_high"] = spec.states.high.astype(np.float32)
    tensors["normalizer.action_low"] = spec.actions.low.astype(np.float32)
    tensors["normalizer.action_high"] = spec.actions.high.astype(np.float32)
    if spec.model.normalizer == "cdf":
        tensors["normalizer.state_quantiles"] = np.ascontiguousarray(spec.states.quantiles, dtype=np.float32)
        tensors["normalizer.action_quantiles"] = np.ascontiguousarray(spec.actions.quantiles, dtype=np.float32)
    return _write_model_file(tensors, _metadata(spec, options) | {"written_by": written_by}, out_path, bf16)


def model_file_for_bundle(bundle_dir: str | Path) -> tuple[Path, str]:
    """(BUNDLE/model.safetensors, what was done) for planning a bundle natively: exported when
    missing, re-exported when an earlier automatic export is older than the bundle's weights, used
    as it is when newer than them. A file another command wrote (export, tune --out) is never
    overwritten: older than the weights, it is refused with what to do."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / "model.safetensors"
    sources = [bundle_dir / "bundle.json", *bundle_dir.glob("*.pt")]
    weights_time = max(p.stat().st_mtime_ns for p in sources if p.exists())
    if not path.exists():
        export_model(bundle_dir, path, written_by="eval")
        return path, f"exported {bundle_dir} to {path} for the native backend"
    try:
        writer = read_header(path.read_bytes())[0].get("written_by")
    except (OSError, ValueError):
        writer = None
    who = f"written by {writer}" if writer else "of unknown origin"
    if path.stat().st_mtime_ns >= weights_time:
        return path, f"using {path} ({who}, newer than the bundle's weights)"
    if writer == "eval":
        export_model(bundle_dir, path, written_by="eval")
        return path, f"re-exported {bundle_dir} to {path}: the bundle's weights changed since its last export"
    raise ValueError(f"{path} ({who}) is older than the bundle's weights and is not overwritten: export it again "
                     f"(mpdiffuser export --bundle {bundle_dir} --out {path}) or plan it as it is with --model-file")


def _check_defaults(spec, options: SamplerOptions) -> None:
    """Sampler defaults a model file of `spec` may store: a cost limit only for cost models, within
    the condition's rules; schedule options that fit its K and H."""
    if options.cost_limit is not None:
        if not spec.with_cost:
            raise ValueError("options.cost_limit is set, but the models were trained without costs")
        spec.conditions.condition(options.return_target, options.cost_limit)  # validates
    options.check_for(spec.model.num_steps, spec.model.horizon)


def _write_model_file(tensors: dict, metadata: dict[str, str], out_path: str | Path,
                      bf16: set[str] | frozenset[str] = frozenset()) -> Path:
    """Write a .safetensors model file atomically (a temporary file, then a rename), with the
    content digest of its metadata and tensors (mpdiffuser.digest) in the metadata. Every writer of
    model files goes through here, so every file written carries a valid digest. tensors: float32
    arrays; those named in bf16 (network weights, never normalizer tables) must hold bfloat16
    values and are stored as BF16."""
    import torch
    from safetensors.torch import save_file

    tensors = {name: np.ascontiguousarray(value) for name, value in tensors.items()}
    for name, value in tensors.items():
        if value.dtype != np.float32:
            raise ValueError(f"tensor '{name}' is {value.dtype}; model files hold float32 (or bfloat16 values) only")
    for name in bf16:
        if name.startswith("normalizer."):
            raise ValueError(f"tensor '{name}': normalizer tables are stored as float32 only")
        if (tensors[name].view(np.uint32) & 0xFFFF).any():
            raise ValueError(f"tensor '{name}' holds values that are not bfloat16 values; round it first")
    if metadata.get("written_by", "export") not in WRITERS:
        raise ValueError(f"written_by must be one of {', '.join(WRITERS)}, got {metadata['written_by']!r}")

    def stored(name: str, value: np.ndarray) -> bytes:
        if name in bf16:
            return (value.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
        return value.astype("<f4").tobytes()

    metadata = {k: v for k, v in metadata.items() if k != DIGEST_KEY}
    metadata[DIGEST_KEY] = content_digest(metadata, [(name, "BF16" if name in bf16 else "F32", value.shape,
                                                      stored(name, value)) for name, value in tensors.items()])
    out = {name: torch.from_numpy(value.copy()).to(torch.bfloat16 if name in bf16 else torch.float32)
           for name, value in tensors.items()}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    save_file(out, str(tmp), metadata=metadata)
    tmp.replace(out_path)
    return out_path


# Numbers as the writers spell them (str(int), repr(float) of a finite value); the C++ reader
# (core/model_file.cpp plain_number) accepts exactly these, not " 1", "1_0", "inf" or "nan".
# JSON's number grammar (no leading zeros), at most 64 characters.
_PLAIN_NUMBER = {int: re.compile(r"-?(0|[1-9][0-9]{0,62})"),
                 float: re.compile(r"(?=.{1,64}$)-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")}


# The range of every numeric metadata key, as core/model_file.cpp read_config checks it (the
# corpus test tests/python/test_model_file_corpus.py holds the two readers to one verdict).
METADATA_RANGES = {
    "format_version": (0, 1 << 30), "state_dim": (1, 4096), "action_dim": (1, 4096), "cond_dim": (1, 2),
    "horizon": (1, 1024), "num_steps": (1, 10000), "width": (1, 65536), "layers": (1, 64),
    "ranker_width": (1, 65536), "ranker_layers": (1, 64), "reward_outputs": (1, 2), "cost_scale": (0.0, 1e30),
    "unet_dim": (2, 4096), "unet_embed_dim": (2, 4096), "normalizer_quantiles": (2, 1 << 16),
    "return_low": (-1e30, 1e30), "return_high": (-1e30, 1e30), "return_discount": (1e-9, 1.0),
    "condition_dropout": (0.0, 0.999999), "termination_penalty": (0.0, 1e30),
    **{f"default.{spec.name}": (spec.low, spec.high) for spec in OPTION_SPECS},  # H, K - 1 where bound
}


def _number(meta: dict[str, str], key: str, kind=float, low: float | None = None, high: float | None = None):
    """meta[key] as `kind`, spelled as the writers spell it and within [low, high] (default: the
    key's METADATA_RANGES entry)."""
    low = METADATA_RANGES.get(key, (-1e30, 1e30))[0] if low is None else low
    high = METADATA_RANGES.get(key, (-1e30, 1e30))[1] if high is None else high
    if key not in meta:
        raise ValueError(f"model file metadata lacks '{key}'")
    text = meta[key]
    if not _PLAIN_NUMBER[kind].fullmatch(text) or not low <= kind(text) <= high:
        raise ValueError(f"model file metadata '{key}' must be {'an integer' if kind is int else 'a number'} in "
                         f"[{low}, {high}], got {text[:80]!r}")
    return kind(text)


def _fixed_dims(meta: dict[str, str], version: int, state_dim: int, path: Path) -> tuple[int, ...]:
    """fixed_state_dims, the native reader's rules: required from format 4 ("" or increasing
    comma-separated state dimensions), refused before it."""
    if version < 4:
        if "fixed_state_dims" in meta:
            raise ValueError(f"{path}: metadata 'fixed_state_dims' was added in format version 4, but the file says "
                             f"version {version}: its version or its metadata was edited")
        return ()
    if "fixed_state_dims" not in meta:
        raise ValueError(f"{path}: metadata key 'fixed_state_dims' is missing")
    text = meta["fixed_state_dims"]
    items = text.split(",") if text else []
    dims = [int(item) if re.fullmatch(r"[0-9]{1,18}", item) else -1 for item in items]
    if any(d < 0 or d >= state_dim for d in dims) or any(b <= a for a, b in zip(dims, dims[1:])):
        raise ValueError(f"{path}: metadata 'fixed_state_dims' is {text[:80]!r}, expected increasing comma-separated "
                         f"state dimensions in [0, {state_dim})")
    return tuple(dims)


def _unet_sizes(meta: dict[str, str], path: Path) -> dict:
    """The unet family's ModelConfig fields of a file (none for mlp)."""
    if meta["architecture"] != "unet":
        return {}
    try:
        mults = tuple(int(m) for m in meta.get("unet_mults", "").split(","))
    except ValueError:
        raise ValueError(f"{path}: metadata 'unet_mults' = {meta.get('unet_mults')!r} is not comma-separated "
                         "integers") from None
    return {"architecture": "unet", "unet_dim": _number(meta, "unet_dim", int), "unet_mults": mults,
            "unet_embed_dim": _number(meta, "unet_embed_dim", int)}


def read_model_file(path: str | Path):
    """(BundleSpec, tensors by name, SamplerOptions defaults) of a model file.

    Raises FileNotFoundError, or ValueError naming what is wrong with the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    meta, tensors, _ = _read_verified(path)
    return _parse_model_file(path, meta, tensors)


def _parse_model_file(path: Path, meta: dict[str, str], tensors: dict[str, np.ndarray]):
    """read_model_file's checks and result for a file whose container and digest were verified."""
    from mpdiffuser.data.normalizer import CdfNormalizer, MinMaxNormalizer
    from mpdiffuser.data.windows import ConditionScale
    from mpdiffuser.models.bundle import BundleSpec

    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an mpdiffuser model file (format {meta.get('format')!r})")
    for name, value in tensors.items():  # the native reader refuses these too, with the same reasons
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"{path}: tensor '{name}' holds NaN or infinity")
        limit = NORMALIZER_LIMIT if name.startswith("normalizer.") else WEIGHT_LIMIT
        far = np.flatnonzero(np.abs(value.astype(np.float64)).ravel() > limit) if value.dtype.kind == "f" else []
        if len(far):
            raise ValueError(f"{path}: tensor '{name}'[{far[0]}] lies outside +-{limit:g}: a corrupt file")
    if meta.get("schedule") != "cosine":
        raise ValueError(f"{path}: metadata 'schedule' is {meta.get('schedule', '')[:80]!r}, only 'cosine' is supported")
    version = _number(meta, "format_version", int)
    if version not in READABLE_VERSIONS:
        raise ValueError(f"{path} has model format version {version}; this mpdiffuser reads versions "
                         f"{', '.join(map(str, READABLE_VERSIONS))}")
    if version == 1:
        # One rule in both readers: a version-1 file carries none of the keys version 2 added (the
        # native reader would ignore them, this one would use them); one that does contradicts its
        # version and is refused.
        added = [key for key in VERSION_2_KEYS if key in meta]
        if added:
            raise ValueError(f"{path}: metadata '{added[0]}' was added in format version 2, but the file says version "
                             "1: its version or its metadata was edited")
        meta = {**LEGACY_MODEL_FIELDS, "termination_penalty": "0.0", **meta}
    # Options newer than the file take the values its plans were made with; files before the
    # architecture key are all mlp. A new dict: the caller's metadata stays as read.
    legacy = {f"default.{option.name}": meta.get(f"default.{option.legacy}", option.legacy)
              for option in OPTION_SPECS if option.since > version}
    meta = {"architecture": "mlp", **meta, **legacy}
    if meta.get("written_by", "export") not in WRITERS:
        raise ValueError(f"{path}: metadata 'written_by' = {meta['written_by'][:80]!r} is not one of {', '.join(WRITERS)}")
    for key, choices in (("architecture", ARCHITECTURES), ("prediction", PREDICTIONS),
                         ("normalizer", NORMALIZERS), ("return_condition", RETURN_CONDITIONS)):
        if meta.get(key) not in choices:
            raise ValueError(f"{path}: metadata '{key}' = {meta.get(key)!r} is not one of {', '.join(choices)}")
    model = ModelConfig(
        horizon=_number(meta, "horizon", int), num_steps=_number(meta, "num_steps", int),
        width=_number(meta, "width", int), layers=_number(meta, "layers", int),
        ranker_width=_number(meta, "ranker_width", int), ranker_layers=_number(meta, "ranker_layers", int),
        return_discount=_number(meta, "return_discount"), cost_scale=_number(meta, "cost_scale"),
        condition_dropout=_number(meta, "condition_dropout"), prediction=meta["prediction"],
        normalizer=meta["normalizer"], return_condition=meta["return_condition"], **_unet_sizes(meta, path))
    if meta.get("has_cost") not in ("0", "1"):
        raise ValueError(f"{path}: metadata 'has_cost' must be 0 or 1, got {meta.get('has_cost')!r}")
    with_cost = meta.get("has_cost") == "1"
    if _number(meta, "cond_dim", int) != (2 if with_cost else 1):
        raise ValueError(f"{path}: metadata 'cond_dim' is {meta['cond_dim']} but 'has_cost' is {meta['has_cost']}")
    conditions = ConditionScale(_number(meta, "return_low"), _number(meta, "return_high"),
                                model.return_discount, model.cost_scale, with_cost,
                                _number(meta, "termination_penalty"))
    dims = {"state": _number(meta, "state_dim", int), "action": _number(meta, "action_dim", int)}
    for key in ("normalizer.state_low", "normalizer.state_high", "normalizer.action_low", "normalizer.action_high"):
        if key not in tensors:
            raise ValueError(f"{path} lacks tensor '{key}'")
        expected = (dims[key.split(".")[1].split("_")[0]],)
        if tensors[key].shape != expected:
            raise ValueError(f"{path}: tensor '{key}' has shape {list(tensors[key].shape)}, expected {list(expected)}")
    for part in ("state", "action"):
        low, high = tensors[f"normalizer.{part}_low"], tensors[f"normalizer.{part}_high"]
        if (low > high).any():
            i = int(np.flatnonzero(low > high)[0])
            raise ValueError(f"{path}: tensor 'normalizer.{part}_low'[{i}] exceeds 'normalizer.{part}_high'[{i}]: "
                             "a corrupt normalizer")
    if model.normalizer == "cdf":
        for key in ("normalizer.state_quantiles", "normalizer.action_quantiles"):
            if key not in tensors:
                raise ValueError(f"{path} lacks tensor '{key}'")
        quantiles = _number(meta, "normalizer_quantiles", int)
        for key in ("normalizer.state_quantiles", "normalizer.action_quantiles"):
            if tensors[key].ndim != 2 or tensors[key].shape[1] != quantiles:
                raise ValueError(f"{path}: tensor '{key}' has shape {tensors[key].shape}, metadata "
                                 f"'normalizer_quantiles' says {quantiles} columns")
        try:
            states = CdfNormalizer(tensors["normalizer.state_quantiles"])
            actions = CdfNormalizer(tensors["normalizer.action_quantiles"])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    else:
        states = MinMaxNormalizer(tensors["normalizer.state_low"], tensors["normalizer.state_high"])
        actions = MinMaxNormalizer(tensors["normalizer.action_low"], tensors["normalizer.action_high"])
    spec = BundleSpec(meta.get("env_id") or None, _number(meta, "state_dim", int), _number(meta, "action_dim", int),
                      model, states, actions, conditions, _number(meta, "reward_outputs", int) == 2,
                      fixed_state_dims=_fixed_dims(meta, version, dims["state"], path))
    defaults = {}
    for option in OPTION_SPECS:
        key = f"default.{option.name}"
        if key not in meta:
            raise ValueError(f"{path} lacks metadata '{key}'")
        optional = option.kind == "optional_real"  # "none" when unset
        defaults[option.name] = None if optional and meta[key] == "none" else _number(
            meta, key, int if option.kind == "count" else float, high=option.high_for(model.num_steps, model.horizon))
    try:
        options = SamplerOptions(**defaults)
        options.check_for(model.num_steps, model.horizon)
        if options.cost_limit is not None:  # the native reader's rule: at load, not at the first plan
            spec.conditions.condition(options.return_target, options.cost_limit)
    except ValueError as exc:
        raise ValueError(f"{path}: stored sampler defaults are invalid: {exc}") from None
    return dataclasses.replace(spec, sampler_defaults=options), tensors, options


def _read_verified(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray], set[str]]:
    """(metadata, float32 tensors, the names of those stored as BF16) of a model file whose
    container and content digest check out, as the C++ reader checks them (core/model_file.cpp).
    BF16 tensors are widened to float32 exactly. A file without a digest (written before digests)
    loads with a warning; a digest that does not match is an error."""
    import warnings

    try:
        raw = path.read_bytes()
        meta, entries, data = read_header(raw)
    except OSError as exc:
        raise ValueError(f"{path} is not a readable file: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    spans = sorted(tuple(e["data_offsets"]) for e in entries.values())
    cursor = 0
    for begin, end in spans:  # the tensors must tile the data section
        if begin != cursor:
            raise ValueError(f"{path}: tensor data {'overlaps' if begin < cursor else 'leaves a gap'} at byte "
                             f"{min(begin, cursor)}")
        cursor = end
    if cursor != len(data):
        raise ValueError(f"{path}: data section holds {len(data)} bytes, tensors cover {cursor}")
    stored = meta.get(DIGEST_KEY)
    if stored is None:
        warnings.warn(f"{path} has no content digest ({DIGEST_KEY}; written before mpdiffuser stored one): its "
                      "integrity is not verified. Re-export it (or `mpdiffuser tune --out`) to add one.", stacklevel=3)
    else:
        actual = file_content_digest(meta, entries, data)
        if stored != actual:
            raise ValueError(f"{path}: content digest mismatch (stored {stored[:16]}..., computed {actual[:16]}...): "
                             "the file was changed or corrupted after it was written")
    tensors, bf16 = {}, set()
    for name, e in entries.items():
        begin, end = e["data_offsets"]
        width = {"F32": 4, "BF16": 2}.get(e["dtype"])
        if width is None:
            raise ValueError(f"{path}: tensor {name!r} has dtype {e['dtype']!r}, expected F32 or BF16")
        if width == 2 and name.startswith("normalizer."):
            raise ValueError(f"{path}: tensor {name!r} is BF16; normalizer tables must be F32")
        count = int(np.prod(e["shape"], dtype=np.int64)) if e["shape"] else 1
        if end - begin != width * count:
            raise ValueError(f"{path}: tensor {name!r} holds {end - begin} bytes, but shape {tuple(e['shape'])} of "
                             f"{e['dtype']} needs {width * count}")
        if width == 4:
            tensors[name] = np.frombuffer(data[begin:end], dtype="<f4").reshape(e["shape"]).astype(np.float32)
        else:
            bits = np.frombuffer(data[begin:end], dtype="<u2").astype(np.uint32) << 16
            tensors[name] = bits.view(np.float32).reshape(e["shape"])
            bf16.add(name)
    return meta, tensors, bf16


def model_file_digest(path: str | Path) -> str:
    """SHA-256 of a model file's content: its metadata and tensors (names, dtypes, shapes, values),
    in sorted order (mpdiffuser.digest; the stored digest is left out). Two exports of the same
    bundle and options have the same digest, though not always the same bytes (safetensors writes
    the metadata in hash-map order)."""
    return stored_and_actual(path)[1]


def bundle_from_model_file(path: str | Path):
    """The PyTorch models (a ModelBundle) stored in a model file, and its sampler defaults."""
    import torch

    from mpdiffuser.models.bundle import ModelBundle

    spec, tensors, defaults = read_model_file(path)
    modules = {}
    for net in MODEL_NAMES:
        if net == "cost" and not spec.with_cost:
            continue
        module = spec.build(net)
        state = {}
        for name, key in file_tensor_names(net, module.state_dict(), spec.model.architecture).items():
            if key not in tensors:
                raise ValueError(f"{path} lacks tensor '{key}'")
            state[name] = torch.from_numpy(np.array(tensors[key], dtype=np.float32))
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"{path}: tensors of '{net}' do not match the stored architecture: {exc}") from exc
        modules[net] = module
    return ModelBundle.from_modules(spec, **modules), defaults
