"""Statistics shared by the experiments, and the experiment command's argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from mpdiffuser import cli
from mpdiffuser.experiments.common import mean_stderr, summarize


def test_statistics():
    assert mean_stderr([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0 / np.sqrt(3)))
    assert mean_stderr([5.0]) == (5.0, 0.0)
    rows = [{"t": "a", "m": "x", "s": 1.0}, {"t": "a", "m": "x", "s": 3.0}, {"t": "b", "m": "x", "s": 7.0}]
    out = summarize(rows, ("t", "m"), ("s",))
    assert [(e["t"], e["n"], e["s_mean"]) for e in out] == [("a", 2, 2.0), ("b", 1, 7.0)]
    assert out[0]["s_stderr"] == pytest.approx(1.0)


def test_experiment_cli_rejects_options_of_other_experiments():
    with pytest.raises(SystemExit, match="--hz applies to the quadruped"):
        cli.main(["experiment", "locomotion", "--quick", "--hz", "20"])
    with pytest.raises(SystemExit, match="--dataset applies to the locomotion"):
        cli.main(["experiment", "constrained", "--dataset", "x.hdf5"])
    with pytest.raises(SystemExit, match="--physics applies to the dynamics"):
        cli.main(["experiment", "locomotion", "--physics", "mass=2"])
    with pytest.raises(SystemExit, match="not a number"):
        cli.main(["experiment", "dynamics", "--physics", "mass=x"])
    with pytest.raises(SystemExit, match="one --env"):
        cli.main(["experiment", "dynamics", "--env", "Hopper-v5", "--env", "Walker2d-v5"])
