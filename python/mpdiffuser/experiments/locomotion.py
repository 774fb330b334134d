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
from mpdiffuser.experiments.common import (VALIDATION_OFFSET, Log, ExperimentConfig, cached_rows,
                                           check_model_options, episode_rows, grouped_bars, machine, mean_stderr,
                                           pyplot, score_error, slug, summarize, write_csv, write_json)

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


def _tasks(config: LocomotionConfig, log: Log, progress: bool) -> list[tuple[str, object]]:
    """(label, task dataset) pairs: the user's files, or generated env x kind datasets."""
    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.data.generate import GenerateConfig, generate
    from mpdiffuser.envs import SCORE_REFERENCES

    tasks = []
    if config.datasets:
        for spec in config.datasets:
            data = load_dataset(spec)
            if data.env_id not in SCORE_REFERENCES:
                raise ValueError(f"dataset {spec} is for {data.env_id or 'an unnamed environment'}: this experiment "
                                 f"reports D4RL scores, which exist for {', '.join(SCORE_REFERENCES)}; for another "
                                 "robot, `mpdiffuser experiment any-robot` compares raw returns")
            label = str(data.metadata.get("name") or Path(str(spec)).stem)
            tasks.append((label, data))
        return tasks
    for env_id in config.envs:
        for kind in config.kinds:
            recipe = GenerateConfig(env_id, kind, config.task_transitions, config.policy_steps, config.expert_steps,
                                    seed=config.data_seed)
            steps = f"{config.policy_steps}" + (f" and {config.expert_steps}" if kind == "medium-expert" else "")
            log(f"data: {recipe.name} (SAC {steps} steps), policies cached in {config.policy_dir}")
            path = generate(recipe, config.data_dir, progress, config.policy_dir)
            tasks.append((f"{env_id.split('-')[0].lower()}-{kind}", load_dataset(path)))
    return tasks


def run_locomotion(config: LocomotionConfig, progress: bool = True) -> dict:
    from mpdiffuser.control.bc import BCPolicy
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.control.tune import choose_return_target, choose_setting
    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.data.generate import GenerateConfig, generate
    from mpdiffuser.envs import SCORE_REFERENCES
    from mpdiffuser.export import model_file_digest
    from mpdiffuser.models.bundle import BundleSpec
    from mpdiffuser.sampling.sampler import Sampler

    log = Log()
    out = Path(config.out_dir)
    tasks = _tasks(config, log, progress)
    rows, data_scores, sweep_rows, validation_rows, consistency_rows = [], {}, [], [], []
    for t, (label, task) in enumerate(tasks):
        env_id = task.env_id
        reference = SCORE_REFERENCES[env_id]
        random = load_dataset(generate(GenerateConfig(env_id, "random", config.random_transitions,
                                                      seed=config.data_seed), config.data_dir, progress))
        returns = task.returns()
        data_scores[label] = float(np.mean([reference.normalize(r) for r in returns]))
        log(f"task {t + 1}/{len(tasks)} {label}: {len(task.episodes)} episodes, {task.num_transitions} steps, "
            f"data score {data_scores[label]:.1f} (return {returns.mean():.0f})")
        for seed in config.seeds:
            bundle_dir = out / "models" / label / f"s{seed}"
            log(f"  seed {seed}: training -> {bundle_dir}")
            model_file = config.train_bundle(bundle_dir, task, [random], seed, log, progress)
            sampler = Sampler(model_file, config.backend, threads=config.threads, env_id=env_id)
            spec = BundleSpec.load(bundle_dir)
            eval_seed = 10_000 * (seed + 1)  # the same start states for every method of this seed
            evaluation = {"task": label, "transitions": task.num_transitions, "episodes": config.episodes,
                          "max_steps": config.max_steps, "start_seed": eval_seed}
            model = {"model_file": model_file_digest(model_file), "backend": config.backend}

            def train_bc(seed=seed, spec=spec):
                bc, info = BCPolicy.train(task, spec.states, spec.actions,
                                          TrainConfig(steps=config.bc_steps, seed=seed), progress=progress,
                                          device=config.device)
                log(f"    bc      : {config.bc_steps} steps, final loss {info['final_loss']:.4f} "
                    f"({info['seconds']:.0f}s)")
                return bc

            def train_baseline(name, seed=seed):
                from mpdiffuser.control.baselines import OfflineRLPolicy

                policy, info = OfflineRLPolicy.train(name, task, config.baseline_steps, seed=seed,
                                                     device=config.device, progress=progress)
                log(f"    {name:8s}: {config.baseline_steps} steps ({info['seconds']:.0f}s)")
                return policy

            # method -> (what its result depends on, a function that makes the policy); made only
            # when the method's episodes are not already on disk from an earlier run
            policies = {METHODS[0]: (model, lambda s=sampler: MPCPolicy(s, s.defaults)),
                        METHODS[1]: (model, lambda s=sampler: MPCPolicy(s, s.defaults.replace(dynamics_weight=0.0))),
                        METHODS[2]: ({"bc_steps": config.bc_steps, "seed": seed}, train_bc)}
            cache_dir = out / "episodes" / label / f"s{seed}"
            # method -> (sampler, options, lambda): the diffusion methods whose plans are measured against the robot
            planners = {METHODS[0]: (sampler, sampler.defaults, 1.0),
                        METHODS[1]: (sampler, sampler.defaults.replace(dynamics_weight=0.0), 0.0)}
            lambdas = (1.0, 0.0)  # the tuned methods: MPDiffuser, planner only
            if config.return_targets:
                for method, lam in zip(TUNED_METHODS, lambdas):
                    options = sampler.defaults.replace(dynamics_weight=lam)
                    best, tried = choose_return_target(config.return_targets, _validation_run(
                        config, sampler, options, env_id, eval_seed, method, cache_dir, evaluation | model, progress))
                    validation_rows += [{"task": label, "seed": seed, "method": method} | r
                                        | {"start_seed": eval_seed + VALIDATION_OFFSET} for r in tried]
                    log(f"    {method}: g = {best:g} (validation returns "
                        + ", ".join(f"g {r['return_target']:g}: {r['return_mean']:.0f}" for r in tried) + ")")
                    policies[method] = (model | {"return_target": best},
                                        lambda s=sampler, o=options.replace(return_target=best): MPCPolicy(s, o))
                    planners[method] = (sampler, options.replace(return_target=best), lam)
            if config.train_lengths:
                paths = _train_lengths(config, bundle_dir, model_file, task, random, seed, log, progress)
                samplers = {n: sampler if n == config.train_steps else
                            Sampler(path, config.backend, threads=config.threads, env_id=env_id)
                            for n, path in paths.items()}
                models = {n: model if n == config.train_steps else
                          {"model_file": model_file_digest(path), "backend": config.backend}
                          for n, path in paths.items()}
                lengths = sorted(samplers)
                for method, tuned, lam in zip(LENGTH_METHODS, TUNED_METHODS, lambdas):
                    # the main bundle's validation episodes are the g-only method's: read, not rerun
                    runs = {n: _validation_run(config, samplers[n], samplers[n].defaults.replace(dynamics_weight=lam),
                                               env_id, eval_seed, tuned, cache_dir, evaluation | models[n], progress,
                                               tag="" if n == config.train_steps else f"-steps{n}")
                            for n in lengths}
                    best, tried = choose_setting([{"train_steps": n, "return_target": g}
                                                  for n in lengths for g in config.return_targets],
                                                 lambda s: runs[s["train_steps"]](s["return_target"]))
                    validation_rows += [{"task": label, "seed": seed, "method": method} | r
                                        | {"start_seed": eval_seed + VALIDATION_OFFSET} for r in tried]
                    log(f"    {method}: {best['train_steps']} steps, g = {best['return_target']:g} (validation "
                        "returns " + ", ".join(f"{r['train_steps']}/{r['return_target']:g}: {r['return_mean']:.0f}"
                                               for r in tried) + ")")
                    chosen = samplers[best["train_steps"]]
                    policies[method] = (
                        models[best["train_steps"]] | best,
                        lambda s=chosen, o=chosen.defaults.replace(dynamics_weight=lam,
                                                                   return_target=best["return_target"]):
                        MPCPolicy(s, o))
            for name in config.diffusion_baselines:
                method, chosen = _diffusion_baseline(config, name, bundle_dir, task, seed, env_id, eval_seed,
                                                     cache_dir, evaluation | model, log, progress, validation_rows,
                                                     label)
                policies[method] = chosen[:2]
                planners[method] = chosen[2:] + (1.0,)
            if config.baseline_seeds is None or seed in config.baseline_seeds:
                for name in config.baselines:
                    policies[BASELINE_METHODS[name]] = ({"baseline_steps": config.baseline_steps, "seed": seed},
                                                        lambda name=name: train_baseline(name))
            for method, (depends, make) in policies.items():
                def run(method=method, make=make):
                    summary = evaluate(make(), env_id, config.episodes, eval_seed, config.max_steps,
                                       progress=progress, desc=f"{label} {method}")
                    return episode_rows(summary, task=label, env=env_id, method=method, seed=seed)

                done = cached_rows(cache_dir / f"{slug(method)}.json",
                                   evaluation | depends | {"method": method}, run)
                rows += done
                score = mean_stderr(r["score"] for r in done)
                log(f"    {method:24s} score {score[0]:6.1f} +- {score[1]:4.1f} "
                    f"(return {np.mean([r['return'] for r in done]):.0f})")
            if config.consistency_steps:
                for method, (planner, options, lam) in planners.items():
                    consistency_rows.append({"task": label, "seed": seed, "method": method} | _consistency(
                        config, planner, options, lam, env_id, eval_seed, cache_dir,
                        evaluation | policies[method][0] | {"method": method}, progress))
            if t == 0 and seed == config.seeds[0]:
                sweep_rows = _sweeps(config, sampler, env_id, label, eval_seed, log, progress, cache_dir,
                                     evaluation | model)
    summary = summarize(rows, ("task", "method"), ("score", "return"), unit="seed")
    for entry in summary:
        entry["data_score"] = data_scores[entry["task"]]
    report = {"experiment": "locomotion", "config": dataclasses.asdict(config), "machine": machine(),
              "score_note": "D4RL-normalized: 100 (R - random) / (expert - random) with D4RL's reference returns; "
                            "mean over all evaluation episodes of all training seeds; score_stderr over the "
                            "episodes, score_stderr_seeds over the seeds' means (the table's and plot's error "
                            "when a method has 2 or more seeds)",
              "summary": summary, "sweeps": summarize(sweep_rows, ("sweep", "setting"), ("score", "return")),
              "consistency_note": "plan-vs-robot state error (control.consistency, normalized state units): "
                                  "RMS of the plan's states minus the states its actions reach when replayed "
                                  "open loop from the same simulator state, first step and window mean; one "
                                  "episode per seed from the test's first start, consistency_steps steps at most",
              "consistency": summarize(consistency_rows, ("task", "method"),
                                       ("state_error_first", "state_error_window"), unit="seed"),
              "consistency_seeds": consistency_rows,
              "episodes": rows, "sweep_episodes": sweep_rows, "validation": validation_rows,
              "seconds": round(log.seconds, 1)}
    write_outputs(report, out)
    _print_table(summary, config.methods, log)
    for entry in report["consistency"]:
        log(f"    plan-vs-robot state error {entry['task']:20s} {entry['method']:32s} first step "
            f"{entry['state_error_first_mean']:.3f}, window {entry['state_error_window_mean']:.3f} "
            f"+- {score_error(entry, 'state_error_window'):.3f}")
    log(f"results in {out / 'locomotion.json'}, {out / 'locomotion.csv'}, {out / 'locomotion_scores.png'}, "
        f"{out / 'locomotion_sweeps.png'}")
    return report


def _sweeps(config: LocomotionConfig, sampler, env_id: str, label: str, eval_seed: int, log: Log,
            progress: bool, cache_dir: Path, key: dict) -> list[dict]:
    """Score against lambda and against the dynamics schedule on one task (same models, same starts)."""
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy

    settings = [("lambda", f"{lam:g}", sampler.defaults.replace(dynamics_weight=lam)) for lam in config.lambdas]
    settings += [("schedule", schedule_label(every, last),
                  sampler.defaults.replace(dynamics_every=every, dynamics_last=last)) for every, last in config.schedules]
    rows = []
    for sweep, setting, options in settings:
        def run(sweep=sweep, setting=setting, options=options):
            summary = evaluate(MPCPolicy(sampler, options), env_id, config.episodes, eval_seed, config.max_steps,
                               progress=progress, desc=f"{sweep} {setting}")
            return episode_rows(summary, task=label, sweep=sweep, setting=setting)

        done = cached_rows(cache_dir / f"sweep-{sweep}-{slug(setting)}.json",
                           key | {"sweep": sweep, "options": dataclasses.asdict(options)}, run)
        rows += done
        score = mean_stderr(r["score"] for r in done)
        log(f"  sweep {sweep:8s} {setting:16s} score {score[0]:6.1f} +- {score[1]:4.1f}")
    return rows


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
        line = f"    {task:28s} {cell[(task, METHODS[0])]['data_score']:6.1f} "
        line += " ".join(f"{cell[(task, m)]['score_mean']:10.1f} +- {score_error(cell[(task, m)]):4.1f} "
                         f"[{cell[(task, m)]['seeds']}]" if (task, m) in cell else f"{'-':>22s}" for m in methods)
        print(line)


def write_outputs(report: dict, out: Path) -> None:
    write_json(out / "locomotion.json", report)
    write_csv(out / "locomotion.csv", report["episodes"])
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
    ax.scatter(np.arange(len(tasks)), [cell[(t, METHODS[0])]["data_score"] for t in tasks], marker="_", s=400,
               color="black", label="behaviour data", zorder=3)
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
