"""The demo command: the end-to-end Hopper demo, its flags built from DemoConfig's fields."""

from __future__ import annotations

import argparse

from mpdiffuser.commands.common import add_field_flags, given_fields, seed_type, show

DEMO_FLAGS = {"out": "out_dir", "episodes": "episodes", "train_steps": "train_steps", "policy_steps": "policy_steps",
              "max_steps": "max_steps", "seed": "seed"}  # flag -> DemoConfig field


def _cmd_demo(args: argparse.Namespace) -> int:
    """End to end: generate Hopper data, train the models, control Hopper; print scores and latency."""
    from mpdiffuser.demo import DemoConfig, run_demo

    run_demo(DemoConfig(**given_fields(args, DEMO_FLAGS)))
    return 0


def register(commands) -> None:
    from mpdiffuser.demo import DemoConfig

    demo = commands.add_parser("demo", help="the end-to-end Hopper demo", description=_cmd_demo.__doc__)
    add_field_flags(demo, DemoConfig, DEMO_FLAGS, lambda field: f"(default {show(getattr(DemoConfig, field))})",
                    types_={"seed": seed_type})
    demo.set_defaults(func=_cmd_demo)
