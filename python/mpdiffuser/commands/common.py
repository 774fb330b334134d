"""What the commands share: the help formatter, argument types, the sampler flags (built from the
option table) and the flags built from a config dataclass's fields."""

from __future__ import annotations

import argparse

BENCH_CANDIDATES = (1, 16, 64, 256)  # bench's N values unless --candidates
CONSISTENCY_LAMBDAS = (1.0, 0.0)  # consistency's lambdas unless --lambdas; the first drives the robot

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
    given = {spec.name: getattr(args, dest) for dest, spec in sampler_flags().items()
             if getattr(args, dest, None) is not None}
    return defaults.replace(**given)
