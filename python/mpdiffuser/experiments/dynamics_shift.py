"""Adaptation to novel dynamics (design section 6, the composition's second promise): train
MPDiffuser on a nominal robot, change its physics (mass, friction, actuator gain, or a defect of
one leg or knee: envs.DEFECTS), collect a small dataset on the changed robot (the nominal
controller's rollouts plus random actions), fine-tune only the dynamics model on it, and compare
on the changed robot: the original models, the models with the fine-tuned dynamics model, planner
and dynamics both fine-tuned (the upper reference), the planner-only sampler (lambda = 0) and
behaviour cloning trained on that robot's own data. The planner and ranker files are checked to
stay byte-identical. Every diffusion method is diagnosed (diagnose: plan-vs-robot error, the
dynamics model's error on the changed robot, the nominal one and the visited states, how far the
dynamics update moves the executed action). Paired gains (same start states) say which
differences are real. A grid experiment (experiments.grid): cached cells, --ray.

    mpdiffuser experiment dynamics --quick       # minutes on 2 CPU cores
    mpdiffuser experiment dynamics --env Walker2d-v5 --physics weak-left-leg damped-right-knee --seeds 0 1 2
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpdiffuser.config import TrainConfig
from mpdiffuser.envs import PhysicsChange
from mpdiffuser.experiments.common import (ExperimentConfig, check_model_options, episode_rows, mean_stderr, sha256,
                                           test_start)
from mpdiffuser.experiments.grid import Cell, Experiment
from mpdiffuser.models.bundle import BundleSpec

ORIGINAL, FINE_TUNED, PLANNER_ONLY = "original models", "fine-tuned dynamics", "planner only (lambda=0)"
BOTH_TUNED = "fine-tuned planner and dynamics"  # the upper reference: the whole model adapted
BC = "behaviour cloning (this robot's data)"
METHODS = (ORIGINAL, FINE_TUNED, BOTH_TUNED, PLANNER_ONLY, BC)
NOMINAL_METHODS = (ORIGINAL, PLANNER_ONLY, BC)  # on the nominal robot there is nothing to adapt
GAINS = ((FINE_TUNED, ORIGINAL), (BOTH_TUNED, ORIGINAL), (ORIGINAL, PLANNER_ONLY), (FINE_TUNED, BC))  # paired a - b
ADAPT_DATA = ("policy", "mpc")  # DynamicsShiftConfig.adapt_data
ACTION_SHIFT_STATES = 50  # visited states over which diagnose measures how far the dynamics update moves u_0
HELDOUT_SEED = 1000  # rollout seed offset of the held-out random-action data (never a training rollout's)
UNCHANGED_FILES = ("planner.pt", "reward.pt", "bundle.json")


@dataclass(frozen=True)
class DynamicsShiftConfig(ExperimentConfig):
    env_id: str = "Hopper-v5"
    shifts: tuple[PhysicsChange, ...] = (PhysicsChange(mass=1.5), PhysicsChange(friction=0.4),
                                         PhysicsChange(gear=0.6))
    seeds: tuple[int, ...] = (0,)  # training seeds; each seed's data are rolled out with it too
    policy_seed: int = 0  # the behaviour policy's training seed: one policy for every training seed
    out_dir: str = "runs/dynamics"
    shift_transitions: int = 10_000  # behaviour-policy rollouts on each changed robot
    shift_random_transitions: int = 5000
    finetune_steps: int = 2000  # fine-tuning steps of the dynamics model on each changed robot
    # Fraction of the fine-tuning transitions drawn from the nominal robot's data (whole episodes,
    # seeded), the rest the changed robot's: 0 fine-tunes on the changed robot's data alone.
    finetune_replay: float = 0.0
    consistency_steps: int = 200  # the diagnosis's closed-loop episode (diagnose); 0: no diagnosis
    # the changed robot's adaptation data besides its random actions: "policy" (the nominal behaviour
    # policy's rollouts) or "mpc" (the nominal MPDiffuser controller's own rollouts on the changed
    # robot: the states its loop visits)
    adapt_data: str = "policy"

    @classmethod
    def quick(cls, **changes) -> "DynamicsShiftConfig":
        base = cls(out_dir="runs/dynamics-quick", policy_dir="runs/policies-quick", policy_steps=5000,
                   task_transitions=10_000, random_transitions=5000, shift_transitions=3000,
                   shift_random_transitions=1500, train_steps=2000, ranker_steps=1000, finetune_steps=1000, episodes=5)
        return dataclasses.replace(base, **changes)

    def __post_init__(self) -> None:
        self.sampler_options  # a bad N or g fails here, not after hours of training
        check_model_options(self.width, self.action_weight, self.prediction)
        if not self.shifts or any(s.is_nominal for s in self.shifts):
            raise ValueError("DynamicsShiftConfig needs at least one non-nominal PhysicsChange")
        if self.episodes < 1 or self.max_steps < 1 or self.finetune_steps < 1:
            raise ValueError("episodes, max_steps and finetune_steps must be >= 1")
        if not 0.0 <= self.finetune_replay < 1.0:
            raise ValueError(f"finetune_replay must be in [0, 1), got {self.finetune_replay}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"DynamicsShiftConfig needs distinct seeds, got {list(self.seeds)}")
        if self.adapt_data not in ADAPT_DATA:
            raise ValueError(f"adapt_data must be one of {', '.join(ADAPT_DATA)}, got {self.adapt_data!r}")


def fine_tune_dynamics(base_dir: Path, out_dir: Path, data: list, steps: int, seed: int, progress: bool,
                       device: str = "cpu") -> dict:
    """Copy the bundle at `base_dir` to `out_dir` (models only, no checkpoints) and fine-tune its
    dynamics model on `data`; returns the training summary. Everything else stays as it was."""
    from mpdiffuser.config import TrainConfig
    from mpdiffuser.training.runtime import TrainRuntime
    from mpdiffuser.training.train import train_model

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in UNCHANGED_FILES:
        shutil.copyfile(base_dir / name, out_dir / name)
    if not (out_dir / "checkpoints" / "dynamics.finetune.ckpt").exists():  # else resume the fine-tuning
        shutil.copyfile(base_dir / "dynamics.pt", out_dir / "dynamics.pt")
    return train_model(out_dir, "dynamics", data, TrainConfig(steps=steps, seed=seed), fine_tune=True,
                       progress=progress, runtime=TrainRuntime(device=device))


def replay_data(nominal: list, fraction: float, new_transitions: int, seed: int) -> list:
    """Whole episodes of the `nominal` datasets, drawn without replacement in a seeded order until
    they hold fraction / (1 - fraction) x `new_transitions` transitions, so that about `fraction`
    of the fine-tuning data is the nominal robot's; [] for fraction 0."""
    from mpdiffuser.data.dataset import OfflineDataset

    if fraction == 0.0:
        return []
    episodes = [e for d in nominal for e in d.episodes]
    wanted = fraction / (1.0 - fraction) * new_transitions
    chosen, count = [], 0
    for i in np.random.default_rng(seed).permutation(len(episodes)):
        if count >= wanted:
            break
        chosen.append(episodes[i])
        count += episodes[i].length
    return [OfflineDataset(chosen, nominal[0].metadata | {"name": f"replay of the nominal data ({count} transitions)"})]


def heldout_dynamics_loss(bundle_dir: Path, data, samples: int = 4096, seed: int = 123) -> float:
    """The dynamics model's denoising loss (its training objective: MSE to its prediction target,
    the clean states or the noise; conditioned, levels k uniform) on windows of `data` it was not
    trained on. Windows, levels and noise depend only on `seed`, so two bundles' dynamics models
    are compared on exactly the same draws."""
    import torch

    from mpdiffuser.data.windows import WindowSampler
    from mpdiffuser.models.bundle import BundleSpec, load_weights
    from mpdiffuser.training.losses import DynamicsLoss

    spec = BundleSpec.load(bundle_dir)
    model = load_weights(bundle_dir, "dynamics", spec)
    windows = WindowSampler(data, spec.states, spec.actions, spec.model.horizon, spec.conditions)
    batch = {k: torch.from_numpy(v) for k, v in windows.sample(np.random.default_rng(seed), samples).items()}
    with torch.no_grad():
        loss = DynamicsLoss(spec.model.num_steps, 0.0, spec.model.prediction)
        return float(loss(model, batch, torch.Generator().manual_seed(seed)))


class DynamicsShift(Experiment):
    """The grid: tasks are the nominal robot and each changed one; every seed trains its nominal
    models once (prepare_seed), every changed robot its adapted models (prepare)."""

    name = "dynamics"
    LEGACY = {"adapt_data": "policy"}
    GRID_FIELDS = ("out_dir", "policy_dir", "seeds", "shifts", "threads")  # cells cached before adapt_data existed used the behaviour policy's data
    score_note = ("D4RL-normalized score, mean over the evaluation episodes of all seeds; stderr over the seeds' "
                  "means; gains are paired differences (same seed, same start state)")

    def tasks(self) -> list[str]:
        return ["nominal", *(p.tag for p in self.config.shifts)]

    def methods(self) -> list[str]:
        return list(METHODS)

    def cells(self) -> list[Cell]:
        return [c for c in super().cells() if c.task != "nominal" or c.method in NOMINAL_METHODS]

    def key(self, cell: Cell) -> dict:
        return self.config_key() | {"physics": dataclasses.asdict(self.physics(cell.task)),
                                    "cell": dataclasses.asdict(cell)}

    def physics(self, task: str) -> PhysicsChange:
        return next((p for p in self.config.shifts if p.tag == task), PhysicsChange())

    def models(self, seed: int) -> Path:
        return self.out / "models" / f"s{seed}"

    def _data(self, seed: int, physics: PhysicsChange | None = None, kind: str = "medium", rollout_seed=None,
              progress: bool = False):
        """The robot's data: nominal (task_transitions / random_transitions) or changed
        (shift_transitions / shift_random_transitions), rolled out with the seed (or rollout_seed)."""
        from mpdiffuser.data.dataset import load_dataset
        from mpdiffuser.data.generate import GenerateConfig, generate

        c = self.config
        changed = physics is not None and not physics.is_nominal
        seed = seed if rollout_seed is None else rollout_seed
        if kind == "medium":
            n = c.shift_transitions if changed else c.task_transitions
            recipe = GenerateConfig(c.env_id, "medium", n, c.policy_steps, seed=seed, policy_seed=c.policy_seed,
                                    physics=physics if changed else None)
        else:
            n = c.shift_random_transitions if changed else c.random_transitions
            recipe = GenerateConfig(c.env_id, "random", n, seed=seed, physics=physics if changed else None)
        return load_dataset(generate(recipe, c.data_dir, progress, c.policy_dir))

    def _mpc_data(self, seed: int, physics: PhysicsChange, base_dir: Path, log, progress: bool):
        """shift_transitions transitions of the nominal MPDiffuser controller running on the changed
        robot (episodes from starts 30000 (seed + 1) + i), cached in the data folder."""
        from mpdiffuser.control.mpc import MPCPolicy
        from mpdiffuser.data.dataset import OfflineDataset, load_dataset
        from mpdiffuser.envs import make_env
        from mpdiffuser.sampling.sampler import Sampler

        c = self.config
        path = c.data_dir / f"{c.env_id.split('-')[0].lower()}-mpc-{physics.tag}-s{seed}.hdf5"
        if path.exists():
            return load_dataset(path)
        sampler = Sampler(base_dir / "model.safetensors", c.backend, threads=c.threads, env_id=c.env_id)
        policy, env = MPCPolicy(sampler, sampler.defaults), make_env(c.env_id, physics=physics)
        episodes, count, start = [], 0, 30_000 * (seed + 1)
        while count < c.shift_transitions:
            episode_seed = start + len(episodes)
            episodes.append(_mpc_episode(policy, env, episode_seed, episode_seed * 10_000,
                                         min(c.max_steps, c.shift_transitions - count)))
            count += episodes[-1].length
        env.close()
        data = OfflineDataset(episodes, {"name": path.stem, "env_id": c.env_id,
                                         "source": "the nominal MPDiffuser controller on the changed robot"})
        path.parent.mkdir(parents=True, exist_ok=True)
        data.save_hdf5(path)
        log(f"    {physics.tag}: {count} transitions of the nominal controller on the changed robot -> {path}")
        return data

    def prepare_seed(self, seed: int, log, progress: bool) -> None:
        c = self.config
        log(f"seed {seed}: nominal data ({c.env_id}, SAC {c.policy_steps} steps, policies in {c.policy_dir}) "
            "and models")
        task, random = self._data(seed, progress=progress), self._data(seed, kind="random", progress=progress)
        c.train_bundle(self.models(seed) / "nominal", task, [random], seed, log, progress)

    def prepare(self, task: str, seed: int, log, progress: bool) -> None:
        """On a changed robot: its data, the dynamics model fine-tuned alone (planner and ranker
        checked byte-identical), and planner and dynamics both fine-tuned (the upper reference)."""
        from mpdiffuser.export import export_model
        from mpdiffuser.training.runtime import TrainRuntime
        from mpdiffuser.training.train import train_model

        if task == "nominal":
            return
        c, physics = self.config, self.physics(task)
        base_dir, tuned_dir, both_dir = (self.models(seed) / name for name in ("nominal", task, f"{task}-both"))
        shift_task = (self._data(seed, physics, progress=progress) if c.adapt_data == "policy" else
                      self._mpc_data(seed, physics, base_dir, log, progress))
        shift_random = self._data(seed, physics, kind="random", progress=progress)
        new = shift_task.num_transitions + shift_random.num_transitions
        nominal = [self._data(seed), self._data(seed, kind="random")]
        replay = replay_data(nominal, c.finetune_replay, new, seed)
        info = fine_tune_dynamics(base_dir, tuned_dir, [shift_task, shift_random, *replay], c.finetune_steps, seed,
                                  progress, c.device)
        log(f"    {task}: dynamics fine-tuned on {new} transitions: {c.finetune_steps} steps, final loss "
            f"{info['final_loss']:.4f}")
        checks = {name: sha256(base_dir / name) == sha256(tuned_dir / name) for name in UNCHANGED_FILES}
        if not all(checks.values()) or sha256(base_dir / "dynamics.pt") == sha256(tuned_dir / "dynamics.pt"):
            raise RuntimeError(f"fine-tuning changed more than the dynamics model, or not it: {checks}")
        export_model(tuned_dir, tuned_dir / "model.safetensors", c.sampler_options, weights=c.weights)
        both_dir.mkdir(parents=True, exist_ok=True)
        for name in ("reward.pt", "bundle.json", "dynamics.pt"):
            shutil.copyfile((tuned_dir if name == "dynamics.pt" else base_dir) / name, both_dir / name)
        if not (both_dir / "checkpoints" / "planner.finetune.ckpt").exists():
            shutil.copyfile(base_dir / "planner.pt", both_dir / "planner.pt")
        train_model(both_dir, "planner", [shift_task], TrainConfig(steps=c.finetune_steps, seed=seed), fine_tune=True,
                    progress=progress, runtime=TrainRuntime(device=c.device))
        export_model(both_dir, both_dir / "model.safetensors", c.sampler_options, weights=c.weights)

    def run(self, cell: Cell, log, progress: bool) -> dict:
        from mpdiffuser.control.bc import BCPolicy
        from mpdiffuser.control.evaluate import evaluate
        from mpdiffuser.control.mpc import MPCPolicy
        from mpdiffuser.sampling.sampler import Sampler

        c, physics = self.config, self.physics(cell.task)
        folder = {ORIGINAL: "nominal", PLANNER_ONLY: "nominal", FINE_TUNED: cell.task,
                  BOTH_TUNED: f"{cell.task}-both"}.get(cell.method)
        start = test_start(cell.seed)
        sampler = options = None
        if folder is not None:
            sampler = Sampler(self.models(cell.seed) / folder / "model.safetensors", c.backend, threads=c.threads,
                              env_id=c.env_id)
            options = sampler.defaults.replace(dynamics_weight=0.0 if cell.method == PLANNER_ONLY else 1.0)
            policy = MPCPolicy(sampler, options)
        else:  # behaviour cloning on the robot's own data
            spec = BundleSpec.load(self.models(cell.seed) / "nominal")
            data = self._data(cell.seed, physics)
            policy, _ = BCPolicy.train(data, spec.states, spec.actions, TrainConfig(steps=c.train_steps,
                                                                                  seed=cell.seed),
                                       progress=progress, device=c.device)
        summary = evaluate(policy, c.env_id, c.episodes, start, c.max_steps, progress=progress,
                           desc=f"{cell.task} {cell.method}", physics=None if physics.is_nominal else physics)
        metrics = {}
        if sampler is not None and c.consistency_steps:
            metrics = diagnose(self, cell, sampler, options, physics, start)
        return {"episodes": episode_rows(summary), "metrics": metrics}

    def report(self, report: dict, log) -> None:
        rows = [r | {"robot": r["task"]} for r in report["episodes"]]
        report["gains"] = paired_gains(rows)
        log("paired gains (mean +- standard error over the seeds' mean gains; seeds with a positive gain)")
        for e in report["gains"]:
            error = e["stderr_seeds"] if e["seeds"] > 1 else e["stderr"]
            print(f"    {e['robot']:22s} {e['gain']:62s} {e['mean']:+6.1f} +- {error:4.1f} "
                  f"({e['seeds_positive']}/{e['seeds']} seeds positive)")


def diagnose(experiment: DynamicsShift, cell: Cell, sampler, options, physics: PhysicsChange, start: int) -> dict:
    """Why a dynamics model helps or not on this robot (one closed-loop episode of consistency_steps
    from the test's first start): the plan-vs-robot state error; the dynamics model's held-out
    denoising loss on the changed robot's random-action data (another rollout seed), on the
    nominal robot's (forgetting), and on the transitions the MPC loop itself visits; how far the
    dynamics update moves the executed action (RMS of u_0 at lambda = 1 minus u_0 at lambda = 0,
    same noise, normalized units) over the visited states."""
    from mpdiffuser.control.consistency import plan_consistency

    c = experiment.config
    lam = options.dynamics_weight
    changed = None if physics.is_nominal else physics
    result = plan_consistency(sampler, c.env_id, lambdas=(lam,), episodes=1, seed=start, max_steps=c.consistency_steps,
                              options=options, physics=changed, progress=False)
    measured = result["lambdas"][f"{lam:g}"]
    metrics = {k: float(measured[k]) for k in ("state_error_first", "state_error_window")}
    visited, states = _visited(experiment, sampler, options, changed, start)
    spec = sampler.spec
    moves = []
    for i, x in enumerate(states[:ACTION_SHIFT_STATES]):
        a = sampler.plan(x, start + i, options.replace(dynamics_weight=1.0)).actions[0]
        b = sampler.plan(x, start + i, options.replace(dynamics_weight=0.0)).actions[0]
        moves.append(np.mean((spec.actions.normalize(a) - spec.actions.normalize(b)) ** 2))
    metrics["action_shift_rms"] = float(np.sqrt(np.mean(moves))) if moves else float("nan")
    bundle = sampler.model_file.parent
    heldout = experiment._data(cell.seed, changed, kind="random", rollout_seed=cell.seed + HELDOUT_SEED)
    nominal = experiment._data(cell.seed, None, kind="random", rollout_seed=cell.seed + HELDOUT_SEED)
    metrics["dynamics_loss_changed"] = heldout_dynamics_loss(bundle, heldout)
    metrics["dynamics_loss_nominal"] = heldout_dynamics_loss(bundle, nominal)
    if visited is not None:
        metrics["dynamics_loss_visited"] = heldout_dynamics_loss(bundle, visited)
    return metrics


def _visited(experiment: DynamicsShift, sampler, options, physics, start: int):
    """The transitions of one MPC episode (consistency_steps at most) on the robot: (a dataset, or
    None when shorter than a window; the visited states)."""
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.data.dataset import OfflineDataset
    from mpdiffuser.envs import make_env

    c = experiment.config
    env = make_env(c.env_id, physics=physics)
    episode = _mpc_episode(MPCPolicy(sampler, options), env, start, start, c.consistency_steps)
    env.close()
    if episode.length <= sampler.spec.model.horizon:
        return None, episode.observations
    return OfflineDataset([episode], {"name": "visited", "env_id": c.env_id}), episode.observations


def _mpc_episode(policy, env, env_seed: int, plan_seed: int, steps: int):
    """One episode of `policy` in `env` (reset with env_seed, the policy with plan_seed), at most
    `steps` steps, as a dataset Episode."""
    from mpdiffuser.data.dataset import Episode

    obs, _ = env.reset(seed=env_seed)
    policy.reset(plan_seed)
    xs, us, rs, terminated = [obs], [], [], False
    for _ in range(steps):
        u = policy.act(obs)
        obs, r, terminated, truncated, _ = env.step(u)
        xs.append(obs), us.append(u), rs.append(r)
        if terminated or truncated:
            break
    return Episode(np.asarray(xs), np.asarray(us), np.asarray(rs), terminated=bool(terminated))


def run_dynamics_shift(config: DynamicsShiftConfig, progress: bool = True, ray_address: str | None = None) -> dict:
    """The grid (nominal + changed robots) x seeds x methods, here or on Ray; returns the report."""
    from mpdiffuser.experiments.grid import run_grid

    return run_grid(lambda: DynamicsShift(config), ray_address, progress)


def paired_gains(rows: list[dict]) -> list[dict]:
    """For each robot and each (a, b) of GAINS: a's score minus b's on the same seed and start
    state; the mean, its standard error over those pairs and over the seeds' mean gains, and how
    many seeds' mean gain is positive."""
    score = {(r["robot"], r["method"], r["seed"], r["episode"]): r["score"] for r in rows}
    out = []
    for robot in dict.fromkeys(r["robot"] for r in rows):
        for a, b in GAINS:
            pairs = [(seed, score[(robot, a, seed, i)] - score[(robot, b, seed, i)])
                     for (r, m, seed, i) in score if r == robot and m == a and (robot, b, seed, i) in score]
            if not pairs:
                continue
            by_seed = {}
            for seed, d in pairs:
                by_seed.setdefault(seed, []).append(d)
            mean, stderr = mean_stderr(d for _, d in pairs)
            out.append({"robot": robot, "gain": f"{a} - {b}", "n": len(pairs), "mean": mean, "stderr": stderr,
                        "stderr_seeds": mean_stderr(np.mean(v) for v in by_seed.values())[1],
                        "seeds_positive": int(sum(np.mean(v) > 0 for v in by_seed.values())), "seeds": len(by_seed)})
    return out
