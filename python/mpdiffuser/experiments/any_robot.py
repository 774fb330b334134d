"""Closed-loop returns on robots the package does not name (any registered gymnasium environment
with box spaces): MPDiffuser (lambda = 1), the planner-only sampler (lambda = 0) and behaviour
cloning, trained on the same data and evaluated from the same start states; raw returns (D4RL has
no references for these robots). A grid experiment (experiments.grid): cached cells, --ray.

    mpdiffuser generate-data --env InvertedDoublePendulum-v5 --kind medium --policy-steps 20000 \\
        --transitions 20000 --out data
    mpdiffuser generate-data --env InvertedDoublePendulum-v5 --kind random --transitions 10000 --out data
    mpdiffuser experiment any-robot --dataset data/inverteddoublependulum-medium-s0.hdf5 \\
        --extra data/inverteddoublependulum-random-s0.hdf5 --out runs/any-robot
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from mpdiffuser.config import TrainConfig
from mpdiffuser.experiments.common import ExperimentConfig, check_model_options, episode_rows, test_start
from mpdiffuser.experiments.grid import Cell, Experiment

METHODS = ("MPDiffuser", "planner only (lambda=0)", "behaviour cloning")
LAMBDAS = {"MPDiffuser": 1.0, "planner only (lambda=0)": 0.0}
@dataclass(frozen=True)
class AnyRobotConfig(ExperimentConfig):
    out_dir: str = "runs/any-robot"
    datasets: tuple[str, ...] = ()  # the robots' data files (.hdf5, .npz, minari:<id>), one task each
    extra: tuple[str, ...] = ()  # for the dynamics model and ranker only, each with the task of its robot
    seeds: tuple[int, ...] = (0,)  # training seeds
    episodes: int = 10

    @classmethod
    def quick(cls, **changes) -> "AnyRobotConfig":
        base = cls(out_dir="runs/any-robot-quick", train_steps=1000, ranker_steps=500, episodes=3, max_steps=300)
        return dataclasses.replace(base, **changes)

    def __post_init__(self) -> None:
        self.sampler_options
        check_model_options(self.width, self.action_weight, self.prediction)
        if not self.seeds:
            raise ValueError("AnyRobotConfig needs at least one seed")


class AnyRobot(Experiment):
    name = "any-robot"
    score = "return"
    GRID_FIELDS = ("out_dir", "policy_dir", "seeds", "datasets", "threads")
    score_note = "raw episode return (no D4RL reference): mean over all episodes of all seeds; stderr over seeds"

    def __init__(self, config: AnyRobotConfig) -> None:
        from mpdiffuser.data.dataset import load_dataset

        super().__init__(config)
        if not config.datasets:
            raise ValueError("the any-robot experiment needs --dataset: the robot's data (mpdiffuser generate-data)")
        self.data = {}
        for spec in config.datasets:
            data = load_dataset(spec).check_env()
            if not data.env_id:
                raise ValueError(f"dataset {spec} names no environment: the experiment evaluates on its robot")
            self.data[Path(str(spec)).stem] = data
        self.extra = [load_dataset(e).check_env() for e in config.extra]

    def tasks(self) -> list[str]:
        return list(self.data)

    def methods(self) -> list[str]:
        return list(METHODS)

    def bundle_dir(self, task: str, seed: int) -> Path:
        return self.out / "models" / task / f"s{seed}"

    def _extra(self, task: str) -> list:
        return [e for e in self.extra if e.env_id == self.data[task].env_id]

    def prepare(self, task: str, seed: int, log, progress: bool) -> None:
        self.config.train_bundle(self.bundle_dir(task, seed), self.data[task], self._extra(task), seed, log, progress)

    def run(self, cell: Cell, log, progress: bool) -> dict:
        from mpdiffuser.control.bc import BCPolicy
        from mpdiffuser.control.evaluate import evaluate
        from mpdiffuser.control.mpc import MPCPolicy
        from mpdiffuser.models.bundle import BundleSpec
        from mpdiffuser.sampling.sampler import Sampler

        c, data = self.config, self.data[cell.task]
        bundle = self.bundle_dir(cell.task, cell.seed)
        if cell.method in LAMBDAS:
            sampler = Sampler(bundle / "model.safetensors", c.backend, threads=c.threads, env_id=data.env_id)
            policy = MPCPolicy(sampler, sampler.defaults.replace(dynamics_weight=LAMBDAS[cell.method]))
        else:
            spec = BundleSpec.load(bundle)
            policy, _ = BCPolicy.train(data, spec.states, spec.actions, TrainConfig(steps=c.train_steps,
                                                                                  seed=cell.seed),
                                       progress=progress, device=c.device)
        summary = evaluate(policy, data.env_id, c.episodes, test_start(cell.seed), c.max_steps, progress=progress,
                           desc=f"{cell.task} {cell.method}")
        return {"episodes": episode_rows(summary), "metrics": {}}

    def report(self, report: dict, log) -> None:
        report["data_return"] = {task: float(d.returns().mean()) for task, d in self.data.items()}


def run_any_robot(config: AnyRobotConfig, progress: bool = True, ray_address: str | None = None) -> dict:
    from mpdiffuser.experiments.grid import run_grid

    return run_grid(lambda: AnyRobot(config), ray_address, progress)
