"""benchmarks/diagnostics/planner_spread.py on the tiny toy models: the windows it cuts are the
data's, and its report measures what it says."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from mpdiffuser.export import export_model
from tests.python.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "diagnostics" / "planner_spread.py"


def _module():
    spec = importlib.util.spec_from_file_location("planner_spread", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_windows_are_consecutive_data(toy_bundle):
    from mpdiffuser.models.bundle import BundleSpec

    directory, data = toy_bundle
    spec = BundleSpec.load(directory)
    x0, tau = _module().windows(data, spec, 25, np.random.default_rng(1))
    H, dx = spec.model.horizon, spec.state_dim
    assert x0.shape == (25, dx) and tau.shape == (25, H, dx + spec.action_dim)
    for i in range(25):  # find each window in some episode: x_0, then H rows of [x_{t+1}, u_t]
        start = spec.states.unnormalize(x0[i].numpy())
        found = False
        for e in data.episodes:
            hits = np.flatnonzero(np.abs(e.observations[:-1] - start).max(axis=1) < 1e-4)
            for t in hits:
                if t + H <= len(e.actions):
                    states = spec.states.normalize(e.observations[t + 1:t + H + 1])
                    actions = spec.actions.normalize(e.actions[t:t + H])
                    found |= np.allclose(tau[i].numpy(), np.concatenate([states, actions], -1), atol=1e-5)
        assert found, f"window {i} is not a stretch of the data"


def test_report(toy_bundle, tmp_path):
    directory, data = toy_bundle
    model_file = export_model(directory, tmp_path / "toy.safetensors")
    data_file = data.save_hdf5(tmp_path / "toy.hdf5")
    out = tmp_path / "spread.json"
    run = subprocess.run([sys.executable, str(SCRIPT), str(model_file), str(data_file), "--windows", "50",
                          "--states", "5", "--samples", "4", "--json", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    levels = [row["k"] for row in report["one_step"]]
    assert levels == sorted(set(levels)) and levels[0] == 1 and levels[-1] == 5  # toy K = 5
    # At k = 1 the input is the data plus little noise; at k = K it is almost pure noise.
    assert report["one_step"][0]["states"] < report["one_step"][-1]["states"]
    # The no-change guess is a property of the data alone: recompute it from the same windows.
    from mpdiffuser.models.bundle import BundleSpec

    spec = BundleSpec.load(directory)
    x0, tau = _module().windows(data, spec, 50, np.random.default_rng(0))
    assert report["chain"]["x1_no_change"] == pytest.approx(float((x0 - tau[:, 0, :spec.state_dim]).square()
                                                                  .mean().sqrt()), rel=1e-5)
    assert report["spread"]["states"] == 5 and report["spread"]["samples"] == 4
    assert report["spread"]["within_state"] > 0.0  # different seeds give different samples
    assert "u_0 spread within a state" in run.stdout
    bad = subprocess.run([sys.executable, str(SCRIPT), str(model_file), str(data_file), "--samples", "1"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--samples" in bad.stderr
