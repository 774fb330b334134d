"""The end-to-end demo: a small Hopper dataset (shipped with the package, or made here from a SAC
policy it trains), random transitions for the dynamics and reward models, the three models
trained with the default recipe, Hopper controlled with MPDiffuser and with the planner-only
baseline (lambda = 0) on the native CPU backend; prints scores against the behaviour data's and
latency (native and PyTorch reference on the same model file)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpdiffuser import results_json
from mpdiffuser.config import RANKER_MODELS, SamplerOptions


DEMO_DATA = Path(__file__).resolve().parent / "data" / "demo" / "hopper-medium-200k-20k.hdf5"


@dataclass(frozen=True)
class DemoConfig:
    env_id: str = "Hopper-v5"
    out_dir: str = "runs/demo"  # output directory (data, models, results)
    # 0: the shipped dataset (data/demo/README.md: 20k transitions of a 200k-step SAC policy);
    # > 0: train a SAC behaviour policy of this many steps here (about 95 steps/s on 2 cores)
    # and roll out task_transitions of it.
    policy_steps: int = 0
    task_transitions: int = 20_000
    random_transitions: int = 10_000  # random-action transitions for the dynamics and reward models
    train_steps: int = 16000  # training steps of planner and dynamics model (docs/results.md: 8000 against 16000)
    ranker_steps: int = 3000  # training steps of the reward model
    episodes: int = 10  # evaluation episodes per controller
    max_steps: int = 1000  # steps per episode at most
    seed: int = 0  # seed of data, training and evaluation


def run_demo(config: DemoConfig, progress: bool = True) -> dict:
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.data.generate import GenerateConfig, generate
    from mpdiffuser.envs import SCORE_REFERENCES
    from mpdiffuser.export import export_model
    from mpdiffuser.sampling.sampler import Sampler
    from mpdiffuser.training.request import TrainRequest

    started = time.perf_counter()
    out = Path(config.out_dir)
    say = lambda msg: print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)  # noqa: E731

    if config.policy_steps > 0:
        say(f"1/5 data: {config.env_id} medium-style (SAC {config.policy_steps} steps) + random, cached in {out / 'data'}")
        task_path = generate(GenerateConfig(config.env_id, "medium", config.task_transitions, config.policy_steps,
                                            seed=config.seed), out / "data", progress)
    else:
        if config.env_id != "Hopper-v5":
            raise ValueError("the shipped demo dataset is Hopper-v5's; pass policy_steps > 0 for other robots")
        say(f"1/5 data: the shipped {DEMO_DATA.name} (200k-step SAC policy) + random transitions made here")
        task_path = DEMO_DATA
    random_path = generate(GenerateConfig(config.env_id, "random", config.random_transitions, seed=config.seed),
                           out / "data", progress)
    task, random = load_dataset(task_path), load_dataset(random_path)
    r = task.returns()
    data_score = float(np.mean([SCORE_REFERENCES[config.env_id].normalize(x) for x in r]))
    say(f"    task data: {len(task.episodes)} episodes, {task.num_transitions} steps, returns mean {r.mean():.0f} max {r.max():.0f}; "
        f"(score {data_score:.1f}); random data: {random.num_transitions} steps")

    bundle_dir = out / "models"
    say(f"2/5 training planner, dynamics model and reward model -> {bundle_dir}")
    request = TrainRequest.of(bundle_dir, [task], extra_data=[random], device="cpu",
                              steps=config.train_steps, seed=config.seed,
                              per_model={name: {"steps": config.ranker_steps} for name in RANKER_MODELS})
    losses = {}
    for _, name, train_config, info in request.run(progress=progress, say=lambda message: None):
        losses[name] = info["final_loss"]
        say(f"    {name:8s}: {train_config.steps} steps in {info['seconds']:.0f}s, final loss {info['final_loss']:.4f}")

    model_file = export_model(bundle_dir, bundle_dir / "model.safetensors", SamplerOptions())  # the default recipe
    say(f"3/5 exported the three models to {model_file} ({model_file.stat().st_size / 1e6:.1f} MB)")
    sampler = Sampler(model_file, "cpu", env_id=config.env_id)
    results = {}
    for label, lam in (("MPDiffuser (lambda=1)", 1.0), ("planner only (lambda=0)", 0.0)):
        say(f"4/5 control: {label}, {config.episodes} episode(s), replanning every step, native CPU backend")
        policy = MPCPolicy(sampler, sampler.defaults.replace(dynamics_weight=lam))
        summary = evaluate(policy, config.env_id, config.episodes, seed=1000 + config.seed,
                           max_steps=config.max_steps, progress=progress, desc=label)
        results[label] = summary.to_dict()

    options = sampler.defaults
    latency = compare_latency(model_file, task.episodes[0].observations[:40], options)
    say("5/5 results")
    print(f"    N={options.num_candidates} candidates, H={sampler.spec.model.horizon}, K={sampler.spec.model.num_steps}, "
          f"guidance w={options.guidance}, return target g={options.return_target}, temperature "
          f"{options.temperature:g}, {sampler.spec.model.prediction}-prediction; latency per plan measured during "
          f"control (native CPU backend)")
    print(f"    {'behaviour data':24s} score {data_score:6.1f}            (return {r.mean():7.1f})")
    for label, res in results.items():
        lat = res["latency"]
        print(f"    {label:24s} score {res['score_mean']:6.1f} +- {res['score_stderr']:4.1f} "
              f"(return {res['return_mean']:7.1f})  latency per plan p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms")
    print(f"    same model file, 40 dataset states, {latency['threads']} thread(s) each: native CPU p50 "
          f"{latency['cpu_ms_p50']:.2f} ms, PyTorch reference p50 {latency['torch_ms_p50']:.2f} ms "
          f"({latency['speedup']:.1f}x faster)")
    report = {"config": config.__dict__, "data_score": data_score, "options": dataclasses.asdict(options),
              "losses": losses, "results": results, "latency": latency,
              "seconds": round(time.perf_counter() - started, 1)}
    results_json.write(out / "demo_results.json", report)
    say(f"done; results in {out / 'demo_results.json'}")
    return report


def compare_latency(model_file: Path, states, options: SamplerOptions) -> dict:
    """p50 plan latency of the native CPU backend and the PyTorch reference on the same states,
    both on the same pinned thread count (torch's default threads fight any other process)."""
    import os

    import torch

    from mpdiffuser.sampling.sampler import Sampler

    threads = torch.get_num_threads() if os.environ.get("OMP_NUM_THREADS") else min(2, os.cpu_count() or 1)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    timings: dict = {"threads": threads}
    try:
        for backend in ("cpu", "torch"):
            sampler = Sampler(model_file, backend, threads=threads)
            sampler.plan(states[0], 0, options)  # warm-up
            times = []
            for i, state in enumerate(states):
                begin = time.perf_counter()
                sampler.plan(state, i, options)
                times.append((time.perf_counter() - begin) * 1e3)
            timings[f"{backend}_ms_p50"] = float(np.percentile(times, 50))
    finally:
        torch.set_num_threads(previous)
    timings["speedup"] = timings["torch_ms_p50"] / timings["cpu_ms_p50"]
    return timings
