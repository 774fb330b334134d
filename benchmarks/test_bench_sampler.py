"""pytest-benchmark suite: the native CPU backend and the PyTorch reference on the same model file,
same options and threads, in one process (the figure to read is the ratio within a group).

    .venv/bin/python -m pytest benchmarks/test_bench_sampler.py --benchmark-json runs/bench/pytest.json

Each benchmark's extra_info holds N, H, K, widths, GFLOP per plan, the machine and the commit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mpdiffuser.bench import machine_info, plan_flops, synthetic_model_file
from mpdiffuser.sampling.sampler import Sampler


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return synthetic_model_file(tmp_path_factory.mktemp("bench") / "hopper.safetensors")


@pytest.fixture(scope="module")
def samplers(model_file):
    torch.set_num_threads(torch.get_num_threads())
    return {"cpu": Sampler(model_file, "cpu"), "torch": Sampler(model_file, "torch")}


@pytest.mark.parametrize("n", [1, 16, 64, 256])
@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_plan_latency(benchmark, samplers, backend, n):
    sampler = samplers[backend]
    options = sampler.defaults.replace(num_candidates=n)
    state = np.zeros(sampler.spec.state_dim, np.float32)
    seeds = iter(range(10**9))
    benchmark.group = f"plan N={n}"
    benchmark.extra_info.update({
        "backend": backend, "num_candidates": n, "gflop_per_plan": plan_flops(sampler.spec, options) / 1e9,
        "threads": torch.get_num_threads(), "model": dataclasses.asdict(sampler.spec.model), **machine_info()})
    rounds = 30 if backend == "cpu" or n <= 16 else 8
    plan = benchmark.pedantic(lambda: sampler.plan(state, next(seeds), options), rounds=rounds, warmup_rounds=2)
    assert plan.actions.shape == (1, sampler.spec.action_dim)
