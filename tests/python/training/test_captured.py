"""The GPU training paths' logic, checked on the CPU where it can be (CUDA-marked where it cannot):
the capture on the training device's side stream with its generators restored after a failed
capture, process-wide TF32 flags held across threads, optimizer flags after resuming, autocast's
cache off inside a capture, and model initialization that never reseeds a GPU's generators."""

from __future__ import annotations

import threading

import pytest
import torch

from mpdiffuser.training import captured
from mpdiffuser.training.loop import initialized, optimizer_on_device
from mpdiffuser.training.runtime import ProcessFlags, TrainRuntime


class _FakeGraph:
    def __init__(self):
        self.registered = []

    def register_generator_state(self, generator):
        self.registered.append(generator)


class _FakeCapture:
    """torch.cuda.graph's stand-in: records the stream it was given."""

    streams = []

    def __init__(self, graph, stream=None, capture_error_mode=None):
        _FakeCapture.streams.append(stream)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_the_capture_uses_the_given_stream_and_a_failed_one_leaves_the_generators_as_they_were(monkeypatch):
    monkeypatch.setattr(captured.torch.cuda, "CUDAGraph", _FakeGraph)
    monkeypatch.setattr(captured.torch.cuda, "graph", _FakeCapture)
    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    side = object()  # the side stream the loop made on the training device
    step = captured.CapturedStep(lambda: torch.zeros(1), gens, side)
    assert _FakeCapture.streams[-1] is side and step.graph.registered == gens
    before = [torch.rand(3, generator=g) for g in (torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))]

    def failing_step():
        for g in gens:
            torch.rand(5, generator=g)  # draws inside the capture advance the generators ...
        raise RuntimeError("operation not permitted when stream is capturing")

    with pytest.raises(RuntimeError, match="capturing"):
        captured.CapturedStep(failing_step, gens, side)
    after = [torch.rand(3, generator=g) for g in gens]  # ... and the eager steps after it draw as if it never ran
    for a, b in zip(before, after):
        assert torch.equal(a, b)


def test_process_flags_are_set_by_the_first_holder_and_restored_by_the_last():
    state = {"flags": "original"}
    flags = ProcessFlags(lambda: state["flags"], lambda v: state.update(flags=v), "tf32")
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def first():
        with flags.held():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second():
        first_in.wait(10)
        with flags.held():
            second_in.set()
            first_out.wait(10)
            seen.append(state["flags"])  # the first model finished: still on for this one
        seen.append(state["flags"])

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == ["tf32", "original"]


def test_resuming_sets_this_runs_optimizer_flags_and_moves_the_step_counters():
    model = torch.nn.Linear(3, 2)
    eager = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    eager.step()
    resumed = torch.optim.AdamW(model.parameters(), lr=1e-3)
    resumed.load_state_dict(eager.state_dict())
    assert resumed.param_groups[0]["capturable"] is False  # what the eager checkpoint brought
    for capturable in (True, False):  # fused AdamW keeps its step counters on the parameters' device either way
        optimizer_on_device(resumed, torch.device("cpu"), capturable=capturable)
        assert all(g["capturable"] is capturable and g["fused"] for g in resumed.param_groups)
        steps = [s["step"] for s in resumed.state.values()]
        assert steps and all(t.dtype == torch.float32 and t.device.type == "cpu" and float(t) == 1.0 for t in steps)


def test_autocast_inside_a_capture_keeps_no_cast_cache():
    runtime = TrainRuntime(device="cpu", precision="bf16")
    with runtime.autocast(captured=True):
        assert torch.is_autocast_enabled("cpu") and not torch.is_autocast_cache_enabled()
    with runtime.autocast():
        assert torch.is_autocast_cache_enabled()


def test_initialization_never_reseeds_a_gpus_generators(monkeypatch):
    def forbidden(*args):
        raise AssertionError("a GPU generator was reseeded (another thread may be capturing)")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", forbidden)
    monkeypatch.setattr(torch.cuda, "manual_seed", forbidden)
    a = initialized(lambda: torch.nn.Linear(4, 4), 7)
    b = initialized(lambda: torch.nn.Linear(4, 4), 7)
    assert torch.equal(a.weight, b.weight)
