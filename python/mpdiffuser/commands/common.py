"""What the commands share: the help formatter, argument types, the sampler flags (built from the
option table) and the flags built from a config dataclass's fields."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import re
import types
import typing


def sampler_flags() -> dict:
    """{argparse dest: OptionSpec} of every sampler option with command-line flags (the option
    table's `flags`). Every default is None: the model file's (or the bundle's) stored defaults
    apply unless a flag is given."""
    from mpdiffuser.config import OPTION_SPECS

    return {spec.flags.split()[0][2:].replace("-", "_"): spec for spec in OPTION_SPECS if spec.flags}


def add_sampler_args(p: argparse.ArgumentParser, exclude: tuple[str, ...] = (), only: tuple[str, ...] = ()) -> None:
    """The sampler flags, but those of options in `exclude` (or only those in `only`)."""
    for dest, spec in sampler_flags().items():
        if spec.name in exclude or (only and spec.name not in only):
            continue
        p.add_argument(*spec.flags.split(), dest=dest, type=int if spec.kind == "count" else float, default=None,
                       help=f"{spec.help} (default: the model's stored value)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, except flags and None ("the model file's, the bundle's
    or the recipe's value", which the help text says in words)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def seed_type(text: str) -> int:
    """A --seed value: an integer in [0, 2^63) (episode starts and plan noise derive from it)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^63), got {value}")
    return value


def options_from_args(args: argparse.Namespace, defaults):
    """`defaults` (the model file's) with every sampler flag the user gave."""
    return defaults.replace(**given_fields(args, {dest: spec.name for dest, spec in sampler_flags().items()}))


@functools.cache
def field_docs(cls) -> dict[str, str]:
    """{field: the comment that documents it} for a dataclass and its bases: the field line's
    trailing `# ...`, else the comment lines right above it (a subclass's comment wins)."""
    names = {f.name for f in dataclasses.fields(cls)}
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("#"):
                above.append(stripped.lstrip("#").strip())
                continue
            match = re.match(r"\s+(\w+)\s*:", line)
            if match and match.group(1) in names:
                trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
                docs[match.group(1)] = trailing or " ".join(above) or docs.get(match.group(1), "")
            above = []
    return docs


def field_type(cls, name: str) -> tuple[type, bool]:
    """(element type, whether it is a sequence) of a dataclass field's annotation: int, float, str,
    or tuple[T, ...] (a flag that takes several values); None in a union is left out."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return hint, False


def show(value) -> str:
    """A default as the help shows it."""
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return " ".join(map(str, value)) if value else "none"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def add_field_flags(parser: argparse.ArgumentParser, cls, flags: dict[str, str], extra_help=None,
                    choices: dict | None = None, types_: dict | None = None, required: tuple = ()) -> None:
    """One flag per entry of `flags` (flag name -> field of dataclass `cls`), default None (the
    config's own value applies unless the flag is given): the type from the field's annotation (a
    tuple takes several values; a bool is a switch: --name sets True, or --no-name sets False for a
    field that defaults to True), the help from the field's comment in the config, followed by
    `extra_help(field)` (say, its defaults). `required`: flags that must be given."""
    docs = field_docs(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for flag, field in flags.items():
        kind, several = field_type(cls, field)
        text = docs.get(field, "").replace("%", "%%")
        options = {"default": None, "help": f"{text} {extra_help(field) if extra_help else ''}".strip()}
        name = "--" + flag.replace("_", "-")
        if kind is bool:
            on = defaults.get(field) is not True
            parser.add_argument(name if on else "--no-" + flag.replace("_", "-"), dest=flag, action="store_const",
                                const=on, default=None, help=text if on else f"do not: {text}")
            continue
        if (types_ or {}).get(field) is not None:
            options["type"] = types_[field]
        elif kind in (int, float):
            options["type"] = kind
        if field in (choices or {}):
            options["choices"] = choices[field]
        if several:
            options |= {"action": "extend", "nargs": "+"}
        if flag in required:
            options |= {"required": True, "default": dataclasses.MISSING}
            del options["default"]
        parser.add_argument(name, dest=flag, **options)


def given_fields(args: argparse.Namespace, flags: dict[str, str]) -> dict:
    """{field: value} of the flags (flag -> field) given on the command line (lists as tuples)."""
    return {field: tuple(value) if isinstance(value, list) else value
            for flag, field in flags.items() if (value := getattr(args, flag, None)) is not None}
