"""Scarce expert data with plentiful other data (design section 6, the composition's first promise):
the planner (and every baseline) trains on the first n episodes of an expert dataset; the dynamics
model and the ranker train on those plus other data the planner cannot use (random transitions,
another policy's data). MPDiffuser's dynamics update is the only way that other data reaches the
plan; planner-only (same planner, lambda = 0) is the control.

One normalizer per robot: the state and action normalizers and the return condition's scale are
fitted on the whole expert file plus every extra file of the robot, for every n and every method,
so that n and the extra data change what the models learn and nothing else (fitting them on each
cell's own data makes planner-only move with data it never trains on).

    mpdiffuser experiment scarce --dataset data/hopper-medium-s0.hdf5 --extra data/hopper-random-s0.hdf5
    mpdiffuser experiment scarce --quick --ray auto    # the grid as Ray tasks on a running cluster
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpdiffuser.config import TrainConfig
from mpdiffuser.envs import ROBOTICS_PREFIXES
from mpdiffuser.experiments.common import (ExperimentConfig, check_model_options, episode_rows, pyplot, score_error,
                                           suite_dataset, test_start)
from mpdiffuser.experiments.grid import Cell, Experiment

METHODS = ("MPDiffuser", "planner only (lambda=0)", "behaviour cloning")
DECISION_DIFFUSER = "Decision Diffuser"
LAMBDAS = {"MPDiffuser": 1.0, "planner only (lambda=0)": 0.0}


@dataclass(frozen=True)
class ScarceConfig(ExperimentConfig):
    out_dir: str = "runs/scarce"
    datasets: tuple[str, ...] = ("data/hopper-medium-s0.hdf5",)  # expert data, one file per robot (task data)
    extra: tuple[str, ...] = ("data/hopper-random-s0.hdf5",)  # for the dynamics model and ranker only (per robot)
    expert_episodes: tuple[int, ...] = (5, 10, 25, 100)  # n: the planner's (and the baselines') first n episodes
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # training seeds
    episodes: int = 10
    bc_steps: int = 5000
    diffusion_baselines: tuple[str, ...] = ()  # "decision-diffuser": trained on the n expert episodes too
    consistency_steps: int = 200  # plan-vs-robot state error of the diffusion methods over this many steps (0: off)

    @classmethod
    def quick(cls, **changes) -> "ScarceConfig":
        base = cls(out_dir="runs/scarce-quick", expert_episodes=(5, 25), seeds=(0,), train_steps=1000,
                   ranker_steps=500, bc_steps=1000, episodes=3, max_steps=300, consistency_steps=50)
        return dataclasses.replace(base, **changes)

    def __post_init__(self) -> None:
        self.sampler_options
        check_model_options(self.width, self.action_weight, self.prediction)
        if not self.datasets or not self.seeds or not self.expert_episodes:
            raise ValueError("ScarceConfig needs datasets, seeds and expert_episodes")
        if any(int(n) != n or n < 1 for n in self.expert_episodes):
            raise ValueError(f"expert_episodes must be counts >= 1, got {list(self.expert_episodes)}")
        if self.consistency_steps < 0:
            raise ValueError(f"consistency_steps must be >= 0, got {self.consistency_steps}")
        for name in self.diffusion_baselines:
            if name != "decision-diffuser":
                raise ValueError(f"the scarce experiment runs the decision-diffuser baseline only, got {name!r}")

    @property
    def methods(self) -> tuple[str, ...]:
        return METHODS + ((DECISION_DIFFUSER,) if self.diffusion_baselines else ())


class ScarceExpert(Experiment):
    name = "scarce"
    GRID_FIELDS = ("out_dir", "policy_dir", "seeds", "expert_episodes", "datasets", "extra", "threads",
                   "diffusion_baselines")
    score_note = ("D4RL-normalized score (goal-conditioned robots: success rate in %): mean over all evaluation "
                  "episodes of all training seeds; stderr over the "
                  "seeds' means. Planner (and baselines) on the first n expert episodes; dynamics model and ranker "
                  "on those plus the extra data; normalizers and return scale from the whole expert file and the "
                  "extra data (one per robot)")

    def __init__(self, config: ScarceConfig) -> None:
        super().__init__(config)
        self._tasks: dict[str, tuple[str, int]] = {}
        for path in config.datasets:
            data = suite_dataset(path)
            if not data.env_id:
                raise ValueError(f"dataset {path} names no environment: the experiment evaluates on its robot")
            extras = self.extras(path)
            if not extras:
                raise ValueError(f"no --extra file is of {data.env_id} (the robot of {path})")
            for n in config.expert_episodes:
                if n > len(data.episodes):
                    raise ValueError(f"{path} has {len(data.episodes)} episodes, fewer than n = {n}")
                self._tasks[f"{Path(path).stem}-{n}ep"] = (path, int(n))

    def extras(self, path: str) -> list:
        """The extra datasets of the robot of the expert file `path`."""
        env_id = suite_dataset(path).env_id
        found = [suite_dataset(e) for e in self.config.extra]
        for e, d in zip(self.config.extra, found):
            if (d.state_dim, d.action_dim) != (suite_dataset(path).state_dim, suite_dataset(path).action_dim) and d.env_id == env_id:
                raise ValueError(f"extra dataset {e} has other dimensions than {path}")
        return [d.check_env() for d in found if d.env_id == env_id]

    def tasks(self) -> list[str]:
        return list(self._tasks)

    def methods(self) -> list[str]:
        return list(self.config.methods)

    def key(self, cell: Cell) -> dict:
        path, n = self._tasks[cell.task]
        return self.config_key() | {"expert": path, "n": n, "extra": [e for e in self.config.extra
                                                          if suite_dataset(e).env_id == suite_dataset(path).env_id],
                         "cell": dataclasses.asdict(cell)}

    def _data(self, task: str):
        from mpdiffuser.data.dataset import OfflineDataset

        path, n = self._tasks[task]
        full = suite_dataset(path)
        expert = OfflineDataset(full.episodes[:n], dict(full.metadata) | {"name": f"{Path(path).stem}-{n}ep"})
        return full, expert, self.extras(path)

    def bundle_dir(self, task: str, seed: int) -> Path:
        return self.out / "models" / task / f"s{seed}"

    def prepare(self, task: str, seed: int, log, progress: bool) -> None:
        """Planner on the n expert episodes; dynamics and ranker on those plus the extra data; one
        normalizer per robot (whole expert file + extra data); then the model file."""
        from mpdiffuser.models.bundle import BundleSpec

        full, expert, extras = self._data(task)
        c = self.config
        spec = BundleSpec.fit(full, [full, *extras], c.model_config(full.state_dim, full.action_dim))
        c.train_bundle(self.bundle_dir(task, seed), expert, extras, seed, log, progress, spec=spec)

    def run(self, cell: Cell, log, progress: bool) -> dict:
        from mpdiffuser.control.evaluate import evaluate
        from mpdiffuser.control.mpc import MPCPolicy
        from mpdiffuser.models.bundle import BundleSpec

        c = self.config
        full, expert, _ = self._data(cell.task)
        env_id = full.env_id
        bundle = self.bundle_dir(cell.task, cell.seed)
        planner = options = None
        if cell.method in LAMBDAS:
            from mpdiffuser.sampling.sampler import Sampler

            planner = Sampler(bundle / "model.safetensors", c.backend, threads=c.threads, env_id=env_id)
            options = planner.defaults.replace(dynamics_weight=LAMBDAS[cell.method])
            policy = MPCPolicy(planner, options)
        elif cell.method == DECISION_DIFFUSER:
            from mpdiffuser.control import diffusion_baselines as db

            db.train_baseline(bundle, "decision-diffuser", expert, TrainConfig(steps=c.train_steps, seed=cell.seed),
                              progress, c.device)
            planner = db.DecisionDiffuserSampler(bundle, env_id=env_id)
            options = planner.defaults
            policy = MPCPolicy(planner, options)
        elif cell.method == "behaviour cloning":
            from mpdiffuser.control.bc import BCPolicy

            spec = BundleSpec.load(bundle)
            policy, _ = BCPolicy.train(expert, spec.states, spec.actions, TrainConfig(steps=c.bc_steps, seed=cell.seed),
                                       progress=progress, device=c.device)
        else:
            raise ValueError(f"unknown method {cell.method!r}: choose from {', '.join(c.methods)}")
        start = test_start(cell.seed)  # the same start states for every method and every n of a seed
        summary = evaluate(policy, env_id, c.episodes, start, c.max_steps, progress=progress,
                           desc=f"{cell.task} {cell.method}")
        metrics = {}
        if planner is not None and c.consistency_steps:
            from mpdiffuser.control.consistency import plan_consistency

            lam = options.dynamics_weight if cell.method in LAMBDAS else 1.0
            result = plan_consistency(planner, env_id, lambdas=(lam,), episodes=1, seed=start,
                                      max_steps=c.consistency_steps, options=options, progress=False)
            measured = result["lambdas"][f"{lam:g}"]
            metrics = {k: float(measured[k]) for k in ("state_error_first", "state_error_window")}
        return {"episodes": episode_rows(summary), "metrics": metrics}

    def report(self, report: dict, log) -> None:
        """Score against n per method (the plot scarce_vs_n.png) and the data's own score per task."""
        report["expert_episodes"] = {task: n for task, (_, n) in self._tasks.items()}
        plt = pyplot()
        summary = report["summary"]
        if not summary:
            return
        robots = list(dict.fromkeys(Path(p).stem for p, _ in self._tasks.values()))
        fig, axes = plt.subplots(1, len(robots), figsize=(5.5 * len(robots), 4), squeeze=False)
        for ax, robot in zip(axes[0], robots):
            for method in self.methods():
                points = sorted((self._tasks[e["task"]][1], e["score_mean"], score_error(e)) for e in summary
                                if e["method"] == method and e["task"].startswith(robot + "-"))
                if points:
                    n, mean, err = zip(*points)
                    ax.errorbar(n, mean, yerr=err, marker="o", capsize=3, label=method)
            ax.set_xscale("log")
            ax.set_xlabel("expert episodes the planner trains on")
            path = next(p for p, _ in self._tasks.values() if Path(p).stem == robot)
            goal = (suite_dataset(path).env_id or "").startswith(ROBOTICS_PREFIXES)
            ax.set_ylabel("success rate (%)" if goal else "D4RL-normalized score")
            ax.set_title(f"{robot}: score vs expert data (s.e. over seeds)", fontsize=9)
            ax.legend(fontsize=8)
        fig.tight_layout()
        self.out.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.out / "scarce_vs_n.png", dpi=120)
        plt.close(fig)


def run_scarce(config: ScarceConfig, progress: bool = True, ray_address: str | None = None) -> dict:
    """The grid (robots x n) x seeds x methods, here or on Ray; returns the report (also on disk)."""
    from mpdiffuser.experiments.grid import run_grid

    return run_grid(lambda: ScarceExpert(config), ray_address, progress)
