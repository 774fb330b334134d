"""Adaptation to novel dynamics (evaluation suite, item 3): train MPDiffuser on a nominal robot,
change its physics (mass, friction, actuator gain), collect a small dataset on the changed robot,
fine-tune only the dynamics model on it, and compare on the changed robot: the original models,
the models with the fine-tuned dynamics model, the planner-only sampler (lambda = 0, whose
models are the same in both) and behaviour cloning trained on that robot's own data. The planner
and ranker files are checked to stay byte-identical. With several training seeds (each with its
own data), the paired gains (same start states) say which differences are real.

    mpdiffuser experiment dynamics --quick       # minutes on 2 CPU cores
    mpdiffuser experiment dynamics --seeds 0 1 2 # larger data and training, three seeds
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpdiffuser.config import TrainConfig
from mpdiffuser.envs import PhysicsChange
from mpdiffuser.experiments.common import (Log, ExperimentConfig, check_model_options, episode_rows, grouped_bars, machine,
                                           mean_stderr, pyplot, score_error, sha256, summarize,
                                           write_csv, write_json)
from mpdiffuser.models.bundle import BundleSpec

ORIGINAL, FINE_TUNED, PLANNER_ONLY = "original models", "fine-tuned dynamics", "planner only (lambda=0)"
BC = "behaviour cloning (this robot's data)"
METHODS = (ORIGINAL, FINE_TUNED, PLANNER_ONLY, BC)
GAINS = ((FINE_TUNED, ORIGINAL), (ORIGINAL, PLANNER_ONLY), (FINE_TUNED, BC))  # (a, b): paired a - b
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


def run_dynamics_shift(config: DynamicsShiftConfig, progress: bool = True) -> dict:
    log = Log()
    out = Path(config.out_dir)
    rows, checks, finetune, losses = [], {}, {}, {}
    for n, seed in enumerate(config.seeds):
        log(f"seed {seed} ({n + 1}/{len(config.seeds)})")
        _run_seed(config, seed, out / "models" / f"s{seed}", log, progress, rows, checks, finetune, losses)
    summary = summarize(rows, ("robot", "method"), ("score", "return"), unit="seed")
    report = {"experiment": "dynamics", "config": dataclasses.asdict(config), "machine": machine(),
              "score_note": "D4RL-normalized score, mean over the evaluation episodes of all seeds; score_stderr "
                            "over the episodes, score_stderr_seeds over the seeds' means (the plot's error with 2 "
                            "or more seeds); gains are paired differences (same seed, same start state)",
              "summary": summary, "gains": paired_gains(rows), "byte_identical": checks, "fine_tuning": finetune,
              "heldout_dynamics_loss": losses, "episodes": rows,
              "seconds": round(log.seconds, 1)}
    write_outputs(report, out)
    log("D4RL-normalized scores on each robot (mean +- standard error)")
    for e in summary:
        print(f"    {e['robot']:22s} {e['method']:40s} {e['score_mean']:6.1f} +- {score_error(e):4.1f} "
              f"[{e['seeds']} seeds]")
    log("paired gains (mean +- standard error over the seeds' mean gains; seeds with a positive gain)")
    for e in report["gains"]:
        error = e["stderr_seeds"] if e["seeds"] > 1 else e["stderr"]
        print(f"    {e['robot']:22s} {e['gain']:62s} {e['mean']:+6.1f} +- {error:4.1f} "
              f"({e['seeds_positive']}/{e['seeds']} seeds positive)")
    log(f"planner, ranker and bundle.json byte-identical after fine-tuning: "
        f"{all(all(v.values()) for v in checks.values())}")
    log(f"results in {out / 'dynamics.json'}, {out / 'dynamics.csv'}, {out / 'dynamics.png'}")
    return report


def _run_seed(c: DynamicsShiftConfig, seed: int, models: Path, log: Log, progress: bool, rows: list, checks: dict,
              finetune: dict, losses: dict) -> None:
    """One training seed: its data, models, fine-tunings and evaluations (appended to the dicts)."""
    from mpdiffuser.control.bc import BCPolicy
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.data.generate import GenerateConfig, generate
    from mpdiffuser.export import export_model
    from mpdiffuser.sampling.sampler import Sampler

    log(f"1/4 nominal data: {c.env_id} medium-style (SAC {c.policy_steps} steps) + random; policies in {c.policy_dir}")
    task = load_dataset(generate(GenerateConfig(c.env_id, "medium", c.task_transitions, c.policy_steps, seed=seed,
                                                policy_seed=c.policy_seed), c.data_dir, progress, c.policy_dir))
    random = load_dataset(generate(GenerateConfig(c.env_id, "random", c.random_transitions, seed=seed),
                                   c.data_dir, progress))
    base_dir = models / "nominal"
    log(f"2/4 training on the nominal robot -> {base_dir}")
    options = c.sampler_options
    base_file = c.train_bundle(base_dir, task, [random], seed, log, progress, options=options)
    base = Sampler(base_file, c.backend, threads=c.threads, env_id=c.env_id)
    spec = BundleSpec.load(base_dir)
    eval_seed = 10_000 * (seed + 1)

    def bc_on(data):
        policy, info = BCPolicy.train(data, spec.states, spec.actions, TrainConfig(steps=c.train_steps, seed=seed),
                                      progress=progress, device=c.device)
        log(f"    bc on {data.num_transitions} transitions: {c.train_steps} steps, final loss "
            f"{info['final_loss']:.4f} ({info['seconds']:.0f}s)")
        return policy

    def run(label: str, method: str, policy, physics: PhysicsChange | None) -> None:
        summary = evaluate(policy, c.env_id, c.episodes, eval_seed, c.max_steps, progress=progress,
                           desc=f"{label} {method}", physics=physics)
        rows.extend(episode_rows(summary, robot=label, method=method, seed=seed))
        log(f"    {label:22s} {method:40s} score {summary.score[0]:6.1f} +- {summary.score[1]:4.1f} "
            f"(return {summary.episode_return[0]:.0f})")

    def mpc(sampler, lam):
        return MPCPolicy(sampler, sampler.defaults.replace(dynamics_weight=lam))

    log("3/4 nominal robot (reference)")
    run("nominal", ORIGINAL, mpc(base, 1.0), None)
    run("nominal", PLANNER_ONLY, mpc(base, 0.0), None)
    run("nominal", BC, bc_on(task), None)
    for s, physics in enumerate(c.shifts):
        label = physics.tag
        log(f"4/4 changed robot {s + 1}/{len(c.shifts)}: {label}")
        shift_task = load_dataset(generate(GenerateConfig(c.env_id, "medium", c.shift_transitions, c.policy_steps,
                                                          seed=seed, policy_seed=c.policy_seed, physics=physics),
                                           c.data_dir, progress, c.policy_dir))
        shift_random = load_dataset(generate(GenerateConfig(c.env_id, "random", c.shift_random_transitions,
                                                            seed=seed, physics=physics), c.data_dir, progress))
        tuned_dir = models / label
        new = shift_task.num_transitions + shift_random.num_transitions
        replay = replay_data([task, random], c.finetune_replay, new, seed)
        info = fine_tune_dynamics(base_dir, tuned_dir, [shift_task, shift_random, *replay], c.finetune_steps, seed,
                                  progress, c.device)
        key = f"s{seed}/{label}"
        finetune[key] = {"steps": c.finetune_steps, "final_loss": info["final_loss"], "seconds": info["seconds"],
                         "transitions": new, "replay_transitions": sum(d.num_transitions for d in replay)}
        log(f"    fine-tuned dynamics on {new} transitions"
            + (f" + {finetune[key]['replay_transitions']} of the nominal robot" if replay else "")
            + f": {c.finetune_steps} steps, final loss {info['final_loss']:.4f} ({info['seconds']:.0f}s)")
        checks[key] = {name: sha256(base_dir / name) == sha256(tuned_dir / name) for name in UNCHANGED_FILES}
        checks[key]["dynamics.pt changed"] = sha256(base_dir / "dynamics.pt") != sha256(tuned_dir / "dynamics.pt")
        if not all(checks[key].values()):
            raise RuntimeError(f"fine-tuning changed more than the dynamics model: {checks[key]}")
        # Held-out random-action transitions of the changed robot (another rollout seed): does
        # fine-tuning make the dynamics model better at the new physics?
        heldout = load_dataset(generate(GenerateConfig(c.env_id, "random", c.shift_random_transitions,
                                                       seed=seed + 1000, physics=physics), c.data_dir, progress))
        losses[key] = {"original": heldout_dynamics_loss(base_dir, heldout),
                       "fine-tuned": heldout_dynamics_loss(tuned_dir, heldout)}
        log(f"    held-out dynamics loss on the changed robot: original {losses[key]['original']:.4f}, "
            f"fine-tuned {losses[key]['fine-tuned']:.4f}")
        tuned = Sampler(export_model(tuned_dir, tuned_dir / "model.safetensors", options), c.backend, threads=c.threads,
                        env_id=c.env_id)
        run(label, ORIGINAL, mpc(base, 1.0), physics)
        run(label, FINE_TUNED, mpc(tuned, 1.0), physics)
        run(label, PLANNER_ONLY, mpc(base, 0.0), physics)
        run(label, BC, bc_on(shift_task), physics)


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


def write_outputs(report: dict, out: Path) -> None:
    write_json(out / "dynamics.json", report)
    write_csv(out / "dynamics.csv", report["episodes"])
    plt = pyplot()
    summary = report["summary"]
    robots = list(dict.fromkeys(e["robot"] for e in summary))
    cell = {(e["robot"], e["method"]): e for e in summary}
    nan = (float("nan"), 0.0)
    series = {m: ([cell[(r, m)]["score_mean"] if (r, m) in cell else nan[0] for r in robots],
                  [score_error(cell[(r, m)]) if (r, m) in cell else nan[1] for r in robots]) for m in METHODS}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(robots) + 2), 4))
    grouped_bars(ax, robots, series, "D4RL-normalized score")
    ax.set_title(f"{report['config']['env_id']}: changed dynamics, dynamics model fine-tuned alone")
    fig.tight_layout()
    fig.savefig(out / "dynamics.png", dpi=120)
    plt.close(fig)
