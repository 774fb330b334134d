"""How far float32 plans stray from exact arithmetic, the measurement behind the CUDA tests'
window tolerance (tests/cpp/cuda_plan_test.cpp).

Two float32 implementations of the sampler (the native CPU backend and the PyTorch reference,
different summation orders, as the CUDA kernels have theirs) against the design's equations in
float64 (tests/python/sampling/test_reference.py) on the C++ tests' tiny model, with the options
that CUDA test plans: every window element's largest deviation over N candidates. By the triangle
inequality two float32 backends differ by at most the sum of their deviations from the exact
plan, so a tolerance between two backends is twice one backend's largest deviation. Options the
float64 equations do not cover (a dynamics schedule other than every step) get the difference of
the two float32 orders only, which bounds the sum of their deviations from below.

--fast measures the fast numeric mode (fast_numerics = 1) the same way, against the equations in
float64 whose every weight layer rounds its input to bfloat16 as the mode does (the reference's
layer_numerics hooks on the float64 networks): per network call (planner and dynamics model on
random windows at the first and last level) and per plan. A float32 sum that lands an activation
on the other side of a bfloat16 rounding boundary moves that input by 2^-8 of itself, so the fast
mode's deviations are those of its rounding, not of float32's: they are the tolerance between two
fast-mode backends (tests/cpp/cuda_plan_test.cpp's tensor-core check), twice the larger.

    cmake -S . -B build/bench -DMPD_BUILD_BENCHMARKS=ON && cmake --build build/bench --target mpd_write_tiny_model
    build/bench/benchmarks/mpd_write_tiny_model /tmp/tiny-cost.safetensors cost
    OMP_NUM_THREADS=1 python benchmarks/diagnostics/float32_error.py /tmp/tiny-cost.safetensors \\
        --out benchmarks/results/float32_error_tiny.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def float64_sinusoid():
    """The unet's time embedding in float64 (models/unet.py computes it in float32) while the
    float64 equations run."""
    import math

    import torch

    from mpdiffuser.models import unet

    def sinusoid(t, dim):
        half = dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float64) * (-math.log(10000.0) / (half - 1)))
        angles = t.to(torch.float64)[:, None] * freqs[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)

    original = unet.sinusoid
    unet.sinusoid = sinusoid
    try:
        yield
    finally:
        unet.sinusoid = original


def call_deviations(bundle, x0, layer_numerics) -> dict:
    """Per network call in the fast mode: planner and dynamics model on 8 random windows at the
    first and last level, float32 against float64 with the same rounding of every layer's input;
    the largest deviation of any output."""
    import copy

    import torch

    spec = bundle.spec
    H, dx, du, K = spec.model.horizon, spec.state_dim, spec.action_dim, spec.model.num_steps
    rng = np.random.default_rng(0)
    tau = torch.tensor(rng.uniform(-1, 1, (8, H, dx + du)))
    x0t = torch.tensor(x0, dtype=torch.float64).expand(8, dx)
    c = torch.tensor(spec.conditions.condition(1.1, None), dtype=torch.float64).expand(8, -1)
    out = {}
    for name, net in (("planner", bundle.planner), ("dynamics", bundle.dynamics)):
        wide = copy.deepcopy(net).double()
        worst = 0.0
        for k in (1, K):
            kk = torch.full((8,), k)
            args64 = (tau,) if name == "planner" else (tau[..., :dx], tau[..., dx:])
            with torch.no_grad(), float64_sinusoid(), layer_numerics((wide,), True):
                want = wide(*args64, x0t, c, kk)
            with torch.no_grad(), layer_numerics((net,), True):
                got = net(*(a.float() for a in args64), x0t.float(), c.float(), kk)
            worst = max(worst, float((got.double() - want).abs().max()))
        out[name] = worst
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_file")
    parser.add_argument("--candidates", type=int, nargs="+", default=[1, 7, 64, 1100])
    parser.add_argument("--out", default=None)
    parser.add_argument("--fast", action="store_true", help="the fast numeric mode (fast_numerics = 1)")
    parser.add_argument("--unet-options", action="store_true",
                        help="the options the CUDA test plans the unet family with (w_d, dynamics every, temperature)")
    args = parser.parse_args()
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from mpdiffuser.export import bundle_from_model_file
    from mpdiffuser.sampling.reference import layer_numerics
    from mpdiffuser.sampling.sampler import Sampler
    from tests.python.sampling.test_reference import _spec_sampler_float64

    warnings.simplefilter("ignore")  # the tests' model file has no content digest
    torch.set_num_threads(1)
    bundle, _ = bundle_from_model_file(args.model_file)
    cpu, reference = Sampler(args.model_file, "cpu", threads=1), Sampler(args.model_file, "torch")
    state = np.array([0.3, -1.1, 1.7], np.float32)  # the CUDA test's state
    x0 = bundle.spec.states.normalize(state)
    networks = (bundle.planner, bundle.dynamics)
    calls = call_deviations(bundle, x0, layer_numerics) if args.fast else {}
    for name, e in calls.items():
        print(f"one {name} call, fast mode: {e:.2e} from float64", flush=True)
    rows = []
    for n in args.candidates:
        for w in (1.0, 1.7):
            for lam in (0.0, 0.5, 1.0):
                options = cpu.defaults.replace(num_candidates=n, guidance=w, dynamics_weight=lam, actions_per_plan=2)
                if args.unet_options:  # what tests/cpp/cuda_plan_test.cpp plans the unet family with
                    options = options.replace(dynamics_guidance=1.0 if lam == 0.5 else 2.5,
                                              dynamics_every=2 if lam == 1.0 else 1,
                                              temperature=1.0 if w == 1.0 else 0.01)
                if bundle.spec.with_cost:
                    options = options.replace(cost_limit=3.0, cost_budget=0.05)
                options = options.replace(fast_numerics=int(args.fast))
                native, torch32 = cpu.plan(state, 7, options).windows, reference.plan(state, 7, options).windows
                row = {"num_candidates": n, "guidance": w, "dynamics_weight": lam,
                       "dynamics_guidance": options.dynamics_guidance, "dynamics_every": options.dynamics_every,
                       "temperature": options.temperature, "cpu_vs_torch": float(np.abs(native - torch32).max())}
                if options.dynamics_every == 1 and options.dynamics_last == 0:  # what the float64 equations cover
                    with torch.no_grad(), float64_sinusoid(), layer_numerics(networks, args.fast):
                        exact = _spec_sampler_float64(bundle, x0, 7, options, n).numpy()
                    row |= {"cpu_vs_float64": float(np.abs(native - exact).max()),
                            "torch_vs_float64": float(np.abs(torch32 - exact).max())}
                rows.append(row)
                print(f"N={n:5d} w={w} lambda={lam}: cpu {row.get('cpu_vs_float64', float('nan')):.2e}, torch "
                      f"{row.get('torch_vs_float64', float('nan')):.2e} from float64; cpu vs torch "
                      f"{row['cpu_vs_torch']:.2e}", flush=True)
    worst = {n: max(max(r.get("cpu_vs_float64", 0.0), r.get("torch_vs_float64", 0.0)) for r in rows
                    if r["num_candidates"] == n) for n in args.candidates}
    between = {n: max(r["cpu_vs_torch"] for r in rows if r["num_candidates"] == n) for n in args.candidates}
    print("largest float32 deviation from float64 per N: " + ", ".join(f"{n}: {e:.2e}" for n, e in worst.items()))
    print("largest difference of the two float32 orders per N: " + ", ".join(f"{n}: {e:.2e}" for n, e in between.items()))
    if args.out:
        from mpdiffuser.bench import machine_info

        Path(args.out).write_text(json.dumps({"model_file": args.model_file, "machine": machine_info(),
                                              "has_cost": bundle.spec.with_cost, "rows": rows,
                                              "unet_options": args.unet_options, "fast_numerics": int(args.fast),
                                              "largest_call_deviation": calls,
                                              "largest_deviation_per_n": worst,
                                              "largest_two_order_difference_per_n": between}, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
