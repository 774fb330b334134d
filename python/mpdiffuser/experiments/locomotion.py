"""Offline locomotion, D4RL style (evaluation suite, item 1): Hopper, Walker2d and HalfCheetah with
locally generated medium, medium-replay and medium-expert datasets (or the user's own D4RL/Minari
files). On every task, for every training seed: MPDiffuser (lambda = 1), the planner-only
diffusion sampler (lambda = 0, same models), behaviour cloning on the same data and, with
`--baselines iql td3+bc` (d3rlpy, an optional install), offline RL baselines. On the first
task, the score against lambda and against the dynamics schedule. With `--return-targets`, each
seed's MPDiffuser and planner-only samplers also pick their return target g by validation episodes
(start states the test never uses) and run the test with it; with `--train-lengths` as well, two
more methods pick the planner's and dynamics model's training length and g together, from
snapshots of the same training run. Writes JSON, CSV and plots.
Every method's episodes are saved as they finish (<out>/episodes/), with what they depend on
(models, steps, starts): a rerun, or a run with more seeds or baselines, redoes only what is new.

    mpdiffuser experiment locomotion --quick     # minutes on 2 CPU cores: Hopper, one training seed
    mpdiffuser experiment locomotion             # larger data and training, three seeds: hours
    mpdiffuser experiment locomotion --dataset hopper-medium-v2.hdf5 --dataset minari:mujoco/walker2d/medium-v0
    mpdiffuser experiment locomotion --dataset data/hopper-medium-s0.hdf5 --baselines iql td3+bc
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpdiffuser.config import SamplerOptions, TrainConfig
from mpdiffuser.experiments.common import (VALIDATION_OFFSET, Log, ExperimentConfig, cached_dataset, cached_rows,
                                           check_model_options, episode_rows, grouped_bars, pyplot, score_error, slug,
                                           summarize, test_start, write_csv)
from mpdiffuser.experiments.grid import Cell, Experiment

METHODS = ("MPDiffuser", "planner only (lambda=0)", "behaviour cloning")
BASELINE_METHODS = {"iql": "IQL (d3rlpy)", "td3+bc": "TD3+BC (d3rlpy)"}
DIFFUSION_METHODS = {"diffuser": "Diffuser (value guidance)", "decision-diffuser": "Decision Diffuser"}
TUNED_METHODS = ("MPDiffuser, g by validation", "planner only, g by validation")
LENGTH_METHODS = ("MPDiffuser, steps and g by validation", "planner only, steps and g by validation")


@dataclass(frozen=True)
class LocomotionConfig(ExperimentConfig):
    envs: tuple[str, ...] = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5")
    kinds: tuple[str, ...] = ("medium", "medium-replay", "medium-expert")  # dataset kinds generated per robot
    datasets: tuple[str, ...] = ()  # the user's files (.hdf5, .npz, minari:<id>) instead of generated data
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds (diffusion models, ranker and BC)
    out_dir: str = "runs/locomotion"
    data_seed: int = 0
    expert_steps: int = 100_000  # SAC steps of the expert policy (medium-expert)
    bc_steps: int = 5000
    baselines: tuple[str, ...] = ()  # offline RL baselines from d3rlpy: "iql", "td3+bc"
    baseline_steps: int = 100_000  # their gradient steps (d3rlpy's reproductions: 500k-1M)
    baseline_seeds: tuple[int, ...] | None = None  # the seeds the baselines train with (None: every seed)
    # prior diffusion planners on the same data, normalizers, H, K, noise and starts:
    # "diffuser" (value guidance), "decision-diffuser" (return-conditioned states + inverse dynamics)
    diffusion_baselines: tuple[str, ...] = ()
    value_scales: tuple[float, ...] = (0.1,)  # Diffuser's guidance scales s: each seed picks one by validation
    consistency_steps: int = 0  # plan-vs-robot state error of every diffusion method over this many steps (0: off)
    return_targets: tuple[float, ...] = ()  # candidate return targets g: each seed picks one by validation
    validation_episodes: int = 3  # episodes per candidate g, from start states the test never uses
    train_lengths: tuple[int, ...] = ()  # candidate training steps of planner and dynamics, chosen with g
    lambdas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    schedules: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (5, 0), (1, 10), (1, 3))  # (every m, only last j)

    @classmethod
    def quick(cls, **changes) -> "LocomotionConfig":
        base = cls(envs=("Hopper-v5",), seeds=(0,), out_dir="runs/locomotion-quick",
                   policy_dir="runs/policies-quick", policy_steps=5000, expert_steps=10_000, task_transitions=10_000,
                   random_transitions=5000, train_steps=2000, ranker_steps=1000, bc_steps=2000, episodes=5,
                   lambdas=(0.0, 0.5, 1.0), schedules=((1, 0), (4, 0), (1, 5)))
        return dataclasses.replace(base, **changes)

    def __post_init__(self) -> None:
        self.sampler_options  # a bad N or g fails here, not after hours of training
        check_model_options(self.width, self.action_weight, self.prediction)
        if not self.seeds or self.episodes < 1 or self.max_steps < 1:
            raise ValueError("LocomotionConfig needs at least one seed, episodes >= 1 and max_steps >= 1")
        if self.episodes >= VALIDATION_OFFSET or self.validation_episodes < 1:
            raise ValueError(f"LocomotionConfig needs episodes < {VALIDATION_OFFSET} and validation_episodes >= 1")
        if not all(np.isfinite(self.return_targets)):
            raise ValueError(f"return_targets must be finite numbers, got {list(self.return_targets)}")
        if self.train_lengths and not self.return_targets:
            raise ValueError("train_lengths are chosen together with g: give return_targets too (the default g "
                             f"{SamplerOptions.return_target:g} alone tunes the training length only)")
        if any(int(n) != n or n < 1 for n in self.train_lengths) or len(set(self.train_lengths)) < len(
                self.train_lengths):
            raise ValueError(f"train_lengths must be distinct step counts >= 1, got {list(self.train_lengths)}")
        if not self.datasets and not (self.envs and self.kinds):
            raise ValueError("LocomotionConfig needs envs and kinds, or datasets")
        unknown = set(self.baselines) - set(BASELINE_METHODS)
        if unknown:
            raise ValueError(f"unknown baselines {sorted(unknown)}: choose from {', '.join(BASELINE_METHODS)}")
        if self.baseline_seeds is not None and not set(self.baseline_seeds) <= set(self.seeds):
            raise ValueError(f"baseline_seeds {list(self.baseline_seeds)} must be among the seeds {list(self.seeds)}")
        for name in self.diffusion_baselines:
            from mpdiffuser.control.diffusion_baselines import check_baseline

            check_baseline(name)
        if not self.value_scales or not all(np.isfinite(self.value_scales)) or min(self.value_scales) < 0:
            raise ValueError(f"value_scales must be finite numbers >= 0, got {list(self.value_scales)}")
        if self.consistency_steps < 0:
            raise ValueError(f"consistency_steps must be >= 0, got {self.consistency_steps}")
        if self.baselines:
            from mpdiffuser.control.baselines import require_d3rlpy

            require_d3rlpy()  # a missing optional install fails here, with the command, not after hours of training

    @property
    def methods(self) -> tuple[str, ...]:
        tuned = (TUNED_METHODS if self.return_targets else ()) + (LENGTH_METHODS if self.train_lengths else ())
        return (METHODS + tuned + tuple(DIFFUSION_METHODS[b] for b in self.diffusion_baselines)
                + tuple(BASELINE_METHODS[b] for b in self.baselines))


def schedule_label(every: int, last: int) -> str:
    if last:
        return f"last {last} steps" if every == 1 else f"every {every}, last {last}"
    return "every step" if every == 1 else f"every {every} steps"


def _task_files(config: LocomotionConfig, log: Log, progress: bool) -> list[tuple[str, str]]:
    """(label, task data file) pairs: the user's files, or generated env x kind datasets."""
    from mpdiffuser.data.generate import GenerateConfig, generate
    from mpdiffuser.envs import SCORE_REFERENCES

    tasks = []
    if config.datasets:
        for spec in config.datasets:
            data = cached_dataset(str(spec))
            if data.env_id not in SCORE_REFERENCES:
                raise ValueError(f"dataset {spec} is for {data.env_id or 'an unnamed environment'}: this experiment "
                                 f"reports D4RL scores, which exist for {', '.join(SCORE_REFERENCES)}; for another "
                                 "robot, `mpdiffuser experiment any-robot` compares raw returns")
            label = str(data.metadata.get("name") or Path(str(spec)).stem)
            tasks.append((label, str(spec)))
        return tasks
    for env_id in config.envs:
        for kind in config.kinds:
            recipe = GenerateConfig(env_id, kind, config.task_transitions, config.policy_steps, config.expert_steps,
                                    seed=config.data_seed)
            steps = f"{config.policy_steps}" + (f" and {config.expert_steps}" if kind == "medium-expert" else "")
            log(f"data: {recipe.name} (SAC {steps} steps), policies cached in {config.policy_dir}")
            path = generate(recipe, config.data_dir, progress, config.policy_dir)
            tasks.append((f"{env_id.split('-')[0].lower()}-{kind}", str(path)))
    return tasks


SWEEP = "sweep: "  # the methods of the sweep cells: "sweep: lambda 0.5", "sweep: schedule every 2 steps"


class Locomotion(Experiment):
    """The grid: tasks are the datasets, every seed trains one bundle per task (prepare), every
    method is a cell, and on the first task and seed each sweep setting is a cell too. A cell
    keeps the per-method episode caches of <out>/episodes/ (what it depends on, checked), so
    results of earlier runs are read, not redone."""

    name = "locomotion"
    GRID_FIELDS = ("out_dir", "policy_dir", "seeds", "envs", "kinds", "datasets", "baselines", "baseline_seeds",
                   "diffusion_baselines", "lambdas", "schedules", "threads")
    score_note = ("D4RL-normalized: 100 (R - random) / (expert - random) with D4RL's reference returns; mean over "
                  "all evaluation episodes of all training seeds; score_stderr over the episodes, score_stderr_seeds "
                  "over the seeds' means (the table's and plot's error when a method has 2 or more seeds)")

    def __init__(self, config: LocomotionConfig, progress: bool = True) -> None:
        from mpdiffuser.data.generate import GenerateConfig, generate

        super().__init__(config)
        self.files: dict[str, tuple[str, str]] = {}  # label -> (task data, random data)
        for label, path in _task_files(config, Log(), progress):
            env_id = cached_dataset(path).env_id
            random = generate(GenerateConfig(env_id, "random", config.random_transitions, seed=config.data_seed),
                              config.data_dir, progress)
            self.files[label] = (path, str(random))

    def tasks(self) -> list[str]:
        return list(self.files)

    def methods(self) -> list[str]:
        return list(self.config.methods)

    def sweep_settings(self) -> list[tuple[str, str, dict]]:
        """(sweep, setting, option changes) of the sweeps on the first task and seed."""
        c = self.config
        out = [("lambda", f"{lam:g}", {"dynamics_weight": lam}) for lam in c.lambdas]
        out += [("schedule", schedule_label(every, last), {"dynamics_every": every, "dynamics_last": last})
                for every, last in c.schedules]
        return out

    def cells(self) -> list[Cell]:
        c = self.config
        baseline = set(BASELINE_METHODS.values())
        cells = [cell for cell in super().cells() if cell.method not in baseline or c.baseline_seeds is None
                 or cell.seed in c.baseline_seeds]
        first = Cell(self.tasks()[0], c.seeds[0], "")
        return cells + [Cell(first.task, first.seed, f"{SWEEP}{sweep} {setting}")
                        for sweep, setting, _ in self.sweep_settings()]

    def key(self, cell: Cell) -> dict:
        return self.config_key() | {"data": self.files[cell.task], "cell": dataclasses.asdict(cell)}

    def bundle_dir(self, task: str, seed: int) -> Path:
        return self.out / "models" / task / f"s{seed}"

    def data(self, task: str):
        path, random = self.files[task]
        return cached_dataset(path), cached_dataset(random)

    def prepare(self, task: str, seed: int, log, progress: bool) -> None:
        data, random = self.data(task)
        log(f"  {task} seed {seed}: training -> {self.bundle_dir(task, seed)}")
        model_file = self.config.train_bundle(self.bundle_dir(task, seed), data, [random], seed, log, progress)
        if self.config.train_lengths:
            _train_lengths(self.config, self.bundle_dir(task, seed), model_file, data, random, seed, log, progress)

    def run(self, cell: Cell, log, progress: bool) -> dict:
        return _run_method(self, cell, log, progress)

    def report(self, report: dict, log) -> None:
        """The locomotion report's own shape: methods and sweeps apart, the data's scores, the
        plan-vs-robot errors under "consistency"; its table and plots."""
        from mpdiffuser.envs import SCORE_REFERENCES

        sweeps = [r for r in report["episodes"] if r["method"].startswith(SWEEP)]
        report["episodes"] = [r for r in report["episodes"] if not r["method"].startswith(SWEEP)]
        report["summary"] = [e for e in report["summary"] if not e["method"].startswith(SWEEP)]
        labels = {f"{sweep} {setting}": (sweep, setting) for sweep, setting, _ in self.sweep_settings()}
        report["sweep_episodes"] = [{k: v for k, v in r.items() if k not in ("method", "seed")}
                                    | dict(zip(("sweep", "setting"), labels[r["method"][len(SWEEP):]]))
                                    for r in sweeps]
        report["sweeps"] = summarize(report["sweep_episodes"], ("sweep", "setting"), ("score", "return"))
        for entry in report["summary"]:
            data, _ = self.data(entry["task"])
            reference = SCORE_REFERENCES[data.env_id]
            entry["data_score"] = float(np.mean([reference.normalize(r) for r in data.returns()]))
        report["consistency_note"] = ("plan-vs-robot state error (control.consistency, normalized state units): RMS "
                                      "of the plan's states minus the states its actions reach when replayed open "
                                      "loop from the same simulator state, first step and window mean; one episode "
                                      "per seed from the test's first start, consistency_steps steps at most")
        report["consistency"] = report.pop("metrics")
        report["consistency_seeds"] = report.pop("metrics_seeds")
        report.setdefault("validation", [])

    def plot(self, report: dict) -> None:
        _write_plots(report, self.out)

    def print_summary(self, report: dict, log) -> None:
        _print_table(report["summary"], self.config.methods, log)
        for entry in report["consistency"]:
            log(f"    plan-vs-robot state error {entry['task']:20s} {entry['method']:32s} first step "
                f"{entry['state_error_first_mean']:.3f}, window {entry['state_error_window_mean']:.3f} "
                f"+- {score_error(entry, 'state_error_window'):.3f}")




def _run_method(experiment: Locomotion, cell: Cell, log, progress: bool) -> dict:
    """One method (or one sweep setting) on one task and seed: its policy, made only when its
    episodes are not already cached under <out>/episodes/, its test episodes and, for a diffusion
    method with consistency_steps, its plan-vs-robot state error; validation rows where it tunes."""
    from mpdiffuser.control.bc import BCPolicy
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.control.tune import choose_return_target, choose_setting
    from mpdiffuser.export import model_file_digest
    from mpdiffuser.models.bundle import BundleSpec
    from mpdiffuser.sampling.sampler import Sampler

    config, label, seed, method = experiment.config, cell.task, cell.seed, cell.method
    task, random = experiment.data(label)
    env_id = task.env_id
    bundle_dir = experiment.bundle_dir(label, seed)
    model_file = bundle_dir / "model.safetensors"
    sampler = Sampler(model_file, config.backend, threads=config.threads, env_id=env_id)
    eval_seed = test_start(seed)  # the same start states for every method of this seed
    evaluation = {"task": label, "transitions": task.num_transitions, "episodes": config.episodes,
                  "max_steps": config.max_steps, "start_seed": eval_seed}
    model = {"model_file": model_file_digest(model_file), "backend": config.backend}
    cache_dir = experiment.out / "episodes" / label / f"s{seed}"
    validation_rows: list[dict] = []
    planner = None  # (sampler, options, lambda) of a diffusion method, for the consistency measure

    if method.startswith(SWEEP):
        sweep, setting = method[len(SWEEP):].split(" ", 1)
        changes = next(ch for sw, st, ch in experiment.sweep_settings() if (sw, st) == (sweep, setting))
        options = sampler.defaults.replace(**changes)

        def run():
            summary = evaluate(MPCPolicy(sampler, options), env_id, config.episodes, eval_seed, config.max_steps,
                               progress=progress, desc=f"{sweep} {setting}")
            return episode_rows(summary, task=label, sweep=sweep, setting=setting)

        rows = cached_rows(cache_dir / f"sweep-{sweep}-{slug(setting)}.json",
                           evaluation | model | {"sweep": sweep, "options": dataclasses.asdict(options)}, run)
        return {"episodes": [_plain_row(r) for r in rows], "metrics": {}}

    if method in METHODS[:2]:
        lam = 1.0 if method == METHODS[0] else 0.0
        options = sampler.defaults.replace(dynamics_weight=lam)
        depends, make = model, (lambda: MPCPolicy(sampler, options))
        planner = (sampler, options, lam)
    elif method == METHODS[2]:
        spec = BundleSpec.load(bundle_dir)

        def make():
            bc, info = BCPolicy.train(task, spec.states, spec.actions, TrainConfig(steps=config.bc_steps, seed=seed),
                                      progress=progress, device=config.device)
            log(f"    bc      : {config.bc_steps} steps, final loss {info['final_loss']:.4f} ({info['seconds']:.0f}s)")
            return bc

        depends = {"bc_steps": config.bc_steps, "seed": seed}
    elif method in TUNED_METHODS:
        lam = 1.0 if method == TUNED_METHODS[0] else 0.0
        options = sampler.defaults.replace(dynamics_weight=lam)
        best, tried = choose_return_target(config.return_targets, _validation_run(
            config, sampler, options, env_id, eval_seed, method, cache_dir, evaluation | model, progress))
        validation_rows += [{"task": label, "seed": seed, "method": method} | r
                            | {"start_seed": eval_seed + VALIDATION_OFFSET} for r in tried]
        log(f"    {method}: g = {best:g} (validation returns "
            + ", ".join(f"g {r['return_target']:g}: {r['return_mean']:.0f}" for r in tried) + ")")
        options = options.replace(return_target=best)
        depends, make = model | {"return_target": best}, (lambda: MPCPolicy(sampler, options))
        planner = (sampler, options, lam)
    elif method in LENGTH_METHODS:
        lam = 1.0 if method == LENGTH_METHODS[0] else 0.0
        tuned = TUNED_METHODS[LENGTH_METHODS.index(method)]
        paths = {n: (model_file if n == config.train_steps else
                     bundle_dir.with_name(f"{bundle_dir.name}-steps{n}") / "model.safetensors")
                 for n in config.train_lengths}
        samplers = {n: sampler if n == config.train_steps else
                    Sampler(path, config.backend, threads=config.threads, env_id=env_id) for n, path in paths.items()}
        models = {n: model if n == config.train_steps else
                  {"model_file": model_file_digest(path), "backend": config.backend} for n, path in paths.items()}
        lengths = sorted(samplers)
        # the main bundle's validation episodes are the g-only method's: read, not rerun
        runs = {n: _validation_run(config, samplers[n], samplers[n].defaults.replace(dynamics_weight=lam), env_id,
                                   eval_seed, tuned, cache_dir, evaluation | models[n], progress,
                                   tag="" if n == config.train_steps else f"-steps{n}") for n in lengths}
        best, tried = choose_setting([{"train_steps": n, "return_target": g}
                                      for n in lengths for g in config.return_targets],
                                     lambda s: runs[s["train_steps"]](s["return_target"]))
        validation_rows += [{"task": label, "seed": seed, "method": method} | r
                            | {"start_seed": eval_seed + VALIDATION_OFFSET} for r in tried]
        log(f"    {method}: {best['train_steps']} steps, g = {best['return_target']:g} (validation returns "
            + ", ".join(f"{r['train_steps']}/{r['return_target']:g}: {r['return_mean']:.0f}" for r in tried) + ")")
        chosen = samplers[best["train_steps"]]
        options = chosen.defaults.replace(dynamics_weight=lam, return_target=best["return_target"])
        depends, make = models[best["train_steps"]] | best, (lambda: MPCPolicy(chosen, options))
    elif method in DIFFUSION_METHODS.values():
        name = next(n for n, m in DIFFUSION_METHODS.items() if m == method)
        _, chosen = _diffusion_baseline(config, name, bundle_dir, task, seed, env_id, eval_seed, cache_dir,
                                        evaluation | model, log, progress, validation_rows, label)
        depends, make = chosen[:2]
        planner = chosen[2:] + (1.0,)
    elif method in BASELINE_METHODS.values():
        from mpdiffuser.control.baselines import OfflineRLPolicy

        name = next(n for n, m in BASELINE_METHODS.items() if m == method)

        def make():
            policy, info = OfflineRLPolicy.train(name, task, config.baseline_steps, seed=seed, device=config.device,
                                                 progress=progress)
            log(f"    {name:8s}: {config.baseline_steps} steps ({info['seconds']:.0f}s)")
            return policy

        depends = {"baseline_steps": config.baseline_steps, "seed": seed}
    else:
        raise ValueError(f"unknown method {method!r}: the locomotion methods are {', '.join(config.methods)}")

    def run():
        summary = evaluate(make(), env_id, config.episodes, eval_seed, config.max_steps, progress=progress,
                           desc=f"{label} {method}")
        return episode_rows(summary, task=label, env=env_id, method=method, seed=seed)

    rows = cached_rows(cache_dir / f"{slug(method)}.json", evaluation | depends | {"method": method}, run)
    metrics = {}
    if config.consistency_steps and planner is not None:
        metrics = {k: v for k, v in _consistency(config, *planner, env_id, eval_seed, cache_dir,
                                                 evaluation | depends | {"method": method}, progress).items()
                   if k in ("state_error_first", "state_error_window", "plans", "fall_rate")}
    return {"episodes": [_plain_row(r) for r in rows], "metrics": metrics, "validation": validation_rows}


def _plain_row(row: dict) -> dict:
    """An episode row of the per-method caches without the labels the grid adds itself."""
    return {k: v for k, v in row.items() if k not in ("task", "method", "seed", "sweep", "setting")}


def run_locomotion(config: LocomotionConfig, progress: bool = True, ray_address: str | None = None) -> dict:
    """The grid (tasks x seeds x methods, and the sweeps on the first task and seed), here or on
    Ray; returns the report (also written to <out>/locomotion.json, .csv and plots)."""
    from mpdiffuser.experiments.grid import run_grid

    return run_grid(lambda: Locomotion(config, progress), ray_address, progress)


def _diffusion_baseline(config: LocomotionConfig, name: str, bundle_dir: Path, task, seed: int, env_id: str,
                        eval_seed: int, cache_dir: Path, key: dict, log: Log, progress: bool,
                        validation_rows: list, label: str) -> tuple[str, tuple]:
    """Diffuser or Decision Diffuser on this seed's bundle: its networks trained (train_steps each,
    skipped when done), its setting chosen by validation episodes (Diffuser: the guidance scale among
    value_scales; Decision Diffuser: g among return_targets, else the models' g). Returns the
    method's name and (what its episodes depend on, a policy maker, its sampler, its options)."""
    from mpdiffuser.control import diffusion_baselines as db
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.control.tune import choose_setting

    method = DIFFUSION_METHODS[name]
    for network, info in db.train_baseline(bundle_dir, name, task, TrainConfig(steps=config.train_steps, seed=seed),
                                           progress, config.device).items():
        if not info.get("nothing_to_do"):
            log(f"    {network:8s}: {config.train_steps} steps, final loss {info['final_loss']:.4f} "
                f"({info['seconds']:.0f}s)")
    depends = key | {"baseline": name, "baseline_train_steps": config.train_steps}
    if name == "diffuser":
        settings = [{"value_scale": float(v)} for v in config.value_scales]
        make = lambda s: (db.DiffuserSampler(bundle_dir, value_scale=s["value_scale"], env_id=env_id),  # noqa: E731
                          None)
    else:
        sampler = db.DecisionDiffuserSampler(bundle_dir, env_id=env_id)
        targets = config.return_targets or (sampler.defaults.return_target,)
        settings = [{"return_target": float(g)} for g in targets]
        make = lambda s: (sampler, sampler.defaults.replace(return_target=s["return_target"]))  # noqa: E731
    best = settings[0]
    if len(settings) > 1:
        from mpdiffuser.control.evaluate import EpisodeResult, evaluate

        start = eval_seed + VALIDATION_OFFSET

        def run(setting: dict) -> list:
            def episodes():
                planner, options = make(setting)
                summary = evaluate(MPCPolicy(planner, options), env_id, config.validation_episodes, start,
                                   config.max_steps, progress=progress, desc=f"validation {method} {setting}")
                return episode_rows(summary, method=method, **setting)

            tag = "-".join(f"{k}{v:g}" for k, v in setting.items())
            done = cached_rows(cache_dir / f"validation-{slug(method)}-{tag}.json",
                               depends | setting | {"start_seed": start, "episodes": config.validation_episodes},
                               episodes)
            return [EpisodeResult(r["return"], r["score"], 0.0, r["length"]) for r in done]

        best, tried = choose_setting(settings, run)
        validation_rows += [{"task": label, "seed": seed, "method": method} | r | {"start_seed": start}
                            for r in tried]
        log(f"    {method}: {best} (validation returns "
            + ", ".join(f"{list(r.values())[0]:g}: {r['return_mean']:.0f}" for r in tried) + ")")
    planner, options = make(best)
    options = options or planner.defaults
    return method, (depends | best, lambda: MPCPolicy(planner, options), planner, options)


def _consistency(config: LocomotionConfig, sampler, options, lam: float, env_id: str, eval_seed: int,
                 cache_dir: Path, key: dict, progress: bool) -> dict:
    """Plan-vs-robot state error of one method (control.consistency), cached like its episodes."""
    from mpdiffuser.control.consistency import plan_consistency

    def run():
        result = plan_consistency(sampler, env_id, lambdas=(lam,), episodes=1, seed=eval_seed,
                                  max_steps=config.consistency_steps, options=options, progress=progress)
        metrics = result["lambdas"][f"{lam:g}"]
        return [{k: metrics[k] for k in ("plans", "state_error_first", "state_error_window", "fall_rate")}]

    method = key["method"]
    return cached_rows(cache_dir / f"consistency-{slug(method)}.json",
                       key | {"consistency_steps": config.consistency_steps}, run)[0]


def _validation_run(config: LocomotionConfig, sampler, options, env_id: str, eval_seed: int, method: str,
                    cache_dir: Path, key: dict, progress: bool, tag: str = ""):
    """run(g) for control.tune's choice: `config.validation_episodes` episodes of `sampler` with
    `options` and return target g from start seeds eval_seed + VALIDATION_OFFSET + i (never a
    test start), as EpisodeResults; cached like a method's episodes (`tag` names the bundle)."""
    from mpdiffuser.control.evaluate import EpisodeResult, evaluate
    from mpdiffuser.control.mpc import MPCPolicy

    start = eval_seed + VALIDATION_OFFSET

    def run(g: float) -> list:
        def episodes():
            summary = evaluate(MPCPolicy(sampler, options.replace(return_target=g)), env_id,
                               config.validation_episodes, start, config.max_steps, progress=progress,
                               desc=f"validation {method}{tag} g={g:g}")
            return episode_rows(summary, method=method, return_target=g)

        done = cached_rows(cache_dir / f"validation-{slug(method)}{tag}-g{g:g}.json",
                           key | {"start_seed": start, "episodes": config.validation_episodes, "method": method,
                                  "return_target": g}, episodes)
        return [EpisodeResult(r["return"], r["score"], 0.0, r["length"]) for r in done]

    return run


def _train_lengths(config: LocomotionConfig, bundle_dir: Path, model_file: Path, task, random, seed: int, log: Log,
                   progress: bool) -> dict[int, Path]:
    """The model file of each of config.train_lengths: planner and dynamics trained that many steps
    (ranker as always), in `<bundle_dir>-steps<n>`; for n = train_steps, the main bundle's
    `model_file`, already trained. Each length continues a copy of the next shorter one's
    checkpoints, which equals training it from scratch (training.loop), so the lengths cost the
    longest one's steps, not their sum."""
    dirs = {config.train_steps: bundle_dir}
    files = {config.train_steps: model_file} if config.train_steps in config.train_lengths else {}
    for steps in sorted(set(config.train_lengths) - {config.train_steps}):
        target = bundle_dir.with_name(f"{bundle_dir.name}-steps{steps}")
        shorter = [n for n in dirs if n < steps]
        if not (target / "bundle.json").exists() and shorter:
            partial = target.with_name(target.name + ".copying")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(dirs[max(shorter)], partial, ignore=shutil.ignore_patterns("model.safetensors"))
            partial.rename(target)
        dirs[steps] = target
        log(f"    {steps} training steps -> {target}")
        files[steps] = config.train_bundle(target, task, [random], seed, log, progress, train_steps=steps)
    return files


def _print_table(summary: list[dict], methods: tuple[str, ...], log: Log) -> None:
    tasks = list(dict.fromkeys(e["task"] for e in summary))
    cell = {(e["task"], e["method"]): e for e in summary}
    methods = [m for m in methods if any((t, m) in cell for t in tasks)]
    header = f"    {'task':28s} {'data':>6s} " + " ".join(f"{m[:22]:>22s}" for m in methods)
    log("D4RL-normalized scores (mean +- standard error over seeds; [k]: seeds, one seed: over episodes)")
    print(header)
    for task in tasks:
        line = f"    {task:28s} {next(e['data_score'] for e in summary if e['task'] == task):6.1f} "
        line += " ".join(f"{cell[(task, m)]['score_mean']:10.1f} +- {score_error(cell[(task, m)]):4.1f} "
                         f"[{cell[(task, m)]['seeds']}]" if (task, m) in cell else f"{'-':>22s}" for m in methods)
        print(line)


def _write_plots(report: dict, out: Path) -> None:
    """locomotion_sweeps.csv, locomotion_validation.csv and the two plots (the grid writes the
    JSON and locomotion.csv)."""
    out.mkdir(parents=True, exist_ok=True)
    if report["sweep_episodes"]:
        write_csv(out / "locomotion_sweeps.csv", report["sweep_episodes"])
    if report["validation"]:
        write_csv(out / "locomotion_validation.csv", report["validation"])
    plt = pyplot()
    summary = report["summary"]
    tasks = list(dict.fromkeys(e["task"] for e in summary))
    cell = {(e["task"], e["method"]): e for e in summary}
    methods = list(dict.fromkeys(e["method"] for e in summary))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(tasks) + 2), 4))
    nan = {"score_mean": float("nan"), "score_stderr": 0.0}
    grouped_bars(ax, tasks, {m: ([cell.get((t, m), nan)["score_mean"] for t in tasks],
                                 [score_error(cell.get((t, m), nan)) for t in tasks]) for m in methods},
                 "D4RL-normalized score")
    ax.scatter(np.arange(len(tasks)), [next(e["data_score"] for e in summary if e["task"] == t) for t in tasks],
               marker="_", s=400, color="black", label="behaviour data", zorder=3)
    ax.legend(fontsize=8)
    ax.set_title(f"Offline locomotion: {len(methods)} controllers on the same data and starts "
                 "(error: s.e. over training seeds; one seed: over episodes)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "locomotion_scores.png", dpi=120)
    plt.close(fig)

    sweeps = report["sweeps"]
    if sweeps:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
        lam = [e for e in sweeps if e["sweep"] == "lambda"]
        left.errorbar([float(e["setting"]) for e in lam], [e["score_mean"] for e in lam],
                      yerr=[e["score_stderr"] for e in lam], marker="o", capsize=3)
        left.set_xlabel("lambda (dynamics weight)")
        left.set_ylabel("D4RL-normalized score")
        left.set_title(f"{report['sweep_episodes'][0]['task']}: score vs lambda")
        sched = [e for e in sweeps if e["sweep"] == "schedule"]
        right.bar(range(len(sched)), [e["score_mean"] for e in sched], yerr=[e["score_stderr"] for e in sched], capsize=3)
        right.set_xticks(range(len(sched)))
        right.set_xticklabels([e["setting"] for e in sched], rotation=20, ha="right", fontsize=8)
        right.set_title("score vs dynamics schedule (lambda = 1)")
        fig.tight_layout()
        fig.savefig(out / "locomotion_sweeps.png", dpi=120)
        plt.close(fig)
