"""Quadruped real-time control (issue: evaluation suite, item 4): gymnasium's Ant (a quadruped)
learns forward locomotion from locally generated data, then MPDiffuser controls it with the fastest
available backend in a fixed-rate loop. Reports the score, the achieved control rate, plan latency
percentiles and missed deadlines; writes JSON, CSV and a latency histogram.

    mpdiffuser experiment quadruped --quick     # minutes on 2 CPU cores
    mpdiffuser experiment quadruped             # larger data and training
    mpdiffuser experiment quadruped --model-file runs/quadruped/models/model.safetensors --backend cuda
                                                # the control phase alone, on a model file you have
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpdiffuser.config import ModelConfig
from mpdiffuser.control.evaluate import PLAN_SEED_STRIDE
from mpdiffuser.experiments.common import Log, ExperimentConfig, check_model_options, pyplot, write_csv, write_json


@dataclass(frozen=True)
class QuadrupedConfig(ExperimentConfig):
    env_id: str = "Ant-v5"
    out_dir: str = "runs/quadruped"
    control_hz: float = 50.0  # the loop's fixed rate; a plan longer than 1/rate misses its deadline
    control_steps: int = 1000
    episodes: int = 3
    backend: str = "auto"  # auto: cuda when a GPU is present, else cpu
    candidates: int = 8  # N of the exported model file (every sampler of the experiment plans with it)
    seed: int = 0
    model_file: str | None = None  # control this exported model file: no data, no training

    def __post_init__(self) -> None:
        self.sampler_options  # a bad N or g fails here, not after hours of training
        check_model_options(self.width, self.action_weight, self.prediction)
        if self.model_file is not None and not Path(self.model_file).is_file():
            raise FileNotFoundError(f"model file {self.model_file} does not exist")

    @classmethod
    def quick(cls, **changes) -> "QuadrupedConfig":
        base = cls(out_dir="runs/quadruped-quick", policy_dir="runs/policies-quick", policy_steps=3000,
                   task_transitions=8000, random_transitions=4000, train_steps=800, ranker_steps=500,
                   control_steps=300, episodes=2)
        return dataclasses.replace(base, **changes)


def fastest_backend() -> str:
    """"cuda" when a GPU is present and the CUDA sampler can make a workspace, else "cpu"."""
    import tempfile

    from mpdiffuser.native import core


    _core = core()
    from mpdiffuser.bench import synthetic_model_file

    if not _core.cuda_device_available():
        return "cpu"
    tiny = ModelConfig(horizon=2, num_steps=2, width=8, layers=1, ranker_width=8, ranker_layers=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = synthetic_model_file(Path(tmp) / "probe.safetensors", model=tiny)
        try:
            _core.Workspace(_core.Model(str(path)), "cuda", 1, 0)
            return "cuda"
        except RuntimeError:  # a build without CUDA, or a device the fatbin does not cover
            return "cpu"


def fixed_rate_episode(policy, env, seed: int, hz: float, max_steps: int, clock=time.perf_counter,
                       sleep=time.sleep) -> dict:
    """One episode at a fixed control rate: every step waits for its slot; a step whose planning
    ends after its deadline is a miss. Returns return, length, latencies (ms) and misses.
    `clock` (seconds) and `sleep` are injectable so the counting can be tested without real time."""
    period = 1.0 / hz
    obs, _ = env.reset(seed=seed)
    policy.reset(seed * PLAN_SEED_STRIDE)
    latencies, total, misses = [], 0.0, 0
    next_tick = clock()
    started = next_tick
    for step in range(max_steps):
        next_tick += period
        begin = clock()
        action = policy.act(obs)
        end = clock()
        latencies.append((end - begin) * 1e3)
        if end > next_tick:
            misses += 1
            next_tick = end  # resynchronize: the next slot starts now
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        if terminated or truncated:
            break
        delay = next_tick - clock()
        if delay > 0:
            sleep(delay)
    elapsed = clock() - started
    return {"return": total, "length": step + 1, "latencies_ms": latencies, "missed_deadlines": misses,
            "achieved_hz": (step + 1) / elapsed}


def run_quadruped(config: QuadrupedConfig, progress: bool = True) -> dict:
    """Data, training, export, then fixed-rate control; returns the report (also written to disk)."""
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.envs import SCORE_REFERENCES, make_env
    from mpdiffuser.sampling.sampler import Sampler

    say = Log()
    out = Path(config.out_dir)
    if config.model_file is not None:
        model_file = Path(config.model_file)
        say(f"1-2/4 model file {model_file}: no data, no training")
    else:
        model_file = _data_and_models(config, out, say, progress)

    backend = fastest_backend() if config.backend == "auto" else config.backend
    say(f"3/4 control: {config.episodes} episode(s) at {config.control_hz:.0f} Hz, backend {backend}")
    sampler = Sampler(model_file, backend, threads=config.threads, env_id=config.env_id)
    options = sampler.defaults.replace(num_candidates=config.candidates)
    sampler.warm_up(options)  # the workspace for this N and the first launch, outside the timed loop
    policy = MPCPolicy(sampler, options)
    env = make_env(config.env_id)
    episodes = [fixed_rate_episode(policy, env, 1000 + config.seed + i, config.control_hz, config.control_steps)
                for i in range(config.episodes)]
    env.close()
    latencies = np.concatenate([e["latencies_ms"] for e in episodes])
    reference = SCORE_REFERENCES.get(config.env_id)
    scores = [reference.normalize(e["return"]) if reference else float("nan") for e in episodes]
    report = {
        "experiment": "quadruped", "config": dataclasses.asdict(config), "backend": backend,
        "options": dataclasses.asdict(options), "model_file": str(model_file),
        "score_mean": float(np.mean(scores)), "score_stderr": float(np.std(scores) / np.sqrt(len(scores))),
        "return_mean": float(np.mean([e["return"] for e in episodes])),
        "control_hz": config.control_hz, "achieved_hz": float(np.mean([e["achieved_hz"] for e in episodes])),
        "steps": int(latencies.size), "missed_deadlines": int(sum(e["missed_deadlines"] for e in episodes)),
        "latency_ms": {q: float(np.percentile(latencies, p)) for q, p in
                       (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "episodes": [{k: v for k, v in e.items() if k != "latencies_ms"} | {"score": s} for e, s in zip(episodes, scores)],
        "seconds": round(say.seconds, 1),
    }
    write_outputs(report, latencies, out)
    lat = report["latency_ms"]
    say(f"4/4 {config.env_id} with backend {backend}: score {report['score_mean']:.1f} +- {report['score_stderr']:.1f} "
        f"(return {report['return_mean']:.0f}); {report['steps']} control steps at {report['achieved_hz']:.1f} Hz "
        f"(target {config.control_hz:.0f}); plan latency p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, "
        f"max {lat['max']:.2f} ms; missed deadlines {report['missed_deadlines']}")
    say(f"results in {out / 'quadruped.json'}, {out / 'quadruped.csv'}, {out / 'quadruped_latency.png'}")
    return report


def _data_and_models(config: QuadrupedConfig, out: Path, say: Log, progress: bool) -> Path:
    """Steps 1 and 2: the datasets (generated, cached) and the trained, exported bundle."""
    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.data.generate import GenerateConfig, generate

    say(f"1/4 data: {config.env_id} medium-style (SAC {config.policy_steps} steps) + random, cached in {out / 'data'}, "
        f"policy cached in {config.policy_dir}")
    task = load_dataset(generate(GenerateConfig(config.env_id, "medium", config.task_transitions, config.policy_steps,
                                                seed=config.seed), out / "data", progress, config.policy_dir))
    random = load_dataset(generate(GenerateConfig(config.env_id, "random", config.random_transitions,
                                                  seed=config.seed), out / "data", progress))
    returns = task.returns()
    say(f"    task data: {len(task.episodes)} episodes, returns mean {returns.mean():.0f} max {returns.max():.0f}")

    bundle_dir = out / "models"
    say(f"2/4 training -> {bundle_dir}")
    return config.train_bundle(bundle_dir, task, [random], config.seed, say, progress)


def write_outputs(report: dict, latencies: np.ndarray, out: Path) -> None:
    write_json(out / "quadruped.json", report)
    write_csv(out / "quadruped.csv", [{"episode": i} | {k: e[k] for k in ("return", "score", "length", "missed_deadlines",
                                                                         "achieved_hz")}
                                      for i, e in enumerate(report["episodes"])])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(latencies, bins=50, color="tab:blue")
    ax.axvline(1e3 / report["control_hz"], color="tab:red", linestyle="--", label=f"deadline ({report['control_hz']:.0f} Hz)")
    ax.set_xlabel("plan latency (ms)")
    ax.set_ylabel("control steps")
    ax.set_title(f"{report['config']['env_id']} MPC, backend {report['backend']}: p50 {report['latency_ms']['p50']:.2f} ms")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "quadruped_latency.png", dpi=120)
    plt.close(fig)
