"""The experiment command: the evaluation suite's experiments."""

from __future__ import annotations

import argparse

from mpdiffuser.commands.common import seed_type


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


def register(commands) -> None:
    from mpdiffuser.config import SamplerOptions

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
    experiment.add_argument("--seed", type=seed_type, default=None, help="seed (quadruped; dynamics: one training seed)")
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

