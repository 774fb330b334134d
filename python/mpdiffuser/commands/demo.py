"""The demo command: the end-to-end Hopper demo."""

from __future__ import annotations

import argparse

from mpdiffuser.commands.common import seed_type


def _cmd_demo(args: argparse.Namespace) -> int:
    """End to end: generate Hopper data, train the models, control Hopper; print scores and latency."""
    from mpdiffuser.demo import DemoConfig, run_demo

    config = DemoConfig(out_dir=args.out, episodes=args.episodes, train_steps=args.train_steps,
                        policy_steps=args.policy_steps, max_steps=args.max_steps, seed=args.seed)
    run_demo(config)
    return 0


def register(commands) -> None:
    from mpdiffuser.demo import DemoConfig

    demo = commands.add_parser("demo", help="the end-to-end Hopper demo", description=_cmd_demo.__doc__)
    demo.add_argument("--out", default="runs/demo", help="output directory (data, models, results)")
    demo.add_argument("--episodes", type=int, default=DemoConfig.episodes, help="evaluation episodes per controller")
    demo.add_argument("--train-steps", type=int, default=DemoConfig.train_steps,
                      help="training steps of planner and dynamics model")
    demo.add_argument("--policy-steps", type=int, default=DemoConfig.policy_steps,
                      help="0: the shipped dataset (200k-step SAC data); N > 0: train a SAC policy N steps and make "
                           "the data here")
    demo.add_argument("--max-steps", type=int, default=DemoConfig.max_steps, help="steps per episode at most")
    demo.add_argument("--seed", type=seed_type, default=DemoConfig.seed, help="seed of data, training and evaluation")
    demo.set_defaults(func=_cmd_demo)
