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


def _resources():
    path = REPO_ROOT / "benchmarks" / "diagnostics" / "cuda_kernel_resources.py"
    spec = importlib.util.spec_from_file_location("cuda_kernel_resources", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kernel_resources_parse_ptxas_and_find_local_traffic_in_loops():
    """cuda_kernel_resources.py reads ptxas -v per kernel and counts local loads and stores inside
    innermost multiply-add loops only (a spill outside them, or in a loop without multiply-adds,
    does not count there)."""
    m = _resources()
    ptxas = m.ptxas_report(
        "ptxas info    : Compiling entry function '_Z11plan_kernelv' for 'sm_90'\n"
        "ptxas info    : Function properties for _Z11plan_kernelv\n"
        "    184 bytes stack frame, 236 bytes spill stores, 316 bytes spill loads\n"
        "ptxas info    : Used 128 registers, used 1 barriers, 184 bytes cumulative stack size\n")
    assert ptxas == {"_Z11plan_kernelv": {"stack_bytes": 184, "spill_store_bytes": 236, "spill_load_bytes": 316,
                                          "registers": 128}}

    def op(address, text):
        return f"        /*{address:04x}*/                   {text} ;"

    code = ["\tFunction : _Z11plan_kernelv",
            op(0x00, "LDL R1, [R1+0x8]"),                       # outside any loop
            op(0x10, "FFMA R2, R3, R4, R2"), op(0x20, "FFMA R2, R3, R4, R2"),   # a multiply-add loop
            op(0x30, "STL [R1+0x4], R5"), op(0x40, "FFMA R2, R3, R4, R2"), op(0x50, "FFMA R2, R3, R4, R2"),
            op(0x60, "@P0 BRA 0x10"),
            op(0x70, "LDL R6, [R1+0x8]"), op(0x80, "IADD3 R7, R7, 0x1, RZ"),  # a loop without multiply-adds
            op(0x90, "@P1 BRA 0x70"),
            op(0xa0, "EXIT")]
    r = m.local_traffic("header\n" + "\n".join(code))["_Z11plan_kernelv"]
    assert r["local_accesses"] == 3 and r["multiply_add_loops"] == 1 and r["local_accesses_in_them"] == 1
    assert r["loops_with_local"] == [{"at": "0x10", "instructions": 6, "multiply_adds": 4, "local": 1, "calls": 0,
                                      "shared_loads": 0}]
