"""The command line's commands, one module per group; each registers its subcommands' parsers
(`register(commands)`) with the function that runs them (mpdiffuser/cli.py dispatches)."""

from mpdiffuser.commands import bench, control, demo, experiment, setup, train

GROUPS = (setup, train, control, bench, experiment, demo)  # in the order `mpdiffuser --help` lists them
