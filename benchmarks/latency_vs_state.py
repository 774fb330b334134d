"""Plan latency against the robot's state size: the default model of each size (ModelConfig.sized_for:
the MLP's width grows with the window H (dx + du); the U-Net convolves over time with dx + du
channels), random weights stored in float32 and in bfloat16 (export --weights bf16; those also in
the fast numeric mode, fast_numerics = 1: AMX tiles where the CPU has them), the native CPU backend
on one thread, N = 1, cold plans (K = 20) and warm-started ones (k_w = 5). Writes JSON and prints the
markdown table docs/results.md carries.

    python benchmarks/latency_vs_state.py --out runs/bench/latency_vs_state.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mpdiffuser.config import WEIGHT_FORMATS

ROBOTS = {"Hopper-v5": (11, 3), "Walker2d-v5": (17, 6), "Ant-v5": (27, 8), "FetchPickAndPlace-v4": (31, 4),
          "Humanoid-v5 / HumanoidStandup-v5": (348, 17)}


def time_plans(model_file: Path, dx: int, plans: int, warm_level: int, fast: bool = False) -> dict:
    """{"cold", "warm"} (and with fast, "cold_fast", "warm_fast") -> {"p50_ms", "p99_ms"}."""
    from mpdiffuser.sampling.sampler import Sampler

    sampler = Sampler(model_file, "cpu", threads=1)
    rng = np.random.default_rng(0)
    states = [sampler.spec.states.unnormalize(rng.uniform(-0.5, 0.5, dx).astype(np.float32)) for _ in range(plans + 1)]
    out = {}
    cases = [("cold", sampler.defaults.replace(num_candidates=1)),
             ("warm", sampler.defaults.replace(num_candidates=1, warm_start_level=warm_level))]
    if fast:
        cases += [(f"{label}_fast", options.replace(fast_numerics=1)) for label, options in cases]
    for label, options in cases:
        previous = None
        sampler.plan(states[0], 0, options)
        times = []
        for i, state in enumerate(states[1:]):
            begin = time.perf_counter()
            plan = sampler.plan(state, i, options, warm_start=previous if label.startswith("warm") else None)
            times.append((time.perf_counter() - begin) * 1e3)
            previous = plan.window
        out[label] = {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}
    return out


def main() -> None:
    from mpdiffuser.bench import synthetic_model_file
    from mpdiffuser.config import ModelConfig
    from mpdiffuser.experiments.common import machine
    from mpdiffuser.results_json import write

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plans", type=int, default=50)
    p.add_argument("--warm-start-level", type=int, default=5)
    p.add_argument("--out", default="runs/bench/latency_vs_state.json")
    p.add_argument("--weights", nargs="+", choices=WEIGHT_FORMATS, default=list(WEIGHT_FORMATS))
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for robot, (dx, du) in ROBOTS.items():
            for architecture in ("mlp", "unet"):
                for weights in a.weights:
                    model = ModelConfig.sized_for(dx, du, architecture=architecture)
                    path = synthetic_model_file(Path(tmp) / f"{dx}-{architecture}-{weights}.safetensors", dx, du,
                                                model=model, weights=weights)
                    timing = time_plans(path, dx, a.plans, a.warm_start_level, fast=weights == "bf16")
                    rows.append({"robot": robot, "state_dim": dx, "action_dim": du, "architecture": architecture,
                                 "weights": weights, "width": model.width if architecture == "mlp" else None,
                                 "window": model.horizon * (dx + du), "file_mb": path.stat().st_size / 1e6} | timing)
                    print(json.dumps(rows[-1]), flush=True)
    write(a.out, {"experiment": "latency_vs_state", "machine": machine(), "plans": a.plans,
                  "warm_start_level": a.warm_start_level, "rows": rows})
    print("| robot | dx + du | family (width) | weights | model file | cold p50 / p99 (ms) | warm k_w = "
          f"{a.warm_start_level} p50 / p99 (ms) | fast mode: cold / warm p50 / p99 (ms) |\n"
          "|---|---:|---|---|---:|---:|---:|---:|")
    for r in rows:
        family = f"mlp ({r['width']})" if r["architecture"] == "mlp" else "unet"
        both = lambda c, w: f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f} | {w['p50_ms']:.1f} / {w['p99_ms']:.1f}"  # noqa: E731
        fast = (f"{r['cold_fast']['p50_ms']:.1f} / {r['cold_fast']['p99_ms']:.1f}; "
                f"{r['warm_fast']['p50_ms']:.1f} / {r['warm_fast']['p99_ms']:.1f}") if "cold_fast" in r else "-"
        print(f"| {r['robot']} | {r['state_dim']} + {r['action_dim']} | {family} | {r['weights']} | "
              f"{r['file_mb']:.1f} MB | {both(r['cold'], r['warm'])} | {fast} |")


if __name__ == "__main__":
    main()
