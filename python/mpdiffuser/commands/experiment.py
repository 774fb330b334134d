"""The experiment command: the evaluation suite's experiments. Their flags are built from the
experiments' config dataclasses: a flag that sets a field applies to the experiments whose config
has the field, with that config's default and the field's comment as its help."""

from __future__ import annotations

import argparse
import dataclasses
import importlib

from mpdiffuser.commands.common import field_docs, field_type, seed_type, show

# name -> (module, config class, run function)
EXPERIMENTS = {
    "locomotion": ("mpdiffuser.experiments.locomotion", "LocomotionConfig", "run_locomotion"),
    "constrained": ("mpdiffuser.experiments.constrained", "ConstrainedConfig", "run_constrained"),
    "dynamics": ("mpdiffuser.experiments.dynamics_shift", "DynamicsShiftConfig", "run_dynamics_shift"),
    "quadruped": ("mpdiffuser.experiments.quadruped", "QuadrupedConfig", "run_quadruped"),
    "scarce": ("mpdiffuser.experiments.scarce", "ScarceConfig", "run_scarce"),
    "any-robot": ("mpdiffuser.experiments.any_robot", "AnyRobotConfig", "run_any_robot"),
    "recipes": ("mpdiffuser.experiments.recipes", "RecipesConfig", "run_recipes"),
}
# The flags that set one config field (flag -> field), and the choices of those that have them.
FIELD_FLAGS = {
    "out": "out_dir", "policy_dir": "policy_dir", "seeds": "seeds", "kind": "kinds", "dataset": "datasets",
    "policy_steps": "policy_steps", "expert_steps": "expert_steps", "train_steps": "train_steps",
    "ranker_steps": "ranker_steps",
    "episodes": "episodes", "baselines": "baselines", "baseline_steps": "baseline_steps",
    "baseline_seeds": "baseline_seeds", "return_targets": "return_targets", "return_target": "return_target",
    "validation_episodes": "validation_episodes", "train_lengths": "train_lengths", "candidates": "candidates",
    "width": "width", "action_weight": "action_weight", "prediction": "prediction",
    "cautious_steps": "cautious_steps", "cost_penalty": "cost_penalty", "velocity_limit": "velocity_limit",
    "finetune_steps": "finetune_steps", "finetune_replay": "finetune_replay",
    "shift_transitions": "shift_transitions", "hz": "control_hz", "model_file": "model_file", "threads": "threads",
    "backend": "backend", "diffusion_baselines": "diffusion_baselines", "value_scales": "value_scales",
    "consistency_steps": "consistency_steps", "extra": "extra", "expert_episodes": "expert_episodes",
    "adapt_data": "adapt_data", "recipes": "recipes", "option_grid": "option_grid",
    "architecture": "architecture", "weights": "weights", "max_steps": "max_steps",
}
def choices() -> dict:
    """The flags that take one of a set of values, each set read from its home."""
    from mpdiffuser.config import ARCHITECTURES, BACKENDS, PREDICTIONS, WEIGHT_FORMATS
    from mpdiffuser.experiments.dynamics_shift import ADAPT_DATA
    from mpdiffuser.experiments.locomotion import BASELINE_METHODS, DIFFUSION_METHODS, LocomotionConfig
    from mpdiffuser.experiments.recipes import GRIDS

    return {"kinds": list(LocomotionConfig.kinds), "baselines": list(BASELINE_METHODS),
            "diffusion_baselines": list(DIFFUSION_METHODS), "prediction": list(PREDICTIONS),
            "backend": ["auto", *BACKENDS], "adapt_data": list(ADAPT_DATA), "option_grid": list(GRIDS),
            "architecture": list(ARCHITECTURES), "weights": list(WEIGHT_FORMATS)}
POSITIVE = ("cost_penalty", "action_weight")  # flags that must be > 0; these >= 1:
AT_LEAST_ONE = ("policy_steps", "expert_steps", "train_steps", "ranker_steps", "episodes", "max_steps", "candidates",
                "finetune_steps",
                "shift_transitions", "width", "baseline_steps", "validation_episodes", "cautious_steps")


def configs() -> dict:
    """{experiment: its config class}."""
    return {name: getattr(importlib.import_module(module), cls) for name, (module, cls, _) in EXPERIMENTS.items()}


def takers(field: str) -> list[str]:
    """The experiments whose config has `field`."""
    return [name for name, cls in configs().items() if field in {f.name for f in dataclasses.fields(cls)}]


def _cmd_experiment(args: argparse.Namespace) -> int:
    """Run one experiment of the evaluation suite; --quick runs a minutes-long version of it.

    quadruped: Ant real-time control at a fixed rate. locomotion: Hopper, Walker2d, HalfCheetah
    medium / medium-replay / medium-expert, MPDiffuser vs planner-only vs behaviour cloning, plus
    score vs lambda and vs the dynamics schedule. constrained: velocity-constrained robots with
    episode cost budgets 10, 20, 40. dynamics: changed mass, friction and actuator gain, the
    dynamics model fine-tuned alone. scarce: a few expert episodes with plentiful other data.
    any-robot: robots no experiment names. recipes: training recipes x sampler option sets (the
    sweep behind the defaults). Each writes JSON, CSV and PNG files to its output directory.
    """
    from mpdiffuser.envs import PhysicsChange
    from mpdiffuser.training.runtime import resolve_device

    for flag, field in FIELD_FLAGS.items():
        names = takers(field)
        if getattr(args, flag) is not None and args.name not in names:
            raise SystemExit(f"error: --{flag.replace('_', '-')} applies to the {' and '.join(names)} "
                             f"experiment{'s' if len(names) > 1 else ''} only")
    for flag in POSITIVE:
        if getattr(args, flag) is not None and not getattr(args, flag) > 0:
            raise SystemExit(f"error: --{flag.replace('_', '-')} must be > 0, got {getattr(args, flag)}")
    for flag in AT_LEAST_ONE:
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise SystemExit(f"error: --{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    module, cls, run = EXPERIMENTS[args.name]
    Config, run = configs()[args.name], getattr(importlib.import_module(module), run)
    fields = {f.name for f in dataclasses.fields(Config)}
    changes = {field: tuple(value) if isinstance(value, list) else value
               for flag, field in FIELD_FLAGS.items() if (value := getattr(args, flag)) is not None}
    changes["device"] = str(resolve_device(args.device))
    if args.train_steps is not None and "bc_steps" in fields:  # behaviour cloning trains as long
        changes["bc_steps"] = args.train_steps
    if args.env:
        if "envs" in fields:
            changes["envs"] = tuple(args.env)
        elif len(args.env) > 1:
            raise SystemExit(f"error: the {args.name} experiment takes one --env")
        else:
            changes["env_id"] = args.env[0]
    if args.physics:
        if args.name != "dynamics":
            raise SystemExit("error: --physics applies to the dynamics experiment only")
        try:
            changes["shifts"] = tuple(PhysicsChange.parse(p) for p in args.physics)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
    if args.seed is not None:
        if args.name == "dynamics" and args.seeds:
            raise SystemExit("error: give the dynamics experiment --seeds or --seed, not both")
        if "seed" in fields:
            changes["seed"] = args.seed
        elif args.name == "dynamics":
            changes["seeds"] = (args.seed,)
        else:
            raise SystemExit("error: --seed applies to the quadruped and dynamics experiments only (--seeds: "
                             "training seeds)")
    if changes.get("backend") == "auto" and args.name != "quadruped":  # the quadruped experiment resolves it itself
        from mpdiffuser.experiments.quadruped import fastest_backend

        changes["backend"] = fastest_backend()
    config = Config.quick(**changes) if args.quick else Config(**changes)
    if args.ray is not None:
        run(config, ray_address=args.ray)
    else:
        run(config)
    return 0


def register(commands) -> None:
    experiment = commands.add_parser("experiment", help="run an experiment of the evaluation suite",
                                     description=_cmd_experiment.__doc__)
    experiment.add_argument("name", choices=list(EXPERIMENTS),
                            help="locomotion: D4RL-style scores; constrained: cost budgets; dynamics: changed "
                                 "physics, dynamics fine-tuned alone; quadruped: Ant real-time control; scarce: "
                                 "scarce expert data; any-robot: any gymnasium robot; recipes: training recipes x "
                                 "sampler options")
    experiment.add_argument("--quick", action="store_true", help="small data and training: minutes on 2 cores")
    experiment.add_argument("--env", action="extend", nargs="+", default=None,
                            help="robot(s) instead of the experiment's own (dynamics, quadruped: one)")
    shifts = " ".join(",".join(f"{n}={getattr(c, n):g}" for n in ("mass", "friction", "gear") if getattr(c, n) != 1.0)
                      for c in configs()["dynamics"].shifts)
    experiment.add_argument("--physics", action="extend", nargs="+", default=None,
                            help=f"dynamics: changed robot(s) as factors, e.g. mass=3 gear=0.4,friction=0.5 "
                                 f"(default {shifts})")
    experiment.add_argument("--seed", type=seed_type, default=None, help="seed (quadruped; dynamics: one training seed)")
    experiment.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                            help="run the experiment's cells (every experiment is a grid) as Ray tasks on a running "
                                 "cluster (auto: the one this node belongs to; HOST:PORT: its head); needs the ray "
                                 "extra")
    experiment.add_argument("--device", default="auto",
                            help="where the models train: auto (a GPU when torch sees one), cpu, cuda or cuda:<i>")
    by_name = configs()
    sets = choices()
    for flag, field in FIELD_FLAGS.items():
        names = takers(field)
        owner = by_name[names[0]]
        kind, several = field_type(owner, field)
        defaults = {name: getattr(by_name[name](), field) for name in names}
        shown = (show(next(iter(defaults.values()))) if len(set(map(repr, defaults.values()))) == 1 else
                 ", ".join(f"{name} {show(value)}" for name, value in defaults.items()))
        where = "" if len(names) == len(EXPERIMENTS) else ", ".join(names) + ": "
        text = field_docs(owner).get(field, "").replace("%", "%%")
        options = {"default": None, "help": f"{where}{text} (default: {shown})"}
        if kind in (int, float):
            options["type"] = kind
        if field in sets:
            options["choices"] = sets[field]
        if several:
            options |= {"action": "extend", "nargs": "+"}
        experiment.add_argument("--" + flag.replace("_", "-"), dest=flag, **options)
    experiment.set_defaults(func=_cmd_experiment)
