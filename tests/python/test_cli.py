"""The command line: --help everywhere and the build self-check."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mpdiffuser import cli


def test_info_self_check_passes(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "self-check passed" in out and "native == numpy" in out
    assert "CUDA backend" in out


@pytest.mark.parametrize("command", [[], ["info"]])
def test_help(command):
    done = subprocess.run([sys.executable, "-m", "mpdiffuser.cli", *command, "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: mpdiffuser" in done.stdout


def test_unknown_command_fails():
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-command"])
    assert exit_info.value.code == 2


def test_every_option_is_described_with_its_default():
    """Each option of each command has a help text; a set default is shown in it."""
    import argparse

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"mpdiffuser {name} {action.option_strings or action.dest}: no help text"
            if action.default not in (None, False) and action.option_strings:
                assert "default" in cli.HelpFormatter("x")._get_help_string(action), (name, action.dest)
        assert "(default: None)" not in text, name
    ev = parser.parse_args(["eval", "--model-file", "m"])
    assert ev.env is None  # the model's robot
    exp = parser.parse_args(["experiment", "locomotion", "--env", "Hopper-v5", "Walker2d-v5", "--env", "Ant-v5"])
    assert exp.env == ["Hopper-v5", "Walker2d-v5", "Ant-v5"]  # repeated values: either spelling
    # Any registered environment with Box spaces is a robot (tests/python/test_any_robot.py).
    assert parser.parse_args(["generate-data", "--env", "Pendulum-v1"]).env == "Pendulum-v1"


def test_quiet_turns_progress_bars_off(monkeypatch):
    import os

    monkeypatch.setenv("TQDM_DISABLE", "0")  # restored (unset) after the test
    assert cli.main(["--quiet", "info"]) == 0
    assert os.environ["TQDM_DISABLE"] == "1"


def test_a_missing_optional_install_is_one_line_and_exit_2(monkeypatch, capsys):
    """--baselines without d3rlpy: the install command in one line, before any training."""
    from mpdiffuser import cli
    from mpdiffuser.control import baselines

    def missing():
        raise ImportError(baselines.INSTALL_HINT)

    monkeypatch.setattr(baselines, "require_d3rlpy", missing)
    assert cli.main(["experiment", "locomotion", "--quick", "--baselines", "iql"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mpdiffuser experiment: error: " + baselines.INSTALL_HINT]


def test_experiment_passes_the_return_targets_to_locomotion_only(monkeypatch, capsys):
    """--return-targets and --validation-episodes reach the locomotion config; another experiment
    refuses them in one line before any work."""
    from mpdiffuser.experiments import locomotion

    seen = []
    monkeypatch.setattr(locomotion, "run_locomotion", lambda config: seen.append(config))
    assert cli.main(["experiment", "locomotion", "--quick", "--backend", "cpu", "--return-targets", "0.4", "1",
                     "--validation-episodes", "2"]) == 0
    assert seen[0].return_targets == (0.4, 1.0) and seen[0].validation_episodes == 2
    capsys.readouterr()
    assert cli.main(["experiment", "dynamics", "--return-targets", "0.4"]) == 2
    assert "--return-targets applies to the locomotion and constrained experiments only" in capsys.readouterr().err
    assert cli.main(["experiment", "locomotion", "--validation-episodes", "0"]) == 2
    assert "--validation-episodes must be >= 1" in capsys.readouterr().err
    assert len(seen) == 1


def test_experiment_return_target_reaches_every_experiment_and_a_bad_one_fails_before_work(monkeypatch, capsys):
    """--return-target: the g stored in the experiment's model files (locomotion and dynamics here)."""
    from mpdiffuser.experiments import dynamics_shift, locomotion

    seen = []
    monkeypatch.setattr(locomotion, "run_locomotion", lambda config: seen.append(config))
    monkeypatch.setattr(dynamics_shift, "run_dynamics_shift", lambda config: seen.append(config))
    assert cli.main(["experiment", "locomotion", "--quick", "--backend", "cpu", "--return-target", "1.1"]) == 0
    assert cli.main(["experiment", "dynamics", "--quick", "--backend", "cpu", "--return-target", "0.9"]) == 0
    assert [c.sampler_options.return_target for c in seen] == [1.1, 0.9]
    capsys.readouterr()
    assert cli.main(["experiment", "locomotion", "--backend", "cpu", "--return-target", "nan"]) == 2
    assert "return_target must be a finite number" in capsys.readouterr().err  # the option table's message
    assert len(seen) == 2


def test_generate_data_takes_the_mixed_kinds_options_for_mixed_only(monkeypatch, capsys, tmp_path):
    from mpdiffuser.data import generate as generate_module

    assert cli.main(["generate-data", "--kind", "medium", "--cautious-steps", "5"]) == 2
    assert "apply to --kind mixed only" in capsys.readouterr().err
    seen = []

    def stop_after_seeing(config, out, policy_dir=None):
        seen.append((config, policy_dir))
        raise KeyboardInterrupt  # the command ends here, as on Ctrl-C

    monkeypatch.setattr(generate_module, "generate", stop_after_seeing)
    assert cli.main(["generate-data", "--kind", "mixed", "--constrained", "--policy-steps", "900", "--cautious-steps", "300",
              "--cost-penalty", "2.5", "--policy-dir", str(tmp_path)]) == 130
    config, policy_dir = seen[0]
    assert (config.cautious_policy_steps, config.cost_penalty, policy_dir) == (300, 2.5, str(tmp_path))
    # mixed data always have costs; --velocity-limit reaches the config, and needs data with costs
    assert cli.main(["generate-data", "--kind", "mixed", "--velocity-limit", "1.5", "--env", "Ant-v5"]) == 130
    assert seen[1][0].constrained and seen[1][0].velocity_limit == 1.5 and seen[1][0].name == "ant-mixed-cost-v1.5-s0"
    assert cli.main(["generate-data", "--kind", "medium", "--velocity-limit", "1.5"]) == 2
    assert "--velocity-limit applies to data with costs only" in capsys.readouterr().err


def test_the_velocity_limit_belongs_to_constrained_runs_only(capsys):
    assert cli.main(["experiment", "locomotion", "--velocity-limit", "1"]) == 2
    assert "--velocity-limit applies to the constrained experiment only" in capsys.readouterr().err
    assert cli.main(["eval", "--model-file", "missing.safetensors", "--velocity-limit", "1"]) == 2
    assert "--velocity-limit applies with --budget only" in capsys.readouterr().err


def test_config_flags_come_from_the_configs():
    """The flags that set a config field: every one names a field of its configs, has the field's
    comment as its help and shows the config's default; which experiments take a flag is the set
    of configs that have the field (no hand-written table to drift)."""
    import argparse
    import dataclasses

    from mpdiffuser.commands import experiment, train
    from mpdiffuser.commands.common import field_docs
    from mpdiffuser.config import ModelConfig, TrainConfig
    from mpdiffuser.experiments.quadruped import QuadrupedConfig

    for flags, cls in ((train.TRAIN_FLAGS, TrainConfig), (train.MODEL_FLAGS, ModelConfig)):
        for field in flags.values():
            assert field in {f.name for f in dataclasses.fields(cls)} and field_docs(cls).get(field), field
    configs = experiment.configs()
    for flag, field in experiment.FIELD_FLAGS.items():
        takers = experiment.takers(field)
        assert takers, flag
        assert all(field_docs(configs[name]).get(field) for name in takers), (flag, "a field without a comment")
    assert experiment.takers("control_hz") == ["quadruped"] and len(experiment.takers("episodes")) == len(experiment.EXPERIMENTS)
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    hz = next(a for a in commands.choices["experiment"]._actions if a.dest == "hz")
    assert f"default: {QuadrupedConfig.control_hz}" in hz.help and hz.help.startswith("quadruped: ")
    steps = next(a for a in commands.choices["train"]._actions if a.dest == "steps")
    assert f"{TrainConfig.steps}" in steps.help and field_docs(TrainConfig)["steps"] in steps.help
