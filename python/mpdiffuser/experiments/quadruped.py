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
from mpdiffuser.experiments.common import ExperimentConfig, check_model_options, pyplot
from mpdiffuser.experiments.grid import Cell, Experiment


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


class QuadrupedControl(Experiment):
    """One cell, (robot, seed, MPDiffuser at the loop's rate), on the experiment skeleton. Its
    preparation (data, training, export) resumes like every experiment's; its cell is never read
    back from the cache (CACHED False): a fixed-rate latency measurement is of the machine and the
    code that run it, so every run measures anew."""

    name = "quadruped"
    CACHED = False

    def tasks(self) -> list[str]:
        return [self.config.env_id]

    def seeds(self) -> list[int]:
        return [self.config.seed]

    def methods(self) -> list[str]:
        return [f"MPDiffuser at {self.config.control_hz:g} Hz"]

    @property
    def model_file(self) -> Path:
        return Path(self.config.model_file) if self.config.model_file else self.out / "models" / "model.safetensors"

    def prepare(self, task: str, seed: int, log, progress: bool) -> None:
        if self.config.model_file is not None:
            log(f"1-2/4 model file {self.config.model_file}: no data, no training")
            return
        _data_and_models(self.config, self.out, log, progress)

    def run(self, cell: Cell, log, progress: bool) -> dict:
        from mpdiffuser.control.mpc import MPCPolicy
        from mpdiffuser.envs import SCORE_REFERENCES, make_env
        from mpdiffuser.sampling.sampler import Sampler

        c = self.config
        backend = fastest_backend() if c.backend == "auto" else c.backend
        log(f"3/4 control: {c.episodes} episode(s) at {c.control_hz:.0f} Hz, backend {backend}")
        sampler = Sampler(self.model_file, backend, threads=c.threads, env_id=c.env_id)
        options = sampler.defaults.replace(num_candidates=c.candidates)
        sampler.warm_up(options)  # the workspace for this N and the first launch, outside the timed loop
        policy = MPCPolicy(sampler, options)
        env = make_env(c.env_id)
        episodes = [fixed_rate_episode(policy, env, 1000 + c.seed + i, c.control_hz, c.control_steps)
                    for i in range(c.episodes)]
        env.close()
        reference = SCORE_REFERENCES.get(c.env_id)
        latencies = [float(x) for e in episodes for x in e["latencies_ms"]]
        rows = [{"episode": i, "return": e["return"], "score": reference.normalize(e["return"]) if reference else None,
                 "length": e["length"], "missed_deadlines": e["missed_deadlines"], "achieved_hz": e["achieved_hz"]}
                for i, e in enumerate(episodes)]
        return {"episodes": rows, "metrics": {}, "control": [{"backend": backend, "options": dataclasses.asdict(options),
                                                              "latencies_ms": latencies}]}

    def report(self, report: dict, log) -> None:
        """The control run's figures at the top level: backend, options, rate, latency, deadlines."""
        c = self.config
        report["model_file"] = str(self.model_file)
        report["control_hz"] = c.control_hz
        if not report.get("control"):
            return
        control = report["control"][0]
        latencies = np.asarray(control.pop("latencies_ms"))
        report["backend"], report["options"] = control["backend"], control["options"]
        episodes = report["episodes"]
        scores = [e["score"] if e["score"] is not None else float("nan") for e in episodes]
        report |= {"score_mean": float(np.mean(scores)), "score_stderr": float(np.std(scores) / np.sqrt(len(scores))),
                   "return_mean": float(np.mean([e["return"] for e in episodes])),
                   "achieved_hz": float(np.mean([e["achieved_hz"] for e in episodes])),
                   "steps": int(latencies.size), "missed_deadlines": int(sum(e["missed_deadlines"] for e in episodes)),
                   "latency_ms": {q: float(np.percentile(latencies, p)) for q, p in
                                  (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}}
        self._latencies = latencies

    def plot(self, report: dict) -> None:
        if "latency_ms" in report:
            write_latency_histogram(report, self._latencies, self.out)

    def print_summary(self, report: dict, log) -> None:
        if "latency_ms" not in report:
            return
        c, lat = self.config, report["latency_ms"]
        log(f"4/4 {c.env_id} with backend {report['backend']}: score {report['score_mean']:.1f} +- "
            f"{report['score_stderr']:.1f} (return {report['return_mean']:.0f}); {report['steps']} control steps at "
            f"{report['achieved_hz']:.1f} Hz (target {c.control_hz:.0f}); plan latency p50 {lat['p50']:.2f} ms, p99 "
            f"{lat['p99']:.2f} ms, max {lat['max']:.2f} ms; missed deadlines {report['missed_deadlines']}")
        log(f"results in {self.out / 'quadruped.json'}, {self.out / 'quadruped.csv'}, "
            f"{self.out / 'quadruped_latency.png'}")


def run_quadruped(config: QuadrupedConfig, progress: bool = True, ray_address: str | None = None) -> dict:
    """Data, training, export, then fixed-rate control (here, or on a Ray worker); returns the report."""
    from mpdiffuser.experiments.grid import run_grid

    return run_grid(lambda: QuadrupedControl(config), ray_address, progress)


def _data_and_models(config: QuadrupedConfig, out: Path, say, progress: bool) -> Path:
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


def write_latency_histogram(report: dict, latencies: np.ndarray, out: Path) -> None:
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
