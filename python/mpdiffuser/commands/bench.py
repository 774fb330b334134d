"""The bench command: a native backend's plan latency against the PyTorch reference."""

from __future__ import annotations

import argparse
from pathlib import Path

from mpdiffuser.config import BACKENDS

BENCH_CANDIDATES = (1, 16, 64, 256)  # bench's N values unless --candidates


def _cmd_bench(args: argparse.Namespace) -> int:
    """Plan latency of a native backend against the PyTorch reference on the same model file: --backend cpu
    (the reference on the same threads) or cuda (the reference on the same GPU, eager and replayed
    from a CUDA graph), either family (--architecture)."""
    from mpdiffuser.bench import (format_cuda_table, format_table, run_cpu_benchmark, run_cuda_benchmark,
                                  synthetic_model_file, write_json)

    model_file = args.model_file
    if model_file is None:
        from mpdiffuser.config import ModelConfig

        model_file = synthetic_model_file(Path(f"runs/bench/synthetic-hopper-{args.architecture}.safetensors"),
                                          model=ModelConfig(architecture=args.architecture))
        print(f"no --model-file: benchmarking a default-size {args.architecture} Hopper model with random weights "
              f"({model_file})")
    candidates = args.candidates or list(BENCH_CANDIDATES)
    if args.backend == "cuda":
        try:
            result = run_cuda_benchmark(model_file, candidates=candidates, iters=args.iters,
                                        warm_start_level=args.warm_start_level)
        except RuntimeError as exc:
            raise SystemExit(f"error: {exc}") from None
        print(format_cuda_table(result))
    else:
        result = run_cpu_benchmark(model_file, candidates=candidates, threads=args.threads, iters=args.iters,
                                   warm_start_level=args.warm_start_level)
        print(format_table(result))
    print(f"wrote {write_json(result, args.out or f'runs/bench/{args.backend}_latency.json')}")
    return 0


def register(commands) -> None:
    from mpdiffuser.config import ARCHITECTURES

    bench = commands.add_parser("bench", help="native vs reference plan latency", description=_cmd_bench.__doc__)
    bench.add_argument("--model-file", default=None, help="default: a default-size Hopper model with random weights")
    bench.add_argument("--architecture", default="mlp", choices=ARCHITECTURES,
                       help="the network family of the random-weight model (without --model-file)")
    bench.add_argument("--candidates", type=int, action="extend", nargs="+", default=None,
                       help=f"N values (default: {' '.join(map(str, BENCH_CANDIDATES))})")
    bench.add_argument("--backend", default="cpu", choices=[b for b in BACKENDS if b != "torch"],
                       help="the native backend timed against the PyTorch reference on the same device")
    bench.add_argument("--threads", type=int, default=None, help="CPU backend threads (default: every core)")
    bench.add_argument("--iters", type=int, default=30, help="timed plans per N")
    bench.add_argument("--warm-start-level", type=int, default=0,
                       help="also time warm-started plans from this level k_w (0: cold plans only)")
    bench.add_argument("--out", default=None, help="JSON results (default: runs/bench/<backend>_latency.json)")
    bench.set_defaults(func=_cmd_bench)

