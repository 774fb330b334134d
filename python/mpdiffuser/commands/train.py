"""The train command: a bundle's models from datasets (training/bundles.py does the work)."""

from __future__ import annotations

import argparse
import dataclasses

from mpdiffuser.commands.common import add_field_flags, field_docs, seed_type, show
from mpdiffuser.config import MODEL_FLAGS, TRAIN_FLAGS  # noqa: F401  (commands.train.TRAIN_FLAGS)
from mpdiffuser.training.request import RUNTIME_FLAGS, SETTINGS

# The request's own fields as flags (flag -> field of TrainRequest); the settings' flags come from
# TrainConfig, ModelConfig and TrainRuntime (SETTINGS).
REQUEST_FLAGS = {name: name for name in ("bundle", "data", "extra_data", "env", "recipe", "model", "fine_tune",
                                         "seeds", "export_at", "force", "device", "at_once", "eval_every",
                                         "eval_episodes", "per_model")}


def _cmd_train(args: argparse.Namespace) -> int:
    """Train the models of a bundle: the planner on --data, dynamics and ranker on --data plus --extra-data.

    An interrupted run resumes from its checkpoints; a larger --steps continues a finished one;
    --force starts over. Loss logs: BUNDLE/logs/<model>.csv (and TensorBoard when installed).
    Several GPUs or processes: torchrun --nproc_per_node N -m mpdiffuser train ... (the global
    --batch-size is split over the N processes). --export-at 2000 5000 also writes
    BUNDLE/model-<n>.safetensors with planner and dynamics at n steps (the ranker fully trained),
    for `tune` to pick the training length from. mpd.fit takes the same fields by the same names.
    """
    try:
        request = request_from_args(args)  # bad values fail here, before any file is written
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"error: {_as_flags(str(exc))}") from None
    request.run(progress=True, say=print, strict_batch=True)
    return 0


def request_from_args(args: argparse.Namespace):
    """The TrainRequest of the flags given (the others keep the request's defaults)."""
    from mpdiffuser.training.request import TrainRequest

    fields = {flag: tuple(value) if isinstance(value, list) else value
              for flag in (*REQUEST_FLAGS, *SETTINGS) if (value := getattr(args, flag, None)) is not None}
    if "per_model" in fields:
        fields["per_model"] = per_model_settings(fields["per_model"])
    return TrainRequest.of(**fields)


def per_model_settings(items) -> dict:
    """--per-model MODEL.SETTING=VALUE ... as TrainRequest.per_model ({model: {setting: value}}),
    each value of its setting's type."""
    from mpdiffuser.commands.common import field_type
    from mpdiffuser.config import TrainConfig

    out: dict = {}
    for item in items:
        name, dot, rest = item.partition(".")
        setting, eq, value = rest.partition("=")
        if not (dot and eq and name and setting and value):
            raise ValueError(f"per_model takes MODEL.SETTING=VALUE (reward.steps=3000), got {item!r}")
        if setting.replace("-", "_") not in TRAIN_FLAGS:
            raise ValueError(f"per_model: {setting!r} is no training setting; they are {', '.join(TRAIN_FLAGS)}")
        setting = setting.replace("-", "_")
        kind, _ = field_type(TrainConfig, TRAIN_FLAGS[setting])
        try:
            out.setdefault(name, {})[setting] = kind(value)
        except ValueError:
            raise ValueError(f"per_model: {item!r} needs a value of type {kind.__name__}") from None
    return out


def _as_flags(message: str) -> str:
    """A request's message with its field names as the command line's flags (seed -> --seed)."""
    import re

    names = sorted({*REQUEST_FLAGS, *SETTINGS}, key=len, reverse=True)
    return re.sub(r"(?<![.\w-])(" + "|".join(names) + r")\b(?= |,|:|\)|$)",
                  lambda m: "--" + m.group(1).replace("_", "-"), message)


def _cmd_plot(args: argparse.Namespace) -> int:
    """Plot a bundle's training: one PNG per model from BUNDLE/logs/<model>.csv (loss, the planner's
    first-action loss, validation when the run validated, steps per second), into --out."""
    from mpdiffuser.training.plot import plot_training

    for path in plot_training(args.bundle, args.out):
        print(f"wrote {path}")
    return 0


def register(commands) -> None:
    from mpdiffuser.config import (ARCHITECTURES, AT_ONCE_MODES, BATCHES, CAPTURE_MODES, NORMALIZERS, PREDICTIONS,
                                   PRECISION_NAMES, RETURN_CONDITIONS, ModelConfig, TrainConfig)
    from mpdiffuser.models.bundle import MODEL_NAMES
    from mpdiffuser.recipes import RECIPES, recipe
    from mpdiffuser.training.request import TrainRequest
    from mpdiffuser.training.runtime import TrainRuntime

    train = commands.add_parser("train", help="train planner, dynamics and ranker", description=_cmd_train.__doc__)
    request = TrainRequest.__dataclass_fields__

    def request_default(field: str) -> str:
        value = request[field].default
        missing = value is dataclasses.MISSING or field in ("data", "extra_data")
        return "" if missing or value in ((), None, False) else f"(default {show(value)})"

    add_field_flags(train, TrainRequest, {k: v for k, v in REQUEST_FLAGS.items() if k != "per_model"},
                    request_default, required=("bundle", "data"),
                    choices={"recipe": list(RECIPES), "model": ["all", *MODEL_NAMES], "at_once": list(AT_ONCE_MODES)},
                    types_={"seeds": seed_type})
    train.add_argument("--per-model", dest="per_model", nargs="+", action="extend", default=None,
                       metavar="MODEL.SETTING=VALUE",
                       help=field_docs(TrainRequest)["per_model"].replace("%", "%%"))
    t, authors = TrainConfig(), recipe("authors").train

    def train_default(field: str) -> str:
        mine, theirs = show(getattr(t, field)), show(getattr(authors, field))
        return f"(default {mine}" + (f"; recipe authors {theirs})" if theirs != mine else ")")

    add_field_flags(train, TrainConfig, TRAIN_FLAGS, train_default, types_={"seed": seed_type})
    add_field_flags(train, TrainRuntime, RUNTIME_FLAGS, lambda field: f"(default {show(getattr(TrainRuntime, field))})",
                    choices={"precision": PRECISION_NAMES, "capture": CAPTURE_MODES, "batches": BATCHES})
    m, authors_model = ModelConfig(), recipe("authors").model

    def model_default(field: str) -> str:
        mine = show(getattr(m, field))
        theirs = show(tuple(authors_model[field]) if isinstance(authors_model.get(field), list) else
                      authors_model.get(field, getattr(m, field)))
        return f"(new bundles only; default {mine}" + (f"; recipe authors {theirs})" if theirs != mine else ")")

    add_field_flags(train, ModelConfig, MODEL_FLAGS, model_default,
                    choices={"architecture": ARCHITECTURES, "prediction": PREDICTIONS, "normalizer": NORMALIZERS,
                             "return_condition": RETURN_CONDITIONS})
    train.set_defaults(func=_cmd_train)
    plot = commands.add_parser("plot", help="plot a bundle's training logs", description=_cmd_plot.__doc__)
    plot.add_argument("bundle", help="a trained bundle directory")
    plot.add_argument("--out", default=None, help="where the PNGs go (default BUNDLE/plots)")
    plot.set_defaults(func=_cmd_plot)
