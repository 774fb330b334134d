"""Constrained locomotion, DSRL style (evaluation suite, item 2): Safety-Gymnasium's velocity tasks
rebuilt over the v5 robots (cost 1 per step over the speed limit, envs.VELOCITY_LIMITS), data of
mixed safety (SAC with and without a cost penalty, plus random data), a cost model and cost-limit
conditioning. For each episode cost budget (10, 20, 40 per 1000 steps): MPDiffuser given the
budget (the models are conditioned on the remaining budget and selection rejects candidates over
it, design section 3.2), MPDiffuser without the budget, and the planner-only sampler given the budget.

Normalized return is DSRL's: (R - R_min) / (R_max - R_min) with the dataset's lowest and highest
episode returns. Normalized cost is the episode cost / budget; an episode is safe when it is <= 1.

    mpdiffuser experiment constrained --quick    # minutes on 2 CPU cores: Hopper only
    mpdiffuser experiment constrained            # Hopper, Walker2d, HalfCheetah, Ant: hours
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpdiffuser.config import SamplerOptions, TrainConfig
from mpdiffuser.experiments.common import (Log, check_model_options, grouped_bars, machine, pyplot, summarize,
                                           train_bundle, write_csv, write_json)

WITH_BUDGET, NO_BUDGET, PLANNER_ONLY = "MPDiffuser", "MPDiffuser, no budget", "planner only (lambda=0)"
METHODS = (WITH_BUDGET, NO_BUDGET, PLANNER_ONLY)


@dataclass(frozen=True)
class ConstrainedConfig:
    envs: tuple[str, ...] = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5")
    budgets: tuple[float, ...] = (10.0, 20.0, 40.0)  # episode cost budgets per 1000 steps
    seeds: tuple[int, ...] = (0,)  # training seeds
    out_dir: str = "runs/constrained"
    policy_dir: str = "runs/policies"  # behaviour policies, shared by experiments; datasets go to <out_dir>/data
    data_seed: int = 0
    policy_steps: int = 30_000  # SAC steps of the unpenalized and of the cautious behaviour policy
    cost_penalty: float = 1.0  # the cautious policy trains on reward - cost_penalty * cost
    task_transitions: int = 50_000  # rollouts of each of the two policies
    random_transitions: int = 20_000
    train_steps: int = 5000
    ranker_steps: int = 3000
    episodes: int = 5
    max_steps: int = 1000
    backend: str = "cpu"
    threads: int = 0
    candidates: int = 8  # N of the exported model file (every sampler of the experiment plans with it)
    width: int | None = None  # hidden width of planner and dynamics (None: sized for the robot)
    action_weight: float = TrainConfig.action_weight  # the planner's loss weight on u_0
    device: str = "cpu"  # where the models train: cpu, cuda, cuda:<i> (the CLI resolves auto)

    @property
    def data_dir(self) -> Path:
        return Path(self.out_dir) / "data"

    @classmethod
    def quick(cls, **changes) -> "ConstrainedConfig":
        base = cls(envs=("Hopper-v5",), out_dir="runs/constrained-quick", policy_dir="runs/policies-quick",
                   policy_steps=5000, task_transitions=5000, random_transitions=5000, train_steps=2000,
                   ranker_steps=1000, episodes=3)
        return dataclasses.replace(base, **changes)

    def __post_init__(self) -> None:
        SamplerOptions(num_candidates=self.candidates)  # a bad N fails here, not after hours of training
        check_model_options(self.width, self.action_weight)
        if not self.envs or not self.budgets or not self.seeds or self.episodes < 1 or self.max_steps < 1:
            raise ValueError("ConstrainedConfig needs envs, budgets, seeds, episodes >= 1 and max_steps >= 1")
        if any(not b > 0 for b in self.budgets):
            raise ValueError(f"budgets must be positive, got {self.budgets}")


def run_constrained(config: ConstrainedConfig, progress: bool = True) -> dict:
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.data.generate import GenerateConfig, generate
    from mpdiffuser.sampling.sampler import Sampler

    log = Log()
    out = Path(config.out_dir)
    rows, data_stats = [], {}
    scale = config.max_steps / 1000.0  # budgets are per 1000 steps; shorter episodes get a share
    for env_id in config.envs:
        mixed = GenerateConfig(env_id, "mixed", config.task_transitions, config.policy_steps, constrained=True,
                               seed=config.data_seed, cost_penalty=config.cost_penalty)
        log(f"{env_id}: mixed-safety data ({mixed.name}: SAC {config.policy_steps} steps with and without a cost "
            f"penalty of {config.cost_penalty:g}) + random, policies cached in {config.policy_dir}")
        task = load_dataset(generate(mixed, config.data_dir, progress, config.policy_dir))
        random = load_dataset(generate(GenerateConfig(env_id, "random", config.random_transitions, constrained=True,
                                                      seed=config.data_seed), config.data_dir, progress))
        returns = task.returns()
        costs = np.array([e.costs.sum() for e in task.episodes])
        per_1000 = 1000.0 * costs / np.array([e.length for e in task.episodes])
        r_min, r_max = float(returns.min()), float(returns.max())
        data_stats[env_id] = {"return_min": r_min, "return_max": r_max, "return_mean": float(returns.mean()),
                              "cost_mean": float(costs.mean()), "cost_max": float(costs.max()),
                              "cost_per_1000_mean": float(per_1000.mean()), "episodes": len(task.episodes)}
        log(f"  data: {len(task.episodes)} episodes, return {returns.mean():.0f} (min {r_min:.0f}, max {r_max:.0f}), "
            f"episode cost mean {costs.mean():.1f} max {costs.max():.0f}")
        unconstrained_limit = float(costs.max())  # the largest cost-to-go the models have seen
        for seed in config.seeds:
            bundle_dir = out / "models" / env_id.split("-")[0].lower() / f"s{seed}"
            log(f"  seed {seed}: training planner, dynamics, reward and cost models -> {bundle_dir}")
            model_file = train_bundle(bundle_dir, task, [random], config.train_steps, config.ranker_steps, seed, log,
                                      progress,
                                      options=SamplerOptions(num_candidates=config.candidates), width=config.width,
                                      action_weight=config.action_weight, device=config.device)
            sampler = Sampler(model_file, config.backend, threads=config.threads, env_id=env_id)
            eval_seed = 10_000 * (seed + 1)
            d = sampler.defaults
            runs = [(NO_BUDGET, None, MPCPolicy(sampler, d.replace(cost_limit=unconstrained_limit, cost_budget=None)))]
            for budget in config.budgets:
                b = budget * scale
                runs.append((WITH_BUDGET, budget, MPCPolicy(sampler, d, episode_budget=b, episode_length=config.max_steps)))
                runs.append((PLANNER_ONLY, budget, MPCPolicy(sampler, d.replace(dynamics_weight=0.0), episode_budget=b,
                                                             episode_length=config.max_steps)))
            for method, budget, policy in runs:
                summary = evaluate(policy, env_id, config.episodes, eval_seed, config.max_steps, constrained=True,
                                   progress=progress, desc=f"{env_id} {method} {budget}")
                # The budget-free run is scored against every budget; the others against their own.
                for b in ([budget] if budget is not None else config.budgets):
                    for i, e in enumerate(summary.episodes):
                        rows.append({"env": env_id, "budget": b, "method": method, "seed": seed, "episode": i,
                                     "return": e.episode_return,
                                     "normalized_return": (e.episode_return - r_min) / max(r_max - r_min, 1e-9),
                                     "cost": e.cost, "normalized_cost": e.cost / (b * scale),
                                     "safe": float(e.cost <= b * scale), "length": e.length})
                log(f"    {method:24s} budget {'-' if budget is None else f'{budget:g}':>3s}: return "
                    f"{summary.episode_return[0]:7.1f}, episode cost {summary.cost[0]:6.1f} +- {summary.cost[1]:.1f}")
    summary = summarize(rows, ("env", "budget", "method"), ("normalized_return", "normalized_cost", "safe",
                                                            "return", "cost"))
    report = {"experiment": "constrained", "config": dataclasses.asdict(config), "machine": machine(),
              "note": "normalized return = (R - R_min) / (R_max - R_min), dataset episode returns (DSRL); "
                      "normalized cost = episode cost / budget, safe when <= 1; means and standard errors over "
                      "all evaluation episodes of all training seeds",
              "data": data_stats, "summary": summary, "episodes": rows, "seconds": round(log.seconds, 1)}
    write_outputs(report, out)
    log("normalized return / normalized cost (safe when <= 1) / fraction of safe episodes")
    for e in summary:
        print(f"    {e['env']:15s} budget {e['budget']:4g} {e['method']:24s} return {e['normalized_return_mean']:5.2f} "
              f"+- {e['normalized_return_stderr']:4.2f}  cost {e['normalized_cost_mean']:5.2f} "
              f"+- {e['normalized_cost_stderr']:4.2f}  safe {e['safe_mean']:4.2f}")
    log(f"results in {out / 'constrained.json'}, {out / 'constrained.csv'}, {out / 'constrained.png'}")
    return report


def write_outputs(report: dict, out: Path) -> None:
    write_json(out / "constrained.json", report)
    write_csv(out / "constrained.csv", report["episodes"])
    plt = pyplot()
    summary = report["summary"]
    groups = list(dict.fromkeys((e["env"], e["budget"]) for e in summary))
    cell = {(e["env"], e["budget"], e["method"]): e for e in summary}
    labels = [f"{env.split('-')[0]} b={b:g}" for env, b in groups]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 1.1 * len(groups) + 2), 6.5), sharex=True)
    for ax, field, ylabel in ((top, "normalized_return", "normalized return"),
                              (bottom, "normalized_cost", "normalized cost (cost / budget)")):
        grouped_bars(ax, labels, {m: ([cell[(*g, m)][f"{field}_mean"] for g in groups],
                                      [cell[(*g, m)][f"{field}_stderr"] for g in groups]) for m in METHODS}, ylabel)
    bottom.axhline(1.0, color="tab:red", linestyle="--", linewidth=1)
    top.set_title("Velocity-constrained locomotion: return and cost per budget")
    fig.tight_layout()
    fig.savefig(out / "constrained.png", dpi=120)
    plt.close(fig)
