"""GPU plan latency, one process, one GPU, the same model files: the PyTorch reference sampler on
the GPU (eager, and replayed from a CUDA graph: its strongest form, every draw precomputed on the
device) against mpdiffuser's CUDA backend, whose plans are also checked against the reference's.

    python benchmarks/gpu_reference_latency.py --out benchmarks/results/gpu_latency_h100.json

Models: the default Hopper-size model (H = 16) and a larger one (H = 32, K = 20), random weights
(speed does not depend on them). Times: CUDA events around the reference's device work; for
mpdiffuser, the host's end-to-end time of Sampler.plan (state in, copies, two kernel launches,
copies out, synchronization), which is what a Python control loop waits for. The kernels' own
GPU time and graph replays come from benchmarks/cuda_plan_latency.cpp (mpd_bench_cuda).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def bench_model(model_file: Path, candidates: list[int], iters: int) -> list[dict]:
    import torch

    from mpdiffuser.bench import plan_flops, reference_gpu_times
    from mpdiffuser.export import bundle_from_model_file
    from mpdiffuser.sampling.reference import ReferenceSampler
    from mpdiffuser.sampling.sampler import Sampler

    bundle, _ = bundle_from_model_file(model_file)
    reference = ReferenceSampler(bundle, device="cuda")
    cuda = Sampler(model_file, "cuda")
    spec = cuda.spec
    state = ((spec.states.low + spec.states.high) / 2).astype(np.float32)
    x0 = torch.from_numpy(spec.states.normalize(state)).cuda()
    rows = []
    for n in candidates:
        options = cuda.defaults.replace(num_candidates=n)
        if spec.with_cost and options.cost_limit is None:
            options = options.replace(cost_limit=10.0)
        ref = reference_gpu_times(reference, x0, options, iters)
        eager, graphed = list(ref["eager"]), list(ref["graph"])

        for i in range(5):
            cuda.plan(state, i, options)
        host = []
        for i in range(iters):
            begin = time.perf_counter()
            cuda.plan(state, i, options)
            host.append((time.perf_counter() - begin) * 1e3)
        ours = cuda.plan(state, 7, options)
        ref_windows = ref["windows"]
        flops = plan_flops(spec, options)
        row = {"num_candidates": n, "gflop_per_plan": flops / 1e9,
               "torch_eager_ms": _percentiles(eager), "torch_cuda_graph_ms": _percentiles(graphed),
               "mpdiffuser_cuda_host_ms": _percentiles(host),
               "max_abs_window_diff_vs_reference": float(np.abs(ours.windows - ref_windows).max())}
        row["speedup_vs_eager"] = row["torch_eager_ms"]["p50"] / row["mpdiffuser_cuda_host_ms"]["p50"]
        row["speedup_vs_graph"] = row["torch_cuda_graph_ms"]["p50"] / row["mpdiffuser_cuda_host_ms"]["p50"]
        rows.append(row)
        print(f"  N={n:5d}: torch eager p50 {row['torch_eager_ms']['p50']:.3f} ms, graph {row['torch_cuda_graph_ms']['p50']:.3f} ms"
              f", mpdiffuser cuda (host end to end) {row['mpdiffuser_cuda_host_ms']['p50']:.3f} ms "
              f"({row['speedup_vs_eager']:.1f}x eager, {row['speedup_vs_graph']:.1f}x graph); "
              f"windows differ by <= {row['max_abs_window_diff_vs_reference']:.2e}", flush=True)
    return rows


def main() -> int:
    import torch

    from mpdiffuser.bench import machine_info, synthetic_model_file
    from mpdiffuser.config import ModelConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--dir", default="runs/bench", help="where the synthetic model files are written")
    parser.add_argument("--out", default="runs/bench/gpu_latency.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device visible to torch")
        return 77
    models = {"default (H=16)": ModelConfig(), "large (H=32)": ModelConfig(horizon=32)}
    result = {"benchmark": "gpu_plan_latency", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "machine": machine_info(), "iters": args.iters, "models": {}}
    for label, config in models.items():
        path = synthetic_model_file(Path(args.dir) / f"synthetic-hopper-h{config.horizon}.safetensors", model=config)
        print(f"{label}: {path}", flush=True)
        result["models"][label] = {"model": config.__dict__, "rows": bench_model(path, args.candidates, args.iters)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
