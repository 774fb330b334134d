"""The training step recorded once as a CUDA graph and replayed (design section 2: "the step
(forward, backward, optimizer, EMA) is replayed as a CUDA graph").

A small model's step is a few hundred kernels of microseconds each: launched one by one from
Python, the GPU waits on the host. Captured, one replay launches them all. What the graph holds:
the batch drawn on the device, the forward pass (under the runtime's autocast), the backward
pass, gradient clipping and the fused AdamW step, with the two torch.Generators (batches and
noise) registered so that each replay draws new numbers. Outside it: the EMA update (cheap,
every ema_every steps), logs, validation and checkpoints.

Captured when (TrainRuntime.capture "auto"): a CUDA device, batches on the device, one process,
fp32/tf32/bf16 (fp16's loss scaling synchronizes with the host), not torch.compile'd, and this
torch registers custom generators with graphs. Anything else, or a capture that fails, trains
eagerly and says why once.
"""

from __future__ import annotations

import threading
from typing import Callable

import torch

WARMUP_STEPS = 3  # eager steps on a side stream before the capture (lazy cuBLAS/cuDNN set-up)
_CAPTURE = threading.Lock()


def capture_refusal(runtime, on_device: bool) -> str | None:
    """Why the step of this run is not captured, or None when it is."""
    if runtime.capture == "off":
        return "capture is off"
    if runtime.torch_device.type != "cuda":
        return "not on a GPU"
    if not on_device:
        return "batches are drawn on the host (--batches host)"
    if runtime.distributed:
        return "several processes (DDP's gradient hooks are not captured)"
    if runtime.precision == "fp16":
        return "fp16 loss scaling synchronizes with the host"
    if runtime.compile:
        return "torch.compile'd networks"
    if not hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
        return f"torch {torch.__version__} cannot register custom generators with a CUDA graph"
    return None


class CapturedStep:
    """`step()` (one training step returning its logged values [n] on the device) recorded as a
    CUDA graph; `replay()` runs it again and returns the same static tensor, refreshed."""

    def __init__(self, step: Callable[[], torch.Tensor], generators: list[torch.Generator],
                 stream: "torch.cuda.Stream"):
        """`stream`: the side stream of the training device to capture on (torch.cuda.graph's own
        would be made on the current device, which need not be the training one). A capture that
        fails raises after the generators are set back to where they were, so the eager steps
        that follow draw what a run that never tried would have drawn."""
        saved = [g.get_state() for g in generators]
        self.graph = torch.cuda.CUDAGraph()
        try:
            for generator in generators:
                self.graph.register_generator_state(generator)
            # One capture at a time: entering torch.cuda.graph synchronizes the device and empties
            # the allocator's cache, which must not happen inside another thread's capture.
            # thread_local: the other threads' eager steps and replays go on meanwhile.
            with _CAPTURE, torch.cuda.graph(self.graph, stream=stream, capture_error_mode="thread_local"):
                self.values = step()
        except BaseException:
            self.graph = None
            for generator, state in zip(generators, saved):
                generator.set_state(state)
            raise

    def replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.values
