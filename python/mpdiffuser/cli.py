"""The mpdiffuser command line: ``mpdiffuser <command> --help`` documents each command."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
from pathlib import Path

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


def _cmd_generate(args: argparse.Namespace) -> int:
    """Generate an offline dataset from a gymnasium MuJoCo v5 environment (written as HDF5)."""
    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.data.generate import GenerateConfig, generate

    if args.kind != "mixed" and (args.cost_penalty is not None or args.cautious_steps is not None):
        raise SystemExit("error: --cost-penalty and --cautious-steps apply to --kind mixed only")
    if args.velocity_limit is not None and not (args.constrained or args.kind == "mixed"):
        raise SystemExit("error: --velocity-limit applies to data with costs only (--constrained or --kind mixed)")
    mixed = {"cost_penalty": args.cost_penalty, "cautious_steps": args.cautious_steps,
             "velocity_limit": args.velocity_limit}
    config = GenerateConfig(args.env, args.kind, args.transitions, args.policy_steps, args.expert_steps,
                            args.constrained or args.kind == "mixed", args.seed,
                            **{k: v for k, v in mixed.items() if v is not None})
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
        print(f"wrote {convert_dataset(args.source, args.target, args.env)}")
        return 0
    report = inspect_dataset(load_dataset(args.dataset), args.dataset, args.env)
    print(format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """Train the models of a bundle: the planner on --data, dynamics and ranker on --data plus --extra-data.

    An interrupted run resumes from its checkpoints; a larger --steps continues a finished one;
    --force starts over. Loss logs: BUNDLE/logs/<model>.csv (and TensorBoard when installed).
    Several GPUs or processes: torchrun --nproc_per_node N -m mpdiffuser train ... (the global
    --batch-size is split over the N processes). --export-at 2000 5000 also writes
    BUNDLE/model-<n>.safetensors with planner and dynamics at n steps (the ranker fully trained),
    for `tune` to pick the training length from.
    """
    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.envs import action_bounds
    from mpdiffuser.recipes import recipe
    from mpdiffuser.training.bundles import train_bundle
    from mpdiffuser.training.lock import BundleLock, BundleLocked
    from mpdiffuser.training.runtime import all_gather, from_environment, leave_process_group

    chosen = recipe(args.recipe)
    given = {field: getattr(args, flag) for flag, field in (
        ("steps", "steps"), ("batch_size", "batch_size"), ("lr", "learning_rate"), ("seed", "seed"),
        ("checkpoint_every", "checkpoint_every"), ("action_weight", "action_weight"), ("ema_every", "ema_every"),
        ("validate_every", "validate_every")) if getattr(args, flag) is not None}
    config = dataclasses.replace(chosen.train, **given)  # bad values fail here, before any file is written
    snapshots = sorted(set(args.export_at or ()))
    if snapshots and (args.model != "all" or args.fine_tune):
        raise SystemExit("error: --export-at exports whole bundles: it needs --model all and no --fine-tune")
    if snapshots and not 1 <= snapshots[0] <= snapshots[-1] <= config.steps:
        raise SystemExit(f"error: --export-at steps must lie within 1..{config.steps} (--steps), got {snapshots}")
    runtime = from_environment(args.device, precision=args.precision, compile=args.compile, batches=args.batches,
                               capture=args.capture, log_every=args.log_every, tensorboard=not args.no_tensorboard)
    runtime.local_batch(config.batch_size)  # a world size that does not divide the batch fails here
    say = print if runtime.is_main else (lambda *a, **k: None)
    task = [load_dataset(p) for p in args.data]
    extra = [load_dataset(p) for p in args.extra_data or []]
    if args.env is not None:  # recorded in the bundle and its model files, for eval, tune and consistency
        task, extra = [d.for_env(args.env) for d in task], [d.for_env(args.env) for d in extra]
    for path, data in zip([*args.data, *(args.extra_data or [])], task + extra):
        for problem in data.problems(*action_bounds(data.env_id)):
            say(f"warning: {path}: {problem}")
    seeds = args.seeds or []
    if seeds:
        if args.seed is not None:
            raise SystemExit("error: give --seed or --seeds, not both")
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"error: --seeds repeats {sorted(s for s in set(seeds) if seeds.count(s) > 1)}")
        if snapshots or runtime.distributed:
            raise SystemExit("error: --seeds trains one process's bundles side by side: not with --export-at or "
                             "under torchrun")
    bundles = [Path(f"{args.bundle}-s{s}") for s in seeds] or [Path(args.bundle)]
    locks = [BundleLock(b, say) for b in bundles]
    refused = None
    if runtime.is_main:
        try:
            for lock in locks:
                lock.acquire()
        except BundleLocked as exc:
            refused = str(exc)
    refused = all_gather(runtime, refused)[0]  # every rank stops when rank 0 could not take the lock
    try:
        if refused:
            raise BundleLocked(refused)
        fresh = [bundle for bundle in bundles if _prepare_bundle(args, runtime, task, extra, bundle, say)]
        if runtime.distributed or runtime.device != "cpu" or runtime.precision != "fp32":
            say(f"training on {runtime.device} x {runtime.world_size} process(es), {runtime.precision}"
                + (", compiled" if runtime.compile else ""))
        train_bundle(args.bundle, task, extra, config=config, models=None if args.model == "all" else [args.model],
                     seeds=seeds, snapshots=snapshots, runtime=runtime, at_once=args.at_once,
                     force=True if args.force else fresh, fine_tune=args.fine_tune, strict_batch=True, say=say)
    finally:
        for lock in locks:
            lock.release()
    if runtime.distributed:
        leave_process_group()
    return 0


def _prepare_bundle(args, runtime, task, extra, bundle: Path, say) -> bool:
    """Create the bundle when it is new (or --force), check its model settings against the flags
    (training.bundles.prepare_bundle, as mpd.fit does); whether it is new."""
    from mpdiffuser.training.bundles import prepare_bundle
    from mpdiffuser.training.runtime import barrier

    sizes = {name: getattr(args, flag) for flag, name in (
        ("horizon", "horizon"), ("diffusion_steps", "num_steps"), ("layers", "layers"), ("width", "width"),
        ("prediction", "prediction"), ("normalizer", "normalizer"), ("return_condition", "return_condition"),
        ("architecture", "architecture"), ("unet_dim", "unet_dim"), ("unet_mults", "unet_mults"),
        ("unet_embed_dim", "unet_embed_dim")) if getattr(args, flag) is not None}
    if "unet_mults" in sizes:
        sizes["unet_mults"] = tuple(sizes["unet_mults"])
    fresh = prepare_bundle(bundle, task, extra, args.recipe, sizes,
                           force=args.force and args.model == "all" and not args.fine_tune,
                           create=runtime.is_main, say=say)
    barrier(runtime)  # the other ranks read the bundle rank 0 wrote
    return fresh


def _options_from_args(args: argparse.Namespace, defaults):
    """`defaults` (the model file's) with every sampler flag the user gave."""
    given = {spec.name: getattr(args, dest) for dest, spec in _sampler_flags().items()
             if getattr(args, dest, None) is not None}
    return defaults.replace(**given)


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
    if args.model_file is not None or args.backend != "torch":
        from mpdiffuser.export import model_file_for_bundle
        from mpdiffuser.sampling.sampler import Sampler

        model_file = args.model_file
        if model_file is None:
            model_file, done = model_file_for_bundle(args.bundle)
            print(done)
        sampler = Sampler(model_file, args.backend, env_id=args.env)
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
    options = _options_from_args(args, defaults)
    if args.json:  # before the evaluation, so its results cannot be lost to a missing directory
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    policy = MPCPolicy(sampler, options, episode_budget=args.budget)
    summary = evaluate(policy, env_id, args.episodes, args.seed, args.max_steps, constrained=args.budget is not None,
                       limit=args.velocity_limit)
    report = summary.to_dict() | {"backend": args.backend, "seed": args.seed, "options": dataclasses.asdict(options),
                                  "model_file": None if args.model_file is None else str(args.model_file),
                                  "bundle": args.bundle}
    lat = report["latency"]
    has_score = not math.isnan(report["score_mean"])  # NaN for robots without D4RL references
    score = (f"score {report['score_mean']:.1f} +- {report['score_stderr']:.1f}, " if has_score
             else f"no D4RL reference returns for {env_id}, raw ")
    print(f"{env_id}: {score}return {report['return_mean']:.1f}, cost {report['cost_mean']:.1f}; "
          f"latency ({args.backend}) p50 {lat['p50_ms']:.2f} ms p99 {lat['p99_ms']:.2f} ms"
          + (f"; {lat['overruns']} of {lat['plans']} plans overran the {lat['deadline_ms']:g} ms deadline"
             if "overruns" in lat else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
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
    candidates = {f: (s, _options_from_args(args, s.defaults)) for f, s in samplers.items()}
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
        options = _options_from_args(args, sampler.defaults)
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
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Write a trained bundle's models to one .safetensors model file for the native core."""
    from mpdiffuser.config import SamplerOptions
    from mpdiffuser.models.bundle import BundleSpec
    from mpdiffuser.export import export_model

    defaults = BundleSpec.load(args.bundle).sampler_defaults or SamplerOptions()
    path = export_model(args.bundle, args.out, _options_from_args(args, defaults))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    """Plan latency of a native backend against the PyTorch reference on the same model file: --backend cpu
    (the reference on the same threads) or cuda (the reference on the same GPU, eager and replayed
    from a CUDA graph), either family (--architecture)."""
    from mpdiffuser.bench import (format_cuda_table, format_table, run_cpu_benchmark, run_cuda_benchmark,
                                  synthetic_model_file, write_json)

    model_file = args.model_file
    if model_file is None:
        from mpdiffuser.config import ModelConfig

        model_file = synthetic_model_file(Path(f"runs/bench/synthetic-hopper-{args.architecture}.safetensors"),
                                          model=ModelConfig(architecture=args.architecture))
        print(f"no --model-file: benchmarking a default-size {args.architecture} Hopper model with random weights "
              f"({model_file})")
    candidates = args.candidates or list(BENCH_CANDIDATES)
    if args.backend == "cuda":
        try:
            result = run_cuda_benchmark(model_file, candidates=candidates, iters=args.iters,
                                        warm_start_level=args.warm_start_level)
        except RuntimeError as exc:
            raise SystemExit(f"error: {exc}") from None
        print(format_cuda_table(result))
    else:
        result = run_cpu_benchmark(model_file, candidates=candidates, threads=args.threads, iters=args.iters,
                                   warm_start_level=args.warm_start_level)
        print(format_table(result))
    print(f"wrote {write_json(result, args.out or f'runs/bench/{args.backend}_latency.json')}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """End to end: generate Hopper data, train the models, control Hopper; print scores and latency."""
    from mpdiffuser.demo import DemoConfig, run_demo

    config = DemoConfig(out_dir=args.out, episodes=args.episodes, train_steps=args.train_steps,
                        policy_steps=args.policy_steps, max_steps=args.max_steps, seed=args.seed)
    run_demo(config)
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    """Run one experiment of the evaluation suite; --quick runs a minutes-long version of it.

    quadruped: Ant real-time control at a fixed rate. locomotion: Hopper, Walker2d, HalfCheetah
    medium / medium-replay / medium-expert, MPDiffuser vs planner-only vs behaviour cloning, plus
    score vs lambda and vs the dynamics schedule. constrained: velocity-constrained robots with
    episode cost budgets 10, 20, 40. dynamics: changed mass, friction and actuator gain, the
    dynamics model fine-tuned alone. Each writes JSON, CSV and PNG files to its output directory.
    """
    from mpdiffuser.envs import PhysicsChange
    from mpdiffuser.training.runtime import resolve_device

    only = {"hz": "quadruped", "model_file": "quadruped", "dataset": "locomotion", "physics": "dynamics",
            "cost_penalty": "constrained", "kind": "locomotion", "expert_steps": "locomotion",
            "finetune_steps": "dynamics", "finetune_replay": "dynamics", "shift_transitions": "dynamics",
            "baselines": "locomotion",
            "baseline_steps": "locomotion", "baseline_seeds": "locomotion",
            "return_targets": "locomotion constrained", "validation_episodes": "locomotion constrained",
            "train_lengths": "locomotion", "cautious_steps": "constrained",
            "velocity_limit": "constrained"}  # options of some experiments only
    for flag, names in only.items():
        if getattr(args, flag) is not None and args.name not in names.split():
            raise SystemExit(f"error: --{flag.replace('_', '-')} applies to the {' and '.join(names.split())} "
                             f"experiment{'s' if ' ' in names else ''} only")
    for flag in ("cost_penalty", "action_weight"):
        if getattr(args, flag) is not None and not getattr(args, flag) > 0:
            raise SystemExit(f"error: --{flag.replace('_', '-')} must be > 0, got {getattr(args, flag)}")
    for flag in ("policy_steps", "expert_steps", "train_steps", "episodes", "candidates", "finetune_steps",
                 "shift_transitions", "width", "baseline_steps", "validation_episodes",
                 "cautious_steps"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise SystemExit(f"error: --{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    common = {"out_dir": args.out, "policy_dir": args.policy_dir, "backend": args.backend, "threads": args.threads,
              "policy_steps": args.policy_steps, "train_steps": args.train_steps, "episodes": args.episodes,
              "candidates": args.candidates, "width": args.width, "action_weight": args.action_weight,
              "prediction": args.prediction, "return_target": args.return_target,
              "device": str(resolve_device(args.device))}
    if args.name == "quadruped":
        from mpdiffuser.experiments.quadruped import QuadrupedConfig as Config, run_quadruped as run

        changes = common | {"control_hz": args.hz, "seed": args.seed, "model_file": args.model_file}
    elif args.name == "locomotion":
        from mpdiffuser.experiments.locomotion import LocomotionConfig as Config, run_locomotion as run

        changes = common | {"envs": tuple(args.env) if args.env else None,
                            "datasets": tuple(args.dataset) if args.dataset else None,
                            "seeds": tuple(args.seeds) if args.seeds else None,
                            "expert_steps": args.expert_steps, "bc_steps": args.train_steps,
                            "kinds": tuple(args.kind) if args.kind else None,
                            "baselines": tuple(args.baselines) if args.baselines else None,
                            "baseline_steps": args.baseline_steps,
                            "baseline_seeds": tuple(args.baseline_seeds) if args.baseline_seeds else None,
                            "return_targets": tuple(args.return_targets) if args.return_targets else None,
                            "validation_episodes": args.validation_episodes,
                            "train_lengths": tuple(args.train_lengths) if args.train_lengths else None}
    elif args.name == "constrained":
        from mpdiffuser.experiments.constrained import ConstrainedConfig as Config, run_constrained as run

        changes = common | {"envs": tuple(args.env) if args.env else None,
                            "seeds": tuple(args.seeds) if args.seeds else None, "cost_penalty": args.cost_penalty,
                            "cautious_steps": args.cautious_steps, "bc_steps": args.train_steps,
                            "velocity_limit": args.velocity_limit,
                            "return_targets": tuple(args.return_targets) if args.return_targets else None,
                            "validation_episodes": args.validation_episodes}
    else:
        from mpdiffuser.experiments.dynamics_shift import DynamicsShiftConfig as Config, run_dynamics_shift as run

        if args.env and len(args.env) > 1:
            raise SystemExit("error: the dynamics experiment takes one --env")
        try:
            shifts = tuple(PhysicsChange.parse(p) for p in args.physics) if args.physics else None
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
        if args.seed is not None and args.seeds:
            raise SystemExit("error: give the dynamics experiment --seeds or --seed, not both")
        seeds = tuple(args.seeds) if args.seeds else (args.seed,) if args.seed is not None else None
        changes = common | {"env_id": args.env[0] if args.env else None, "seeds": seeds, "shifts": shifts,
                            "finetune_steps": args.finetune_steps, "finetune_replay": args.finetune_replay,
                            "shift_transitions": args.shift_transitions}
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.backend == "auto" and args.name != "quadruped":  # the quadruped experiment resolves it itself
        from mpdiffuser.experiments.quadruped import fastest_backend

        changes["backend"] = fastest_backend()
    config = Config.quick(**changes) if args.quick else Config(**changes)
    run(config)
    return 0


BENCH_CANDIDATES = (1, 16, 64, 256)  # bench's N values unless --candidates
CONSISTENCY_LAMBDAS = (1.0, 0.0)  # consistency's lambdas unless --lambdas; the first drives the robot

def _sampler_flags() -> dict:
    """{argparse dest: OptionSpec} of every sampler option with command-line flags (the option
    table's `flags`). Every default is None: the model file's (or the bundle's) stored defaults
    apply unless a flag is given."""
    from mpdiffuser.config import OPTION_SPECS

    return {spec.flags.split()[0][2:].replace("-", "_"): spec for spec in OPTION_SPECS if spec.flags}


def _add_sampler_args(p: argparse.ArgumentParser, exclude: tuple[str, ...] = (), only: tuple[str, ...] = ()) -> None:
    """The sampler flags, but those of options in `exclude` (or only those in `only`)."""
    for dest, spec in _sampler_flags().items():
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


def _seed(text: str) -> int:
    """A --seed value: an integer in [0, 2^63) (episode starts and plan noise derive from it)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^63), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from mpdiffuser.config import (ARCHITECTURES, AT_ONCE_MODES, BATCHES, CAPTURE_MODES, PRECISION_NAMES, ModelConfig,
                                   SamplerOptions, TrainConfig)
    from mpdiffuser.control.tune import VALIDATION_SEED
    from mpdiffuser.data.generate import KINDS
    from mpdiffuser.demo import DemoConfig
    from mpdiffuser.envs import SUPPORTED
    from mpdiffuser.models.bundle import MODEL_NAMES
    from mpdiffuser.recipes import recipe

    from mpdiffuser import __version__

    parser = argparse.ArgumentParser(prog="mpdiffuser", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"mpdiffuser {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (they are off anyway when the output "
                                                                 "is not a terminal)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser = functools.partial(commands.add_parser, formatter_class=HelpFormatter)
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
    convert.set_defaults(func=_cmd_data)

    gen = commands.add_parser("generate-data", help="generate a dataset locally", description=_cmd_generate.__doc__)
    gen.add_argument("--env", default="Hopper-v5",
                     help=f"robot: {', '.join(SUPPORTED)} or any registered gymnasium environment with 1-D Box "
                          "observations and actions (InvertedDoublePendulum-v5, Swimmer-v5, Reacher-v5, ...)")
    gen.add_argument("--kind", default="medium", choices=KINDS, help="what behaviour makes the data")
    gen.add_argument("--transitions", type=int, default=100_000, help="transitions to roll out")
    gen.add_argument("--policy-steps", type=int, default=30_000, help="SAC steps of the medium behaviour policy")
    gen.add_argument("--expert-steps", type=int, default=200_000, help="SAC steps of the expert policy")
    gen.add_argument("--constrained", action="store_true", help="record velocity costs (DSRL-style; --kind mixed always does)")
    gen.add_argument("--cost-penalty", type=float, default=None,
                     help="mixed: the cautious policy trains on reward - this x cost (default 1)")
    gen.add_argument("--cautious-steps", type=int, default=None,
                     help="mixed: SAC steps of the cautious policy (default: --policy-steps)")
    gen.add_argument("--velocity-limit", type=float, default=None,
                     help="data with costs: the speed limit in m/s (default: DSRL's for the robot)")
    gen.add_argument("--seed", type=_seed, default=0, help="seed of the policy training and the rollouts")
    gen.add_argument("--out", default="data", help="output directory (datasets and cached policies)")
    gen.add_argument("--policy-dir", default=None,
                     help="where SAC behaviour policies are cached (default OUT/policies)")
    gen.add_argument("--minari-id", default=None, help="also write a local Minari dataset with this id (ns/name-v0)")
    gen.set_defaults(func=_cmd_generate)

    train = commands.add_parser("train", help="train planner, dynamics and ranker", description=_cmd_train.__doc__)
    train.add_argument("--bundle", required=True, help="model bundle directory (created if missing)")
    train.add_argument("--data", action="extend", nargs="+", required=True,
                       help="task dataset(s) (.hdf5, .npz, minari:<id>)")
    train.add_argument("--extra-data", action="extend", nargs="+", default=None,
                       help="more data for the dynamics and ranker models only (random actions, say)")
    train.add_argument("--model", default="all", choices=["all", *MODEL_NAMES], help="which model(s) to train")
    train.add_argument("--fine-tune", action="store_true", help="start from the bundle's existing weights")
    train.add_argument("--recipe", default="default", choices=["default", "authors"],
                       help="training, model and sampler defaults: ours, chosen by measurement, or the paper code's "
                            "(K = 100, epsilon, 1M steps at batch 64; tau = 1e-3, N = 1, w = 2, g = 1.1); "
                            "the flags below override it")
    t, authors = TrainConfig(), recipe("authors").train

    def recipe_default(field: str) -> str:
        show = lambda v: f"{v:,}" if isinstance(v, int) else f"{v:g}"  # noqa: E731
        return f"(default {show(getattr(t, field))}; recipe authors {show(getattr(authors, field))})"

    train.add_argument("--steps", type=int, default=None, help=f"training steps per model {recipe_default('steps')}")
    train.add_argument("--batch-size", type=int, default=None,
                       help=f"global batch size, split over torchrun's processes {recipe_default('batch_size')}")
    train.add_argument("--lr", type=float, default=None, help=f"AdamW learning rate {recipe_default('learning_rate')}")
    train.add_argument("--checkpoint-every", type=int, default=None,
                       help=f"steps between checkpoints {recipe_default('checkpoint_every')}")
    train.add_argument("--ema-every", type=int, default=None, help=f"steps between EMA updates {recipe_default('ema_every')}")
    train.add_argument("--seed", type=_seed, default=None, help=f"training seed {recipe_default('seed')}")
    train.add_argument("--env", default=None,
                       help="environment id recorded in the bundle (default: the one the data name, if any)")
    train.add_argument("--seeds", type=_seed, nargs="+", default=None,
                       help="several training seeds, one bundle each (BUNDLE-s<seed>), trained at once on a GPU")
    train.add_argument("--action-weight", type=float, default=None,
                       help=f"planner: loss weight of the first action u_0, as Diffuser and the authors "
                            f"{recipe_default('action_weight')}")
    train.add_argument("--validate-every", type=int, default=None,
                       help="planner and dynamics: validate on held-out episodes (5%%) every this many steps, "
                            "written to the loss log (default 0: no validation, no held-out data)")
    train.add_argument("--export-at", type=int, action="extend", nargs="+", default=None,
                       help="also export BUNDLE/model-<n>.safetensors with planner and dynamics at each of these "
                            "steps (<= --steps), for tune --model-file to pick the training length")
    train.add_argument("--force", action="store_true",
                       help="start over: delete the models' checkpoints (with --model all, the bundle's settings too)")
    train.add_argument("--device", default="auto", help="auto (a GPU when torch sees one), cpu, cuda or cuda:<i>")
    train.add_argument("--precision", default=PRECISION_NAMES[0], choices=PRECISION_NAMES,
                       help="fp32 (exact, bit-reproducible), tf32 (TF32 tensor cores and cuDNN autotuning on a GPU), "
                            "bf16 or fp16 autocast of forward and loss (fp16 with loss scaling)")
    train.add_argument("--compile", action="store_true", help="torch.compile the networks")
    train.add_argument("--capture", default=CAPTURE_MODES[0], choices=CAPTURE_MODES,
                       help="on a GPU, replay each training step as one CUDA graph where it can be (auto: one "
                            "process, batches on the device, not fp16 or --compile), or never (off)")
    train.add_argument("--at-once", default=AT_ONCE_MODES[0], choices=AT_ONCE_MODES,
                       help="train the bundle's models at the same time, a thread and a CUDA stream each (auto: on a "
                            "GPU in one process); the weights are those of one after another")
    train.add_argument("--batches", default=BATCHES[0], choices=BATCHES,
                       help="where each step's batch is drawn: host (NumPy, copied over), device (the data on the "
                            "training device, drawn there), auto (device on a GPU, host on the CPU)")
    train.add_argument("--log-every", type=int, default=50, help="steps per row of the CSV loss log")
    train.add_argument("--no-tensorboard", action="store_true",
                       help="do not write TensorBoard events even when tensorboard is installed")
    m = ModelConfig()
    train.add_argument("--horizon", type=int, default=None, help=f"H, window length (new bundles only; default {m.horizon})")
    train.add_argument("--diffusion-steps", type=int, default=None,
                       help=f"K, denoising steps (new bundles only; default {m.num_steps}; recipe authors "
                            f"{recipe('authors').model.get('num_steps', m.num_steps)})")
    train.add_argument("--width", type=int, default=None,
                       help=f"hidden width (new bundles only; default {m.width}, or twice that when the window "
                            "H*(dx+du) is wider)")
    train.add_argument("--layers", type=int, default=None, help=f"hidden layers L (new bundles only; default {m.layers})")
    train.add_argument("--architecture", default=None, choices=ARCHITECTURES,
                       help=f"planner and dynamics network family (new bundles only; default {m.architecture}): "
                            "mlp runs on every backend; unet, the authors' temporal U-Net, on the torch backend")
    train.add_argument("--unet-dim", type=int, default=None,
                       help=f"unet: channels of the first level (default {m.unet_dim}; authors 128)")
    train.add_argument("--unet-mults", type=int, action="extend", nargs="+", default=None,
                       help=f"unet: channel multiples per level (default {' '.join(map(str, m.unet_mults))}; "
                            "authors 1 4 8)")
    train.add_argument("--unet-embed-dim", type=int, default=None,
                       help=f"unet: width of the x_0 and condition embeddings (default {m.unet_embed_dim}; authors 128)")
    train.add_argument("--prediction", default=None, choices=["sample", "epsilon"],
                       help=f"what the diffusion networks predict (new bundles only; default {m.prediction})")
    train.add_argument("--normalizer", default=None, choices=["minmax", "cdf"],
                       help=f"state and action normalizer (new bundles only; default {m.normalizer})")
    train.add_argument("--return-condition", default=None, choices=["authors", "minmax"],
                       help=f"return condition g (new bundles only; default {m.return_condition}; authors: "
                            "return-to-go with a fall penalty, over the best episode start)")
    train.set_defaults(func=_cmd_train)

    ev = commands.add_parser("eval", help="control an environment with trained models", description=_cmd_eval.__doc__)
    ev.add_argument("--bundle", default=None, help="model bundle directory")
    ev.add_argument("--model-file", default=None, help="exported .safetensors model file")
    ev.add_argument("--backend", default="torch", choices=["torch", "cpu", "cuda"],
                    help="torch: the PyTorch reference; cpu / cuda: the native core")
    ev.add_argument("--env", default=None,
                    help="environment id: a built-in robot or any registered gymnasium id whose spaces match the "
                         "model (default: the model's robot)")
    ev.add_argument("--episodes", type=int, default=5, help="evaluation episodes")
    ev.add_argument("--seed", type=_seed, default=0, help="episode i starts from seed + i (plans too)")
    ev.add_argument("--max-steps", type=int, default=None, help="steps per episode at most (default: the env's limit)")
    _add_sampler_args(ev, exclude=("cost_limit",))  # --budget sets it
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
    tu.add_argument("--backend", default="cpu", choices=["torch", "cpu", "cuda"],
                    help="torch: the PyTorch reference; cpu / cuda: the native core")
    tu.add_argument("--env", default=None, help="environment id (default: the model's robot)")
    tu.add_argument("--episodes", type=int, default=3, help="validation episodes per return target")
    tu.add_argument("--seed", type=_seed, default=VALIDATION_SEED,
                    help="first validation start (episode i starts from seed + i)")
    tu.add_argument("--max-steps", type=int, default=None, help="steps per episode at most (default: the env's limit)")
    tu.add_argument("--budget", type=float, default=None,
                    help="episode cost budget (cost-conditioned models): the highest return within it wins, or, "
                         "when no setting keeps it, the lowest cost")
    tu.add_argument("--velocity-limit", type=float, default=None,
                    help="with --budget: the speed limit in m/s the models were trained with (default: DSRL's)")
    _add_sampler_args(tu, exclude=("return_target", "cost_limit"))  # tune chooses g; --budget sets l
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
    co.add_argument("--backend", default="cpu", choices=["torch", "cpu", "cuda"],
                    help="torch: the PyTorch reference; cpu / cuda: the native core")
    co.add_argument("--threads", type=int, default=0, help="native CPU backend threads (0: every core)")
    co.add_argument("--episodes", type=int, default=1, help="episodes driven")
    co.add_argument("--seed", type=_seed, default=1000, help="episode i starts from seed + i")
    co.add_argument("--max-steps", type=int, default=1000, help="steps per episode at most")
    _add_sampler_args(co, only=("num_candidates", "guidance", "return_target"))
    co.add_argument("--json", default=None, help="write the results as JSON here")
    co.set_defaults(func=_cmd_consistency)

    ex = commands.add_parser("export", help="write a bundle as one .safetensors model file", description=_cmd_export.__doc__)
    ex.add_argument("--bundle", required=True, help="trained model bundle directory")
    ex.add_argument("--out", required=True, help="output .safetensors path")
    _add_sampler_args(ex)
    ex.set_defaults(func=_cmd_export)

    bench = commands.add_parser("bench", help="native vs reference plan latency", description=_cmd_bench.__doc__)
    bench.add_argument("--model-file", default=None, help="default: a default-size Hopper model with random weights")
    bench.add_argument("--architecture", default="mlp", choices=ARCHITECTURES,
                       help="the network family of the random-weight model (without --model-file)")
    bench.add_argument("--candidates", type=int, action="extend", nargs="+", default=None,
                       help=f"N values (default: {' '.join(map(str, BENCH_CANDIDATES))})")
    bench.add_argument("--backend", default="cpu", choices=["cpu", "cuda"],
                       help="the native backend timed against the PyTorch reference on the same device")
    bench.add_argument("--threads", type=int, default=None, help="CPU backend threads (default: every core)")
    bench.add_argument("--iters", type=int, default=30, help="timed plans per N")
    bench.add_argument("--warm-start-level", type=int, default=0,
                       help="also time warm-started plans from this level k_w (0: cold plans only)")
    bench.add_argument("--out", default=None, help="JSON results (default: runs/bench/<backend>_latency.json)")
    bench.set_defaults(func=_cmd_bench)

    experiment = commands.add_parser("experiment", help="run an experiment of the evaluation suite",
                                     description=_cmd_experiment.__doc__)
    experiment.add_argument("name", choices=["locomotion", "constrained", "dynamics", "quadruped"],
                            help="locomotion: D4RL-style scores; constrained: cost budgets; dynamics: changed "
                                 "physics, dynamics fine-tuned alone; quadruped: Ant real-time control")
    experiment.add_argument("--quick", action="store_true", help="small data and training: minutes on 2 cores")
    experiment.add_argument("--out", default=None, help="output directory (default runs/<name>[-quick])")
    experiment.add_argument("--policy-dir", default=None,
                            help="where SAC behaviour policies are cached, shared by experiments "
                                 "(default runs/policies[-quick])")
    experiment.add_argument("--env", action="extend", nargs="+", default=None,
                            help="robot(s) instead of the experiment's own")
    experiment.add_argument("--dataset", action="extend", nargs="+", default=None,
                            help="locomotion: your own D4RL/Minari dataset(s) (.hdf5, .npz, minari:<id>) instead of "
                                 "generated data")
    experiment.add_argument("--physics", action="extend", nargs="+", default=None,
                            help="dynamics: changed robot(s) as factors, e.g. mass=3 gear=0.4,friction=0.5 "
                                 "(default mass=1.5 friction=0.4 gear=0.6)")
    experiment.add_argument("--seeds", type=int, action="extend", nargs="+", default=None,
                            help="training seeds (locomotion, constrained, dynamics)")
    experiment.add_argument("--seed", type=_seed, default=None, help="seed (quadruped; dynamics: one training seed)")
    experiment.add_argument("--kind", action="extend", nargs="+", default=None,
                            choices=["medium", "medium-replay", "medium-expert"],
                            help="locomotion: dataset kind(s) instead of all three")
    experiment.add_argument("--policy-steps", type=int, default=None,
                            help="SAC steps of the (medium) behaviour policy: stronger data (default 30000)")
    experiment.add_argument("--expert-steps", type=int, default=None,
                            help="locomotion: SAC steps of the medium-expert data's expert policy (default 100000)")
    experiment.add_argument("--train-steps", type=int, default=None,
                            help="training steps of each diffusion model (locomotion, constrained: and of behaviour "
                                 "cloning)")
    experiment.add_argument("--episodes", type=int, default=None, help="evaluation episodes per method and seed")
    experiment.add_argument("--baselines", action="extend", nargs="+", default=None, choices=["iql", "td3+bc"],
                            help="locomotion: offline RL baselines from d3rlpy (install: scripts/install.sh --baselines)")
    experiment.add_argument("--baseline-steps", type=int, default=None,
                            help="locomotion: gradient steps of each baseline (default 100000)")
    experiment.add_argument("--baseline-seeds", type=int, action="extend", nargs="+", default=None,
                            help="locomotion: train the baselines with these of the --seeds only (default: all)")
    experiment.add_argument("--return-targets", type=float, action="extend", nargs="+", default=None,
                            help="locomotion: also run MPDiffuser and planner-only with the return target g "
                                 "of these that scores best in validation episodes (start states the test "
                                 "never uses), chosen per seed, e.g. 0.4 0.6 0.8 1; constrained: the same per "
                                 "budget, the best return within the budget")
    experiment.add_argument("--return-target", type=float, default=None,
                            help="g stored as the default of the experiment's model files, which the methods "
                                 "without 'g by validation' plan with (default: the sampler's, "
                                 f"{SamplerOptions.return_target:g})")
    experiment.add_argument("--validation-episodes", type=int, default=None,
                            help="locomotion, constrained: validation episodes per --return-targets value "
                                 "(default 3)")
    experiment.add_argument("--train-lengths", type=int, action="extend", nargs="+", default=None,
                            help="locomotion: with --return-targets, also run MPDiffuser and planner-only with the "
                                 "training steps of planner and dynamics (from these, snapshots of one run) and g "
                                 "that score best in validation episodes, e.g. 2000 3000 5000 10000")
    experiment.add_argument("--candidates", type=int, default=None,
                            help="N, candidates per plan (default 1: no ranking; more let the ranker choose)")
    experiment.add_argument("--width", type=int, default=None,
                            help="hidden width of planner and dynamics (default: 256, or 512 for robots whose window "
                                 "does not fit in 256)")
    experiment.add_argument("--action-weight", type=float, default=None,
                            help="the planner's loss weight on the executed first action u_0 (default 10, as "
                                 "Diffuser)")
    experiment.add_argument("--prediction", default=None, choices=["sample", "epsilon"],
                            help="what planner and dynamics model predict: the clean window (default, sample) or "
                                 "the noise (epsilon, the authors' target; the dynamics update matters more there)")
    experiment.add_argument("--cautious-steps", type=int, default=None,
                            help="constrained: SAC steps of the cautious behaviour policy (default: --policy-steps)")
    experiment.add_argument("--cost-penalty", type=float, default=None,
                            help="constrained: the cautious behaviour policy trains on reward - penalty * cost "
                                 "(default 1; larger: safer data)")
    experiment.add_argument("--velocity-limit", type=float, default=None,
                            help="constrained: the speed limit in m/s for data, cautious policy and evaluation "
                                 "(default: DSRL's per robot; lower it for robots too slow to pay cost at DSRL's)")
    experiment.add_argument("--finetune-steps", type=int, default=None,
                            help="dynamics: fine-tuning steps of the dynamics model on each changed robot "
                                 "(default 2000)")
    experiment.add_argument("--finetune-replay", type=float, default=None,
                            help="dynamics: fraction of the fine-tuning data drawn from the nominal robot's data "
                                 "(default 0: the changed robot's data alone)")
    experiment.add_argument("--shift-transitions", type=int, default=None,
                            help="dynamics: behaviour-policy transitions collected on each changed robot "
                                 "(default 10000; 5000 random-action ones are added)")
    experiment.add_argument("--hz", type=float, default=None, help="quadruped: control rate (default 50)")
    experiment.add_argument("--model-file", default=None,
                            help="quadruped: control this exported model file (no data, no training); "
                                 "--candidates sets N (default 8)")
    experiment.add_argument("--device", default="auto",
                            help="where the models train: auto (a GPU when torch sees one), cpu, cuda or cuda:<i>")
    experiment.add_argument("--threads", type=int, default=None,
                            help="native CPU backend threads (default: every core)")
    experiment.add_argument("--backend", default=None, choices=["auto", "cpu", "cuda", "torch"],
                            help="sampler backend (default: cpu; quadruped: auto, the fastest available)")
    experiment.set_defaults(func=_cmd_experiment)

    demo = commands.add_parser("demo", help="the end-to-end Hopper demo", description=_cmd_demo.__doc__)
    demo.add_argument("--out", default="runs/demo", help="output directory (data, models, results)")
    demo.add_argument("--episodes", type=int, default=DemoConfig.episodes, help="evaluation episodes per controller")
    demo.add_argument("--train-steps", type=int, default=DemoConfig.train_steps,
                      help="training steps of planner and dynamics model")
    demo.add_argument("--policy-steps", type=int, default=DemoConfig.policy_steps,
                      help="0: the shipped dataset (200k-step SAC data); N > 0: train a SAC policy N steps and make "
                           "the data here")
    demo.add_argument("--max-steps", type=int, default=DemoConfig.max_steps, help="steps per episode at most")
    demo.add_argument("--seed", type=_seed, default=DemoConfig.seed, help="seed of data, training and evaluation")
    demo.set_defaults(func=_cmd_demo)
    return parser


# Errors a user can act on: one line naming the file, option or key, exit code 2 (argparse's
# convention); `mpdiffuser --debug ...` shows the traceback instead.
USER_ERRORS = (ValueError, OSError, RuntimeError, ImportError,  # ImportError: an optional install missing
               FloatingPointError)  # a plan or a loss that came out NaN


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
