"""The commands that set a machine and its data up: info, data (inspect, convert), generate-data."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mpdiffuser import results_json
from mpdiffuser.commands.common import add_field_flags, field_docs, given_fields, seed_type, show

# generate-data's flags that set a GenerateConfig field (flag -> field): type, help and default
# from the config (mpdiffuser/data/generate.py).
GENERATE_FLAGS = {"kind": "kind", "transitions": "transitions", "policy_steps": "policy_steps",
                  "expert_steps": "expert_steps", "cost_penalty": "cost_penalty", "cautious_steps": "cautious_steps",
                  "velocity_limit": "velocity_limit"}


def _cmd_info(args: argparse.Namespace) -> int:
    """Print the build configuration and check the native noise against the NumPy one."""
    from mpdiffuser import noise
    from mpdiffuser.native import core

    _core = core()

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


def _cmd_generate(args: argparse.Namespace) -> int:
    """Generate an offline dataset from a gymnasium MuJoCo v5 environment (written as HDF5)."""
    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.data.generate import GenerateConfig, generate

    if args.kind != "mixed" and (args.cost_penalty is not None or args.cautious_steps is not None):
        raise SystemExit("error: --cost-penalty and --cautious-steps apply to --kind mixed only")
    if args.velocity_limit is not None and not (args.constrained or args.kind == "mixed"):
        raise SystemExit("error: --velocity-limit applies to data with costs only (--constrained or --kind mixed)")
    from mpdiffuser.envs import parse_env_option, with_env_options

    try:
        env_id = with_env_options(args.env, dict(parse_env_option(o) for o in args.env_option or ()))
    except ValueError as exc:
        raise SystemExit(f"error: --env-option: {exc}") from None
    config = GenerateConfig(env_id=env_id, constrained=args.constrained or args.kind == "mixed",
                            **given_fields(args, GENERATE_FLAGS | {"seed": "seed"}))
    path = generate(config, args.out, policy_dir=args.policy_dir)
    data = load_dataset(path)
    if args.minari_id:
        data.save_minari(args.minari_id, args.env)
        print(f"also written as Minari dataset {args.minari_id}")
    r = data.returns()
    print(f"{path}: {len(data.episodes)} episodes, {data.num_transitions} transitions, "
          f"return mean {r.mean():.1f} min {r.min():.1f} max {r.max():.1f}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    """Dataset tools. inspect: episodes, lengths, returns (and their D4RL score), how episodes end,
    every dimension's range, NaN/Inf, constant dimensions and actions outside the environment's
    action space, with warnings. convert: the same data in another format (.hdf5, .npz, minari:<id>)."""
    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.data.inspect import convert_dataset, format_report, inspect_dataset

    if args.data_command == "convert":
        print(f"wrote {convert_dataset(args.source, args.target, args.env, args.layout)}")
        return 0
    report = inspect_dataset(load_dataset(args.dataset), args.dataset, args.env)
    print(format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        results_json.write(args.json, report)
    return 0


def register(commands) -> None:
    from mpdiffuser.data.dataset import HDF5_LAYOUTS
    from mpdiffuser.data.generate import KINDS, GenerateConfig
    from mpdiffuser.envs import SUPPORTED

    info = commands.add_parser("info", help="build configuration and native self-check",
                               description=_cmd_info.__doc__)
    info.set_defaults(func=_cmd_info)


    data = commands.add_parser("data", help="inspect a dataset, or convert it to another format",
                               description=_cmd_data.__doc__)
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION",
                                        help="inspect or convert")
    inspect = data_commands.add_parser("inspect", help="episodes, returns, ranges and problems of a dataset")
    inspect.add_argument("dataset", help="a .hdf5/.h5 or .npz file, or minari:<dataset_id>")
    inspect.add_argument("--env", default=None, help="environment id for the score and the action bounds "
                                                     "(default: the dataset's own)")
    inspect.add_argument("--json", default=None, help="also write the report as JSON here")
    inspect.set_defaults(func=_cmd_data)
    convert = data_commands.add_parser("convert", help="write a dataset in another format (by the target's suffix)")
    convert.add_argument("source", help="a .hdf5/.h5 or .npz file, or minari:<dataset_id>")
    convert.add_argument("target", help="a .hdf5/.h5 or .npz file, or minari:<dataset_id> (local storage)")
    convert.add_argument("--env", default=None, help="a Minari target's environment id (default: the dataset's own)")
    convert.add_argument("--layout", default=HDF5_LAYOUTS[0], choices=HDF5_LAYOUTS,
                         help="an HDF5 target's layout: d4rl (one row per transition) or episodes (the MPDiffuser "
                              "authors': a group sample_<i> per episode); both are read")
    convert.set_defaults(func=_cmd_data)


    gen = commands.add_parser("generate-data", help="generate a dataset locally", description=_cmd_generate.__doc__)
    gen.add_argument("--env", default="Hopper-v5",
                     help=f"robot: {', '.join(SUPPORTED)} or any registered gymnasium environment with 1-D Box "
                          "observations and actions (InvertedDoublePendulum-v5, Swimmer-v5, Reacher-v5, ...)")
    gen.add_argument("--env-option", action="append", default=None, metavar="KEY=VALUE",
                     help="an option of the environment (gymnasium.make's keyword argument; VALUE as JSON when it "
                          "parses: true, 0.5, \"text\"), repeatable, e.g. "
                          "exclude_current_positions_from_observation=false. The data record the robot as "
                          "ENV[KEY=VALUE,...], and so do the models trained on them: eval makes the same robot")
    add_field_flags(gen, GenerateConfig, GENERATE_FLAGS, lambda field: f"(default {show(getattr(GenerateConfig, field))})",
                    choices={"kind": KINDS})
    gen.add_argument("--constrained", action="store_true", help=field_docs(GenerateConfig)["constrained"]
                     + " (--kind mixed always does)")
    add_field_flags(gen, GenerateConfig, {"seed": "seed"}, lambda field: f"(default {GenerateConfig.seed})",
                    types_={"seed": seed_type})
    gen.add_argument("--out", default="data", help="output directory (datasets and cached policies)")
    gen.add_argument("--policy-dir", default=None,
                     help="where SAC behaviour policies are cached (default OUT/policies)")
    gen.add_argument("--minari-id", default=None, help="also write a local Minari dataset with this id (ns/name-v0)")
    gen.set_defaults(func=_cmd_generate)

