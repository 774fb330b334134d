"""Limits a user can hit by mistake: a candidate count whose workspace does not fit in memory, a
long plan that must stop on Ctrl-C, a seed beyond 64 bits, options passed as a dict, and a state
far outside the training data (a sensor or unit fault), on every backend."""

from __future__ import annotations

import _thread
import signal
import threading
import time

import numpy as np
import pytest

import mpdiffuser.sampling.sampler as sampler_module
from mpdiffuser.bench import synthetic_model_file
from mpdiffuser.config import STATE_RANGE_LIMIT, ModelConfig
from mpdiffuser.sampling.sampler import Sampler


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return synthetic_model_file(tmp_path_factory.mktemp("limits") / "hopper.safetensors")


def test_a_workspace_that_does_not_fit_is_refused_naming_num_candidates(model_file, monkeypatch):
    sampler = Sampler(model_file, "cpu", threads=2)
    need = sampler._native.workspace_bytes("cpu", 4096, 2)
    assert need > sampler._native.workspace_bytes("cpu", 64, 2) > 0
    monkeypatch.setattr(sampler_module, "available_memory", lambda: need - 1)
    options = sampler.defaults.replace(num_candidates=4096)
    with pytest.raises(ValueError, match=r"num_candidates = 4096 needs a 0\.\d\d GiB workspace; this machine has "
                                         r"0\.\d\d GiB available"):
        sampler.plan(np.zeros(11, np.float32), 0, options)
    monkeypatch.setattr(sampler_module, "available_memory", lambda: need)
    assert sampler.plan(np.zeros(11, np.float32), 0, options).values.shape == (4096,)


@pytest.fixture
def sigint_raises():
    """SIGINT raises KeyboardInterrupt for the test's duration, whatever the suite inherited: a
    suite started as a background job of a non-interactive shell (or under nohup) inherits SIGINT
    ignored, Python then installs no handler, and Ctrl-C (or interrupt_main) does nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _long_plan(sampler, state, seconds: float):
    """Options whose plan takes about 2 x `seconds` on this machine now (measured, then scaled; at
    least the binding's interruptible size, 2^16 candidate-steps), and the expected duration. A
    machine too fast for 2^20 candidates fails rather than skips."""
    options = sampler.defaults.replace(num_candidates=1024)
    start = time.perf_counter()
    sampler.plan(state, 0, options)
    per_candidate = (time.perf_counter() - start) / 1024
    interruptible = -(-2**16 // sampler.spec.model.num_steps)
    n = min(2**20, max(interruptible, int(2 * seconds / per_candidate)))
    expected = per_candidate * n
    assert expected > seconds, f"a {n}-candidate plan would take {expected:.2f} s: too short to test the interrupt"
    return options.replace(num_candidates=n), expected


def test_a_long_plan_stops_on_ctrl_c(model_file, sigint_raises):
    # A plan of seconds on this machine's 2 cores; Ctrl-C (simulated as the interpreter receives
    # it) must stop it at the next denoising step, not when it ends.
    sampler = Sampler(model_file, "cpu", threads=2)
    state = np.zeros(11, np.float32)
    options, expected = _long_plan(sampler, state, 1.5)
    sampler._ensure_workspace(options.num_candidates)  # allocated (and zeroed) before the clock starts
    timer = threading.Timer(0.3, _thread.interrupt_main)
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        sampler.plan(state, 0, options)
    stopped = time.perf_counter() - start
    timer.cancel()
    # at the next denoising step (1/20 of the plan) after the 50 ms poll; bounded by five steps' worth
    # so that a busy machine's slower steps pass, and still far below the whole plan
    assert stopped < 0.3 + max(1.0, expected / 4), f"stopped after {stopped:.2f} s of {expected:.2f} s"
    assert sampler.plan(state, 0, options.replace(num_candidates=8)).values.shape == (8,)  # still usable


_CHILD = """
import signal, sys, time
import numpy as np
from mpdiffuser.sampling.sampler import Sampler
if sys.argv[2] == "term":  # SIGINT left as inherited (ignored); the program's own SIGTERM handler raises
    def stop(signum, frame):
        raise SystemExit(3)
    signal.signal(signal.SIGTERM, stop)
sampler = Sampler(sys.argv[1], "cpu", threads=2)
options = sampler.defaults.replace(num_candidates=int(sys.argv[3]))
sampler._ensure_workspace(options.num_candidates)
print("planning", flush=True)
try:
    sampler.plan(np.zeros(11, np.float32), 0, options)
except (KeyboardInterrupt, SystemExit) as stopped:  # time.monotonic: one clock for both processes
    print(f"stopped {type(stopped).__name__} {time.monotonic():.6f}", flush=True)
    sys.exit(0 if isinstance(stopped, KeyboardInterrupt) else 3)
print(f"finished {time.monotonic():.6f}", flush=True)
"""


@pytest.mark.parametrize("how", ["sigint", "term"])
def test_a_real_signal_stops_a_long_plan_in_a_child_process(model_file, how, sigint_raises):
    """End to end, with a real signal: SIGINT to a program started with SIGINT at its default (as
    a terminal starts it) raises KeyboardInterrupt inside the plan; a program that ignores SIGINT
    (nohup, a background job) is stopped by its own SIGTERM handler the same way. The stop is
    timed in the child (the interpreter's exit, slow on a busy machine, is not part of it)."""
    import subprocess
    import sys

    sampler = Sampler(model_file, "cpu", threads=2)
    options, expected = _long_plan(sampler, np.zeros(11, np.float32), 3.0)
    sigint = signal.SIG_DFL if how == "sigint" else signal.SIG_IGN
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(model_file), how, str(options.num_candidates)],
                             stdout=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
    try:
        assert child.stdout.readline().strip() == "planning"
        time.sleep(0.5)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT if how == "sigint" else signal.SIGTERM)
        out, _ = child.communicate(timeout=120)
    finally:
        child.kill()
    word, kind, when = out.split()
    assert word == "stopped" and kind == ("KeyboardInterrupt" if how == "sigint" else "SystemExit"), out
    assert child.returncode == (0 if how == "sigint" else 3)
    stopped = float(when) - sent
    # five steps' worth, far below the rest of the plan (which would run on for >= 5 s)
    assert stopped < 1.0 + expected / 4, f"stopped {stopped:.2f} s after the signal, plan {expected:.2f} s"


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_seeds_and_options_are_checked_with_their_names(model_file, backend):
    sampler = Sampler(model_file, backend)
    state = np.zeros(11, np.float32)
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\^64\) \(the Philox key\), got 18446744073709551616"):
        sampler.plan(state, 2**64)
    sampler.plan(state, 2**64 - 1)  # the largest seed is fine
    with pytest.raises(ValueError, match=r"seeds must be in \[0, 2\^64\)"):
        sampler.plan_batch(state[None], [2**64])
    with pytest.raises(TypeError, match="options must be a SamplerOptions or None, got dict"):
        sampler.plan(state, 0, {"num_candidates": 4})
    with pytest.raises(ValueError, match=r"num_candidates must be an integer in \[1, 1048576\], got 1048577"):
        sampler.plan(state, 0, sampler.defaults.replace(num_candidates=2**20 + 1))  # the user's name, not an internal one


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_a_state_far_outside_the_data_is_refused(model_file, backend):
    sampler = Sampler(model_file, backend)
    low, high = sampler.spec.states.low, sampler.spec.states.high
    mid, half = (high.astype(np.float64) + low) / 2, (high.astype(np.float64) - low) / 2
    state = mid.astype(np.float32)
    state[4] = 1e30  # the case: planned to a value of -4.7e29 without a word
    with pytest.raises(ValueError, match=r"state\[4\] = 1e\+30 lies more than 100 half-ranges"):
        sampler.plan(state, 0)
    state[4] = mid[4] + 0.99 * STATE_RANGE_LIMIT * half[4]  # far, but inside the stated limit
    assert np.isfinite(sampler.plan(state, 0).values).all()


def test_the_native_core_refuses_a_far_state_itself(model_file):
    # Behind Sampler's check: the C API's own (MPD_ERR_STATE_OUT_OF_RANGE), as firmware meets it.
    from mpdiffuser import _core

    sampler = Sampler(model_file, "cpu")
    state = ((sampler.spec.states.low + sampler.spec.states.high) / 2).astype(np.float32)
    state[0] = 1e30
    workspace = _core.Workspace(sampler._native, "cpu", 1, 1)
    with pytest.raises(RuntimeError, match="more than 100 half-ranges"):
        workspace.plan_batch(state[None], np.zeros(1, np.uint64), sampler._native_options(sampler.defaults))
