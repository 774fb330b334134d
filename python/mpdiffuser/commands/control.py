"""The commands that control robots with trained models: eval, tune, consistency, export."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path


from mpdiffuser import results_json
from mpdiffuser.commands.common import add_sampler_args, options_from_args, seed_type
from mpdiffuser.config import BACKENDS

CONSISTENCY_LAMBDAS = (1.0, 0.0)  # consistency's lambdas unless --lambdas; the first drives the robot


def _cmd_eval(args: argparse.Namespace) -> int:
    """Control an environment with trained models (MPC, replanning every step) and report scores.

    --bundle DIR runs the PyTorch reference on the bundle (or, with --backend cpu, plans
    DIR/model.safetensors: exported when missing or when its own earlier export is stale, never
    over a file `export` or `tune --out` wrote); --model-file F runs an exported model file on --backend.
    """
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy

    if (args.bundle is None) == (args.model_file is None):
        raise SystemExit("error: give exactly one of --bundle and --model-file")
    if args.velocity_limit is not None and args.budget is None:
        raise SystemExit("error: --velocity-limit applies with --budget only (a constrained task)")
    if args.threads < 0:
        raise SystemExit(f"error: --threads must be >= 0 (0: every core), got {args.threads}")
    if args.threads and args.backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    if args.model_file is not None or args.backend != "torch":
        from mpdiffuser.export import model_file_for_bundle
        from mpdiffuser.sampling.sampler import Sampler

        model_file = args.model_file
        if model_file is None:
            model_file, done = model_file_for_bundle(args.bundle)
            print(done)
        sampler = Sampler(model_file, args.backend, env_id=args.env, threads=args.threads)
        defaults = sampler.defaults
    else:
        from mpdiffuser.models.bundle import ModelBundle
        from mpdiffuser.sampling.reference import ReferenceSampler

        bundle = ModelBundle.load(args.bundle, env_id=args.env)
        sampler = ReferenceSampler(bundle)
        defaults = sampler.defaults
    env_id = args.env or sampler.spec.env_id
    if env_id is None:
        raise SystemExit("error: the models name no environment; pass --env")
    options = options_from_args(args, defaults)
    if args.json:  # before the evaluation, so its results cannot be lost to a missing directory
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    policy = MPCPolicy(sampler, options, episode_budget=args.budget)
    summary = evaluate(policy, env_id, args.episodes, args.seed, args.max_steps, constrained=args.budget is not None,
                       limit=args.velocity_limit)
    report = summary.to_dict() | {"backend": args.backend, "threads": args.threads, "seed": args.seed,
                                  "options": dataclasses.asdict(options),
                                  "model_file": None if args.model_file is None else str(args.model_file),
                                  "bundle": args.bundle}
    lat = report["latency"]
    has_score = not math.isnan(report["score_mean"])  # NaN for robots without D4RL references
    score = (f"success rate {100 * report['success_rate']:.0f}% ({report['score_stderr']:.1f} s.e.), "
             if "success_rate" in report else
             f"score {report['score_mean']:.1f} +- {report['score_stderr']:.1f}, " if has_score
             else f"no D4RL reference returns for {env_id}, raw ")
    print(f"{env_id}: {score}return {report['return_mean']:.1f}, cost {report['cost_mean']:.1f}; "
          f"latency ({args.backend}) p50 {lat['p50_ms']:.2f} ms p99 {lat['p99_ms']:.2f} ms"
          + (f"; {lat['overruns']} of {lat['plans']} plans overran the {lat['deadline_ms']:g} ms deadline"
             if "overruns" in lat else ""))
    if args.json:
        results_json.write(args.json, report)
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    """Pick the return target g of a model file by validation episodes: run --episodes MPC
    episodes per --return-targets value from start states --seed, --seed + 1, ... (keep them apart
    from your test starts) and report the g of the highest mean return; --out writes a copy of the
    model file with that g as its default (--out equal to --model-file updates it in place).
    Several --model-file (say exports of one training run at several lengths: `train --steps`
    continues a checkpoint) pick the file and g together.
    """
    from mpdiffuser.control.tune import tune_models
    from mpdiffuser.export import with_defaults
    from mpdiffuser.sampling.sampler import Sampler

    if args.episodes < 1:
        raise SystemExit(f"error: --episodes must be >= 1, got {args.episodes}")
    if args.velocity_limit is not None and args.budget is None:
        raise SystemExit("error: --velocity-limit applies with --budget only (a constrained task)")
    files = list(dict.fromkeys(args.model_file))
    samplers = {f: Sampler(f, args.backend, env_id=args.env) for f in files}
    robots = {s.spec.env_id for s in samplers.values()}
    env_id = args.env or (robots.pop() if len(robots) == 1 else None)
    if env_id is None:
        raise SystemExit("error: the model files name no environment, or different ones; pass --env"
                         if len(files) > 1 else "error: the model names no environment; pass --env")
    candidates = {f: (s, options_from_args(args, s.defaults)) for f, s in samplers.items()}
    print(f"{', '.join(files)} on {env_id}: {args.episodes} episode(s) per return target, starts {args.seed}-"
          f"{args.seed + args.episodes - 1}, backend {args.backend}")
    best, tried = tune_models(candidates, env_id, args.return_targets, args.episodes, args.seed, args.max_steps,
                              budget=args.budget, limit=args.velocity_limit)
    for row in tried:
        score = "" if row["score_mean"] is None else f", score {row['score_mean']:.1f}"
        if args.budget is not None:
            score += f", cost {row['cost_mean']:.1f} (budget {args.budget:g})"
        mark = "  <- best" if (row["model"], row["return_target"]) == (best["model"], best["return_target"]) else ""
        name = f"{row['model']}  " if len(files) > 1 else ""
        print(f"  {name}g = {row['return_target']:<6g} return {row['return_mean']:9.1f} +- {row['return_stderr']:.1f}"
              f"{score}{mark}")
    g, chosen = best["return_target"], best["model"]
    which = f"{chosen}, " if len(files) > 1 else ""
    if args.out:
        path = with_defaults(chosen, args.out, candidates[chosen][1].replace(return_target=g))
        print(f"wrote {path}: {'copy of ' + chosen + ', ' if len(files) > 1 else ''}default return target {g:g}")
    else:
        print(f"best: {which}return target {g:g}: pass --return-target {g:g} to eval, or rerun with --out to store it")
    return 0


def _cmd_consistency(args: argparse.Namespace) -> int:
    """Plan consistency of a model file: drive the robot at the first --lambdas value and, at every
    visited state, replay each lambda's plan open loop on a copy of the simulator. Reports how far
    the planned states are from the reached ones (normalized units), what the plans' actions earn
    over the window and what the ranker predicted. Measures what the dynamics update buys."""
    from mpdiffuser.control.consistency import plan_consistency
    from mpdiffuser.envs import PhysicsChange
    from mpdiffuser.sampling.sampler import Sampler

    try:
        physics = PhysicsChange.parse(args.physics) if args.physics else None
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if (args.model_file is None) == (args.model_file_option is None):
        raise SystemExit("error: give the model file once, as an argument or as --model-file")
    lambdas = args.lambdas or list(CONSISTENCY_LAMBDAS)
    sampler = Sampler(args.model_file or args.model_file_option, args.backend, threads=args.threads)
    env_id = args.env or sampler.spec.env_id
    if env_id is None:
        raise SystemExit("error: the model file names no environment; pass --env")
    if args.episodes < 1:
        raise SystemExit(f"error: --episodes must be >= 1, got {args.episodes}")
    try:
        options = options_from_args(args, sampler.defaults)
        report = plan_consistency(sampler, env_id, tuple(lambdas), args.episodes, args.seed, args.max_steps,
                                  physics=physics, options=options)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    robot = f" ({physics.tag})" if physics is not None else ""
    print(f"{env_id}{robot}: {report['states']} states over {len(report['steps'])} episode(s), driven at lambda "
          f"{lambdas[0]:g}; state errors in normalized units")
    print(f"{'lambda':>7} {'x_1 error':>10} {'window error':>13} {'window return':>14} {'ranker value':>13} {'falls':>6}")
    for lam, m in report["lambdas"].items():
        print(f"{lam:>7} {m['state_error_first']:>10.3f} {m['state_error_window']:>13.3f} "
              f"{m['window_return']:>14.1f} {m['predicted_value']:>13.1f} {m['fall_rate']:>6.2f}")
    if args.json:
        report |= {"model_file": str(sampler.model_file), "physics": physics.tag if physics is not None else "nominal"}
        results_json.write(args.json, report)
        print(f"wrote {args.json}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Write a trained bundle's models to one .safetensors model file for the native core."""
    from mpdiffuser.config import SamplerOptions
    from mpdiffuser.models.bundle import BundleSpec
    from mpdiffuser.export import _read_verified, export_model

    defaults = BundleSpec.load(args.bundle).sampler_defaults or SamplerOptions()
    path = export_model(args.bundle, args.out, options_from_args(args, defaults), weights=args.weights)
    weights = "bf16" if _read_verified(path)[2] else "float32"
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {weights} weights)")
    return 0


def register(commands) -> None:
    from mpdiffuser.config import WEIGHT_FORMATS
    from mpdiffuser.control.tune import VALIDATION_SEED

    ev = commands.add_parser("eval", help="control an environment with trained models", description=_cmd_eval.__doc__)
    ev.add_argument("--bundle", default=None, help="model bundle directory")
    ev.add_argument("--model-file", default=None, help="exported .safetensors model file")
    ev.add_argument("--backend", default="torch", choices=BACKENDS,
                    help="torch: the PyTorch reference; cpu / cuda: the native core")
    ev.add_argument("--env", default=None,
                    help="environment id: a built-in robot or any registered gymnasium id whose spaces match the "
                         "model (default: the model's robot)")
    ev.add_argument("--episodes", type=int, default=5, help="evaluation episodes")
    ev.add_argument("--seed", type=seed_type, default=0, help="episode i starts from seed + i (plans too)")
    ev.add_argument("--max-steps", type=int, default=None, help="steps per episode at most (default: the env's limit)")
    ev.add_argument("--threads", type=int, default=0,
                    help="planning threads: the native CPU backend's, or torch's for --backend torch (0: every core)")
    add_sampler_args(ev, exclude=("cost_limit",))  # --budget sets it
    ev.add_argument("--budget", type=float, default=None, help="episode cost budget (constrained tasks)")
    ev.add_argument("--velocity-limit", type=float, default=None,
                    help="with --budget: the speed limit in m/s the models were trained with (default: DSRL's)")
    ev.add_argument("--json", default=None, help="write the results as JSON here")
    ev.set_defaults(func=_cmd_eval)


    tu = commands.add_parser("tune", help="pick the return target g (and model file) by validation episodes",
                             description=_cmd_tune.__doc__)
    tu.add_argument("--model-file", required=True, action="extend", nargs="+",
                    help="exported .safetensors model file(s); several: pick the file and g together")
    tu.add_argument("--return-targets", type=float, action="extend", nargs="+", required=True,
                    help="candidate return targets g, e.g. 0.4 0.6 0.8 1.1")
    tu.add_argument("--backend", default="cpu", choices=BACKENDS,
                    help="torch: the PyTorch reference; cpu / cuda: the native core")
    tu.add_argument("--env", default=None, help="environment id (default: the model's robot)")
    tu.add_argument("--episodes", type=int, default=3, help="validation episodes per return target")
    tu.add_argument("--seed", type=seed_type, default=VALIDATION_SEED,
                    help="first validation start (episode i starts from seed + i)")
    tu.add_argument("--max-steps", type=int, default=None, help="steps per episode at most (default: the env's limit)")
    tu.add_argument("--budget", type=float, default=None,
                    help="episode cost budget (cost-conditioned models): the highest return within it wins, or, "
                         "when no setting keeps it, the lowest cost")
    tu.add_argument("--velocity-limit", type=float, default=None,
                    help="with --budget: the speed limit in m/s the models were trained with (default: DSRL's)")
    add_sampler_args(tu, exclude=("return_target", "cost_limit"))  # tune chooses g; --budget sets l
    tu.add_argument("--out", default=None, help="write the model file with the chosen g as its default here")
    tu.set_defaults(func=_cmd_tune)


    co = commands.add_parser("consistency", help="do plans match what the robot does? (per lambda)",
                             description=_cmd_consistency.__doc__)
    co.add_argument("model_file", nargs="?", default=None, help="exported .safetensors model file (or --model-file)")
    co.add_argument("--model-file", dest="model_file_option", default=None, help="exported .safetensors model file")
    co.add_argument("--env", default=None, help="environment (default: the model file's)")
    co.add_argument("--lambdas", type=float, action="extend", nargs="+", default=None,
                    help="dynamics weights to compare; the first drives the robot "
                         f"(default: {' '.join(f'{v:g}' for v in CONSISTENCY_LAMBDAS)})")
    co.add_argument("--physics", default=None, help="changed robot, e.g. mass=1.5,gear=0.6 (default: nominal)")
    co.add_argument("--backend", default="cpu", choices=BACKENDS,
                    help="torch: the PyTorch reference; cpu / cuda: the native core")
    co.add_argument("--threads", type=int, default=0, help="native CPU backend threads (0: every core)")
    co.add_argument("--episodes", type=int, default=1, help="episodes driven")
    co.add_argument("--seed", type=seed_type, default=1000, help="episode i starts from seed + i")
    co.add_argument("--max-steps", type=int, default=1000, help="steps per episode at most")
    add_sampler_args(co, only=("num_candidates", "guidance", "return_target"))
    co.add_argument("--json", default=None, help="write the results as JSON here")
    co.set_defaults(func=_cmd_consistency)


    ex = commands.add_parser("export", help="write a bundle as one .safetensors model file", description=_cmd_export.__doc__)
    ex.add_argument("--bundle", required=True, help="trained model bundle directory")
    ex.add_argument("--out", required=True, help="output .safetensors path")
    ex.add_argument("--weights", choices=WEIGHT_FORMATS, default=None,
                    help="how the networks' weight matrices are stored: float32, or bf16 (rounded to nearest "
                         "even: half the file; the CPU backend streams half the bytes per plan step, 1.5-1.9x "
                         "faster on large models; every backend plans with exactly the rounded weights) "
                         "(default: bf16 for a large robot's U-Net, a window H (dx + du) over 2048, else float32)")
    add_sampler_args(ex)
    ex.set_defaults(func=_cmd_export)

