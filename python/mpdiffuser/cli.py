"""The mpdiffuser command line: ``mpdiffuser <command> --help`` documents each command."""

from __future__ import annotations

import argparse
import functools
import os
import sys

from mpdiffuser.commands.common import HelpFormatter  # noqa: F401  (mpdiffuser.cli.HelpFormatter)


class Parser(argparse.ArgumentParser):
    """argparse's parser with a one-line usage error: `mpdiffuser train: error: ... (mpdiffuser
    train --help lists the options)`, exit code 2, instead of the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    from mpdiffuser import __version__
    from mpdiffuser.commands import GROUPS

    parser = Parser(prog="mpdiffuser", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"mpdiffuser {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (they are off anyway when the output "
                                                                 "is not a terminal)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser = functools.partial(commands.add_parser, formatter_class=HelpFormatter)
    for group in GROUPS:
        group.register(commands)
    return parser


# Errors a user can act on: one line naming the file, option or key, exit code 2 (argparse's
# convention); `mpdiffuser --debug ...` shows the traceback instead.
USER_ERRORS = (ValueError, OSError, RuntimeError, ImportError,  # ImportError: an optional install missing
               FloatingPointError)  # a plan or a loss that came out NaN


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command `args` ran, so that its errors name it (mpdiffuser data inspect)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None) in action.choices:
            return _command_parser(action.choices[getattr(args, action.dest)], args)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the command's own parser, with its own --help
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.quiet:
        os.environ["TQDM_DISABLE"] = "1"  # tqdm's own switch: every bar of every command, off
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"mpdiffuser {args.command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # a command's own usage error: "error: ..."
        if isinstance(exc.code, str) and not args.debug:
            print(f"mpdiffuser {args.command}: {exc.code}", file=sys.stderr)
            return 2
        raise
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"mpdiffuser {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
