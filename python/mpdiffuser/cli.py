"""The mpdiffuser command line: ``mpdiffuser <command> --help`` documents each command."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _cmd_info(args: argparse.Namespace) -> int:
    """Print the build configuration and check the native noise against the NumPy one."""
    from mpdiffuser import _core, noise

    info = _core.build_info()
    print(f"mpdiffuser {info['version']}")
    print(f"  C++ compiler       : {info['cxx_compiler']}")
    if info["cuda_compiled"]:
        print(f"  CUDA backend       : compiled ({info['cuda_compiler']}, sm {info['cuda_architectures']})")
    else:
        print("  CUDA backend       : not compiled")
    gpu = _core.cuda_device_available()
    print(f"  CUDA device        : {'present' if gpu else 'none'}")
    ok = True
    for seed, candidate, step, count in ((0, 0, 0, 1001), (2**40 + 17, 63, 21, 4099)):
        native = _core.noise_normal(seed, candidate, step, count)
        reference = noise.normal(seed, candidate, step, count)
        same = np.array_equal(native, reference)
        ok &= same
        line = f"  noise self-check   : seed={seed} candidate={candidate} step={step} count={count}: "
        line += "native == numpy" if same else f"MISMATCH ({int((native != reference).sum())} elements)"
        if gpu:
            device_same = np.array_equal(_core.cuda_noise_normal(seed, candidate, step, count), reference)
            ok &= device_same
            line += ", cuda == numpy" if device_same else ", cuda MISMATCH"
        print(line)
    print("self-check passed" if ok else "self-check FAILED")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpdiffuser", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="build configuration and native self-check",
                               description=_cmd_info.__doc__)
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
