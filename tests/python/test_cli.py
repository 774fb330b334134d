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
