"""Latency benchmarks of the sampler backends against the PyTorch reference, in one process.

Every row measures the reference (`backend="torch"`, eager, same threads) on the same model file
and options, so the figure is a ratio; it also measures this machine's float32 matrix-multiply
rate (a large torch matmul on the same threads) so the native backend's FLOP/s can be read as a
fraction of what the machine can do. `mpdiffuser bench` prints the table and writes JSON.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from mpdiffuser import results_json
from mpdiffuser.config import ModelConfig, SamplerOptions
from mpdiffuser.models.networks import EMBED_DIM


def synthetic_model_file(path: str | Path, state_dim: int = 11, action_dim: int = 3,
                         model: ModelConfig | None = None, with_cost: bool = False, seed: int = 0,
                         env_id: str | None = "Hopper-v5", options: SamplerOptions | None = None,
                         weights: str | None = "float32", fixed_state_dims: tuple[int, ...] = ()) -> Path:
    """A model file with random (untrained, fan-in-scaled) weights of a given architecture: for
    benchmarks and tests of the backends, where only the arithmetic matters. Hopper-sized by default;
    weights: how the file stores them (export_model); fixed_state_dims: the state dimensions its
    plans keep at x_0's values (BundleSpec.fixed_state_dims)."""
    import torch

    from mpdiffuser.data.normalizer import CdfNormalizer, MinMaxNormalizer
    from mpdiffuser.data.windows import ConditionScale
    from mpdiffuser.export import export_model
    from mpdiffuser.models.bundle import BundleSpec, save_weights

    model = model or ModelConfig()
    rng = np.random.default_rng(seed)
    states = MinMaxNormalizer(-rng.uniform(1, 3, state_dim).astype(np.float32),
                              rng.uniform(1, 3, state_dim).astype(np.float32))
    actions = MinMaxNormalizer(-np.ones(action_dim, np.float32), np.ones(action_dim, np.float32))
    if model.normalizer == "cdf":  # skewed marginals over the same ranges
        states, actions = (CdfNormalizer.fit(n.unnormalize(rng.uniform(-1, 1, (400, n.dim)) ** 3))
                           for n in (states, actions))
    spec = BundleSpec(env_id, state_dim, action_dim, model, states, actions,
                      ConditionScale(0.0, 300.0, model.return_discount, model.cost_scale, with_cost), True,
                      fixed_state_dims=tuple(fixed_state_dims))
    directory = Path(path).with_suffix(".bundle")
    spec.save(directory)
    torch.manual_seed(seed)
    for name in spec.model_names:
        module = spec.build(name)
        with torch.no_grad():
            for p in module.parameters():
                fan_in = p.shape[-1] if p.ndim == 2 else p.shape[1] * p.shape[2] if p.ndim == 3 else 1
                p.normal_(0.0, (1.0 / fan_in) ** 0.5 if p.ndim >= 2 else 0.05)
            for norm in (m for m in module.modules() if isinstance(m, torch.nn.GroupNorm)):
                norm.weight.normal_(1.0, 0.1)  # (the unet's) normalized activations keep their scale
        save_weights(directory, name, module, spec, {"synthetic": True, "seed": seed})
    if with_cost and options is None:
        options = SamplerOptions(cost_limit=10.0)
    return export_model(directory, path, options, weights=weights)


def plan_flops(spec, options: SamplerOptions) -> float:
    """Floating-point operations of one plan: every network layer's 2 * rows * in * out."""
    m, dx, du = spec.model, spec.state_dim, spec.action_dim
    H, D, c = m.horizon, dx + du, spec.conditions.dim

    def mlp(in_dim, width, layers, out_dim):
        dims = [in_dim] + [width] * layers + [out_dim]
        return sum(2.0 * a * b for a, b in zip(dims[:-1], dims[1:]))

    n = options.num_candidates
    rows = n if options.guidance == 1.0 else 2 * n
    dynamics_rows = n if options.dynamics_guidance == 1.0 else 2 * n
    if m.architecture == "mlp":
        planner = mlp(H * D + dx + c + EMBED_DIM, m.width, m.layers, H * D)
        dynamics = mlp(H * D + dx + c + EMBED_DIM, m.width, m.layers, H * dx)
    else:  # counted on a forward pass of the family's modules
        from mpdiffuser.models.registry import family

        planner, dynamics = family(m.architecture).flops_per_row(dx, du, c, m)
    ranker = mlp(D, m.ranker_width, m.ranker_layers, 2 if spec.reward_has_termination else 1)
    if spec.with_cost:
        ranker += mlp(D, m.ranker_width, m.ranker_layers, 1)
    dyn_steps = sum(options.dynamics_at(k) for k in range(1, m.num_steps + 1))
    return rows * m.num_steps * planner + dynamics_rows * dyn_steps * dynamics + n * H * ranker


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 10) -> float:
    """This machine's float32 matrix-multiply rate on `threads` threads (torch, best of repeats)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(size, size)
        b = torch.randn(size, size)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        return 2.0 * size**3 / best / 1e9
    finally:
        torch.set_num_threads(previous)


def numpy_matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The same rate through NumPy's BLAS (OpenBLAS in the wheels; its own thread count)."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    a @ a
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def time_plans(sampler, state: np.ndarray, options: SamplerOptions, warmup: int, iters: int,
               max_seconds: float = 20.0) -> np.ndarray:
    """Latency in ms of `iters` plans (seeds 0, 1, ...) after `warmup` plans. With
    options.warm_start_level > 0 every plan is warm-started from the last warm-up plan's window."""
    plan = None
    for i in range(warmup):
        plan = sampler.plan(state, i, options.replace(warm_start_level=0))
    warm = {} if options.warm_start_level == 0 or plan is None else {"warm_start": plan.window}
    times = []
    deadline = time.perf_counter() + max_seconds
    for i in range(iters):
        start = time.perf_counter()
        sampler.plan(state, 1000 + i, options, **warm)
        times.append((time.perf_counter() - start) * 1e3)
        if time.perf_counter() > deadline and len(times) >= 3:
            break
    return np.asarray(times)


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = None
    # the checkout the command runs in (the repository's root for its benchmarks and experiments),
    # else the one the package sits in (an installation inside a checkout's .venv)
    for where in (Path.cwd(), Path(__file__).parent):
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    cwd=where, timeout=5).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            commit = None
        if commit:
            break
    try:
        from mpdiffuser import build_info

        amx = bool(build_info().get("cpu_amx"))
    except (ImportError, RuntimeError):
        amx = None  # no native core
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "commit": commit, "cpu_amx": amx}


def run_cpu_benchmark(model_file: str | Path, candidates=(1, 16, 64, 256), threads: int | None = None,
                      warmup: int = 3, iters: int = 30, guidance: float | None = None,
                      warm_start_level: int = 0) -> dict:
    """Native CPU backend vs the PyTorch reference on `model_file`, one row per N; with
    warm_start_level > 0 also the native warm-started plan (`cpu_warm_ms_p50`)."""
    import torch

    from mpdiffuser.sampling.sampler import Sampler

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    native = Sampler(model_file, "cpu", threads=threads)
    reference = Sampler(model_file, "torch")
    spec = native.spec
    rng = np.random.default_rng(0)
    state = ((spec.states.low + spec.states.high) / 2 + rng.uniform(-0.3, 0.3, spec.state_dim)
             * (spec.states.high - spec.states.low) / 2).astype(np.float32)
    peak = matmul_gflops(threads)
    rows = []
    for n in candidates:
        options = native.defaults.replace(num_candidates=int(n))
        if guidance is not None:
            options = options.replace(guidance=guidance)
        flops = plan_flops(spec, options)
        cpu = time_plans(native, state, options, warmup, iters)
        ref = time_plans(reference, state, options, max(1, warmup // 2), max(3, iters // 3))
        warm = {}
        if warm_start_level > 0:
            timed = time_plans(native, state, options.replace(warm_start_level=warm_start_level), warmup, iters)
            warm = {"cpu_warm_ms_p50": float(np.percentile(timed, 50)), "cpu_warm_ms_p99": float(np.percentile(timed, 99))}
        rows.append({
            "num_candidates": int(n), "gflop_per_plan": flops / 1e9,
            "cpu_ms_p50": float(np.percentile(cpu, 50)), "cpu_ms_p99": float(np.percentile(cpu, 99)),
            "torch_ms_p50": float(np.percentile(ref, 50)), "torch_ms_p99": float(np.percentile(ref, 99)),
            "cpu_gflops": flops / np.percentile(cpu, 50) / 1e6, "torch_gflops": flops / np.percentile(ref, 50) / 1e6,
            "speedup": float(np.percentile(ref, 50) / np.percentile(cpu, 50)),
            "cpu_fraction_of_matmul": flops / np.percentile(cpu, 50) / 1e6 / peak,
            "cpu_iters": len(cpu), "torch_iters": len(ref), **warm,
        })
    m = spec.model
    return {
        "benchmark": "cpu_plan_latency", "machine": machine_info(), "threads": threads,
        "matmul_gflops": peak, "numpy_matmul_gflops": numpy_matmul_gflops(), "model_file": str(model_file),
        "model": {"env_id": spec.env_id, "state_dim": spec.state_dim, "action_dim": spec.action_dim,
                  **dataclasses.asdict(m)},
        "options": {k: v for k, v in dataclasses.asdict(native.defaults).items() if k != "num_candidates"} | (
            {"guidance": guidance} if guidance is not None else {}),
        "warm_start_level": warm_start_level, "rows": rows,
    }


def _events_ms(fn, iters: int) -> np.ndarray:
    """CUDA-event times in ms of `iters` calls of fn (the device work it enqueues)."""
    import torch

    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return np.asarray(times)


def reference_gpu_times(reference, x0, options: SamplerOptions, iters: int, seed: int = 7) -> dict:
    """The PyTorch reference's plan on the GPU, device time by CUDA events: eager, and replayed
    from a CUDA graph (its strongest form, every draw precomputed on the device). Returns the
    times in ms and the graph's windows (for checking a native plan of the same seed)."""
    import torch

    draws = reference.noise(seed, np.arange(options.num_candidates))

    def plan():
        tau = reference.sample_windows(x0, seed, options, draws=draws)
        return tau, reference.rank_tensors(x0, tau, options.discount, bool(options.fast_numerics))

    for _ in range(3):
        plan()
    eager = _events_ms(plan, iters)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            plan()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        windows, _ = plan()
    graphed = _events_ms(graph.replay, iters)
    graph.replay()
    torch.cuda.synchronize()
    return {"eager": eager, "graph": graphed, "windows": windows.cpu().numpy()}


def cuda_matmul_gflops(size: int = 4096, repeats: int = 10) -> float:
    """The GPU's float32 matrix-multiply rate (torch.mm, TF32 off: the precision the kernels use)."""
    import torch

    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        a = torch.randn(size, size, device="cuda")
        best = float(np.min(_events_ms(lambda: torch.mm(a, a), repeats)))
        return 2.0 * size**3 / best / 1e6
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def run_cuda_benchmark(model_file: str | Path, candidates=(1, 16, 64, 256), warmup: int = 5, iters: int = 50,
                       warm_start_level: int = 0) -> dict:
    """The CUDA backend against the PyTorch reference on the same GPU and model file, one row per
    N: mpdiffuser's plan end to end from Python (state in, two kernel launches, copies out,
    synchronization: what a control loop waits for), cold and (warm_start_level > 0) warm-started;
    the reference eager and replayed from a CUDA graph; the windows' largest difference between
    the two at the same seed. Should the CUDA backend refuse the model (a family or size it does
    not plan), the rows hold the reference's times and `native` says why."""
    import torch

    from mpdiffuser.native import core


    _core = core()
    from mpdiffuser.export import bundle_from_model_file
    from mpdiffuser.sampling.reference import ReferenceSampler
    from mpdiffuser.sampling.sampler import Sampler

    if not torch.cuda.is_available() or not _core.cuda_device_available():
        raise RuntimeError("bench --backend cuda needs a CUDA device visible to torch and to mpdiffuser's CUDA "
                           "backend (mpdiffuser.build_info()['cuda_compiled']); none is here")
    bundle, _ = bundle_from_model_file(model_file)
    reference = ReferenceSampler(bundle, device="cuda")
    spec = bundle.spec
    try:
        native = Sampler(model_file, "cuda")
        missing = None
    except (RuntimeError, ValueError) as exc:  # refused: the reference's rows alone
        native, missing = None, str(exc)
    defaults = spec.sampler_defaults or SamplerOptions()
    state = ((spec.states.low + spec.states.high) / 2).astype(np.float32)
    x0 = torch.from_numpy(spec.states.normalize(state)).float().cuda()
    peak = cuda_matmul_gflops()
    rows = []
    for n in candidates:
        options = defaults.replace(num_candidates=int(n))
        if spec.with_cost and options.cost_limit is None:
            options = options.replace(cost_limit=10.0)
        flops = plan_flops(spec, options)
        ref = reference_gpu_times(reference, x0, options, max(3, iters // 2))
        row = {"num_candidates": int(n), "gflop_per_plan": flops / 1e9,
               "torch_eager_ms_p50": float(np.percentile(ref["eager"], 50)),
               "torch_graph_ms_p50": float(np.percentile(ref["graph"], 50)),
               "torch_graph_ms_p99": float(np.percentile(ref["graph"], 99))}
        if native is not None:
            cuda = time_plans(native, state, options, warmup, iters)
            ours = native.plan(state, 7, options)
            row |= {"cuda_ms_p50": float(np.percentile(cuda, 50)), "cuda_ms_p99": float(np.percentile(cuda, 99)),
                    "cuda_gflops": flops / np.percentile(cuda, 50) / 1e6,
                    "cuda_fraction_of_matmul": flops / np.percentile(cuda, 50) / 1e6 / peak,
                    "speedup_vs_eager": row["torch_eager_ms_p50"] / float(np.percentile(cuda, 50)),
                    "speedup_vs_graph": row["torch_graph_ms_p50"] / float(np.percentile(cuda, 50)),
                    "max_abs_window_diff_vs_reference": float(np.abs(ours.windows - ref["windows"]).max()),
                    "cuda_iters": len(cuda)}
            if warm_start_level > 0:
                warm = time_plans(native, state, options.replace(warm_start_level=warm_start_level), warmup, iters)
                row |= {"cuda_warm_ms_p50": float(np.percentile(warm, 50)),
                        "cuda_warm_ms_p99": float(np.percentile(warm, 99))}
        rows.append(row)
    return {
        "benchmark": "cuda_plan_latency", "machine": machine_info(), "device": torch.cuda.get_device_name(),
        "torch": torch.__version__, "matmul_gflops": peak, "model_file": str(model_file),
        "model": {"env_id": spec.env_id, "state_dim": spec.state_dim, "action_dim": spec.action_dim,
                  **dataclasses.asdict(spec.model)},
        "options": {k: v for k, v in dataclasses.asdict(defaults).items() if k != "num_candidates"},
        "native": "cuda" if native is not None else f"not available: {missing}",
        "warm_start_level": warm_start_level, "rows": rows,
    }


def format_cuda_table(result: dict) -> str:
    m = result["model"]
    lines = [f"device: {result['device']} (torch {result['torch']}), commit {result['machine']['commit']}",
             f"model: {m.get('architecture', 'mlp')} family, H {m['horizon']}, K {m['num_steps']} "
             f"({result['model_file']}); native: {result['native']}",
             f"matmul rate: {result['matmul_gflops']:.0f} GFLOP/s (float32 torch.mm 4096^2, TF32 off)",
             f"{'N':>5} {'GFLOP':>7} {'cuda p50 ms':>12} {'p99':>7} {'torch eager':>12} {'torch graph':>12} "
             f"{'vs graph':>9} {'window diff':>12}"]
    for r in result["rows"]:
        ours = (f"{r['cuda_ms_p50']:>12.3f} {r['cuda_ms_p99']:>7.3f}" if "cuda_ms_p50" in r else f"{'-':>12} {'-':>7}")
        lines.append(f"{r['num_candidates']:>5} {r['gflop_per_plan']:>7.3f} {ours} {r['torch_eager_ms_p50']:>12.3f} "
                     f"{r['torch_graph_ms_p50']:>12.3f} "
                     + (f"{r['speedup_vs_graph']:>8.1f}x {r['max_abs_window_diff_vs_reference']:>12.2e}"
                        if "speedup_vs_graph" in r else f"{'-':>9} {'-':>12}")
                     + (f"   warm k_w={result['warm_start_level']}: p50 {r['cuda_warm_ms_p50']:.3f} ms"
                        if "cuda_warm_ms_p50" in r else ""))
    return "\n".join(lines)


def format_table(result: dict) -> str:
    m = result["model"]
    amx = {True: ", AMX tiles", False: "", None: ""}[result["machine"].get("cpu_amx")]
    lines = [f"machine: {result['machine']['cpu']} ({result['machine']['cores']} cores{amx}), threads "
             f"{result['threads']}, commit {result['machine']['commit']}",
             f"model: {m.get('architecture', 'mlp')} family, H {m['horizon']}, K {m['num_steps']}"
             f"{', fast numeric mode' if result.get('options', {}).get('fast_numerics') else ''} "
             f"({result['model_file']})",
             f"matmul rate: {result['matmul_gflops']:.1f} GFLOP/s (float32 torch.mm 2048^2, same threads; "
             f"NumPy/OpenBLAS {result.get('numpy_matmul_gflops', float('nan')):.1f})",
             f"{'N':>5} {'GFLOP':>7} {'cpu p50 ms':>11} {'cpu p99':>8} {'torch p50':>10} {'speedup':>8} "
             f"{'cpu GFLOP/s':>12} {'of matmul':>10}"]
    for r in result["rows"]:
        lines.append(f"{r['num_candidates']:>5} {r['gflop_per_plan']:>7.3f} {r['cpu_ms_p50']:>11.3f} "
                     f"{r['cpu_ms_p99']:>8.3f} {r['torch_ms_p50']:>10.3f} {r['speedup']:>7.1f}x "
                     f"{r['cpu_gflops']:>12.1f} {100 * r['cpu_fraction_of_matmul']:>9.0f}%"
                     + (f"   warm k_w={result['warm_start_level']}: p50 {r['cpu_warm_ms_p50']:.3f} ms"
                        if "cpu_warm_ms_p50" in r else ""))
    return "\n".join(lines)


def write_json(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    results_json.write(path, result)
    return path
