"""Constrained locomotion, DSRL style (evaluation suite, item 2): Safety-Gymnasium's velocity tasks
rebuilt over the v5 robots (cost 1 per step over the speed limit, envs.VELOCITY_LIMITS), data of
mixed safety (SAC with and without a cost penalty, plus random data), a cost model and cost-limit
conditioning. For each episode cost budget (10, 20, 40 per 1000 steps): MPDiffuser given the
budget (the models are conditioned on the remaining budget and selection rejects candidates over
it, design section 3.2), MPDiffuser without the budget, the planner-only sampler given the budget,
behaviour cloning on all the data and on the data's episodes within the budget (DSRL's BC-Safe).
With `return_targets`, MPDiffuser and planner-only with each budget also pick their return target
g by validation episodes (start states the test never uses): the highest return within the budget,
or the lowest cost when no g keeps it (control.tune.choose_setting).
Every method's episodes are saved as they finish (<out>/episodes/): a rerun redoes only what is new.

`velocity_limit` replaces DSRL's limit (m/s) for robots whose behaviour policies are too slow to
pay cost at it (a 100k-step SAC Ant runs over DSRL's 2.62 m/s on 2% of its steps); data, cautious
policy and evaluation all use it, and the reports say so.

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

from mpdiffuser.config import TrainConfig
from mpdiffuser.experiments.common import (VALIDATION_OFFSET, Log, ExperimentConfig, cached_dataset, cached_rows,
                                           check_model_options, grouped_bars, pyplot, score_error, slug, summarize,
                                           test_start, write_csv)
from mpdiffuser.experiments.grid import Cell, Experiment

WITH_BUDGET, NO_BUDGET, PLANNER_ONLY = "MPDiffuser", "MPDiffuser, no budget", "planner only (lambda=0)"
BC_ALL, BC_SAFE = "behaviour cloning", "BC, episodes within budget"
TUNED_WITH_BUDGET, TUNED_PLANNER_ONLY = "MPDiffuser, g by validation", "planner only, g by validation"
METHODS = (WITH_BUDGET, NO_BUDGET, PLANNER_ONLY, BC_ALL, BC_SAFE)
TUNED_METHODS = (TUNED_WITH_BUDGET, TUNED_PLANNER_ONLY)  # with return_targets
UNBUDGETED = (NO_BUDGET, BC_ALL)  # one set of episodes, scored against every budget


@dataclass(frozen=True)
class ConstrainedConfig(ExperimentConfig):
    envs: tuple[str, ...] = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5")
    budgets: tuple[float, ...] = (10.0, 20.0, 40.0)  # episode cost budgets per 1000 steps
    seeds: tuple[int, ...] = (0,)  # training seeds
    out_dir: str = "runs/constrained"
    data_seed: int = 0
    cautious_steps: int | None = None  # SAC steps of the cautious policy (None: policy_steps)
    cost_penalty: float = 1.0  # the cautious policy trains on reward - cost_penalty * cost
    velocity_limit: float | None = None  # m/s for every robot of envs (None: DSRL's, envs.VELOCITY_LIMITS)
    return_targets: tuple[float, ...] = ()  # candidate g: the tuned methods pick one per seed and budget
    validation_episodes: int = 3  # per candidate g, from start states the test never uses
    bc_steps: int = 5000
    candidates: int = 8  # N of the exported model file (every sampler of the experiment plans with it)

    @classmethod
    def quick(cls, **changes) -> "ConstrainedConfig":
        base = cls(envs=("Hopper-v5",), out_dir="runs/constrained-quick", policy_dir="runs/policies-quick",
                   policy_steps=5000, task_transitions=5000, random_transitions=5000, train_steps=2000,
                   ranker_steps=1000, bc_steps=2000, episodes=3)
        return dataclasses.replace(base, **changes)

    def __post_init__(self) -> None:
        self.sampler_options  # a bad N or g fails here, not after hours of training
        check_model_options(self.width, self.action_weight, self.prediction)
        if not self.envs or not self.budgets or not self.seeds or self.episodes < 1 or self.max_steps < 1:
            raise ValueError("ConstrainedConfig needs envs, budgets, seeds, episodes >= 1 and max_steps >= 1")
        if not all(np.isfinite(self.return_targets)) or self.validation_episodes < 1:
            raise ValueError("ConstrainedConfig needs finite return_targets and validation_episodes >= 1")
        if any(not b > 0 for b in self.budgets):
            raise ValueError(f"budgets must be positive, got {self.budgets}")
        if self.velocity_limit is not None:
            from mpdiffuser.envs import velocity_limit

            velocity_limit(self.envs[0], self.velocity_limit)  # a bad limit fails here, not after SAC


BUDGET = " | budget "  # a budgeted method's cell: "MPDiffuser | budget 10"


class Constrained(Experiment):
    """The grid: tasks are the robots, every seed trains one bundle per robot (prepare), every
    method at every budget is a cell (an unbudgeted method one cell, scored against every budget
    in the report). Every cell keeps the per-method episode caches of <out>/episodes/."""

    name = "constrained"
    GRID_FIELDS = ("out_dir", "policy_dir", "seeds", "envs", "budgets", "threads")
    score = "return"
    score_note = ("normalized return = (R - R_min) / (R_max - R_min), dataset episode returns (DSRL); normalized cost "
                  "= episode cost / budget, safe when <= 1; means over all evaluation episodes of all training seeds; "
                  "<field>_stderr over the episodes, <field>_stderr_seeds over the seeds' means (the table's and "
                  "plot's error when there are 2 or more seeds)")

    def __init__(self, config: ConstrainedConfig, progress: bool = True) -> None:
        from mpdiffuser.data.dataset import load_dataset
        from mpdiffuser.data.generate import GenerateConfig, generate
        from mpdiffuser.envs import velocity_limit

        super().__init__(config)
        log = Log()
        self.files, self.data_stats, self.mixed = {}, {}, {}
        for env_id in config.envs:
            mixed = GenerateConfig(env_id, "mixed", config.task_transitions, config.policy_steps, constrained=True,
                                   seed=config.data_seed, cost_penalty=config.cost_penalty,
                                   cautious_steps=config.cautious_steps, velocity_limit=config.velocity_limit)
            limit = velocity_limit(env_id, config.velocity_limit)
            log(f"{env_id}: velocity limit {limit:g} m/s ({'DSRL' if mixed.velocity_limit is None else 'lowered'}), "
                f"mixed-safety data ({mixed.name}: SAC {config.policy_steps} steps without and "
                f"{mixed.cautious_policy_steps} with a cost penalty of {config.cost_penalty:g}) + random, policies "
                f"cached in {config.policy_dir}")
            task_file = generate(mixed, config.data_dir, progress, config.policy_dir)
            random_file = generate(GenerateConfig(env_id, "random", config.random_transitions, constrained=True,
                                                  seed=config.data_seed, velocity_limit=config.velocity_limit),
                                   config.data_dir, progress)
            task = load_dataset(task_file)
            returns = task.returns()
            costs = np.array([e.costs.sum() for e in task.episodes])
            per_1000 = 1000.0 * costs / np.array([e.length for e in task.episodes])
            self.files[env_id] = (str(task_file), str(random_file))
            self.mixed[env_id] = mixed
            self.data_stats[env_id] = {
                "velocity_limit": limit, "return_min": float(returns.min()), "return_max": float(returns.max()),
                "return_mean": float(returns.mean()), "cost_mean": float(costs.mean()), "cost_max": float(costs.max()),
                "cost_per_1000_mean": float(per_1000.mean()), "episodes": len(task.episodes),
                "within_budget": {f"{b:g}": int((per_1000 <= b).sum()) for b in config.budgets}}
            log(f"  data: {len(task.episodes)} episodes, return {returns.mean():.0f} (min {returns.min():.0f}, max "
                f"{returns.max():.0f}), episode cost mean {costs.mean():.1f} max {costs.max():.0f}; episodes within "
                "budget " + ", ".join(f"{b}: {n}" for b, n in self.data_stats[env_id]["within_budget"].items()))

    def tasks(self) -> list[str]:
        return list(self.files)

    def methods(self) -> list[str]:
        c = self.config
        budgeted = (WITH_BUDGET, PLANNER_ONLY) + (TUNED_METHODS if c.return_targets else ()) + (BC_SAFE,)
        return [NO_BUDGET, BC_ALL] + [f"{m}{BUDGET}{b:g}" for b in c.budgets for m in budgeted]

    def cells(self) -> list[Cell]:
        """Every method at every budget, BC-Safe only where the data hold an episode within it."""
        out = []
        for cell in super().cells():
            method, budget = split_method(cell.method)
            if method == BC_SAFE and self.data_stats[cell.task]["within_budget"][f"{budget:g}"] == 0:
                continue
            out.append(cell)
        return out

    def key(self, cell: Cell) -> dict:
        return self.config_key() | {"data": self.files[cell.task], "cell": dataclasses.asdict(cell)}

    def bundle_dir(self, env_id: str, seed: int) -> Path:
        return self.out / "models" / env_id.split("-")[0].lower() / f"s{seed}"

    def prepare(self, task: str, seed: int, log, progress: bool) -> None:
        data, random = (cached_dataset(f) for f in self.files[task])
        log(f"  {task} seed {seed}: training planner, dynamics, reward and cost models -> {self.bundle_dir(task, seed)}")
        self.config.train_bundle(self.bundle_dir(task, seed), data, [random], seed, log, progress)

    def run(self, cell: Cell, log, progress: bool) -> dict:
        return _run_cell(self, cell, log, progress)

    def report(self, report: dict, log) -> None:
        """Each episode scored against its budget (an unbudgeted method's against every budget),
        the summary by robot, budget and method, the data's statistics."""
        c = self.config
        scale = c.max_steps / 1000.0
        rows = []
        for r in report["episodes"]:
            method, budget = split_method(r["method"])
            stats = self.data_stats[r["task"]]
            r_min, r_max = stats["return_min"], stats["return_max"]
            for b in ([budget] if budget is not None else c.budgets):
                rows.append({k: v for k, v in r.items() if k not in ("task", "method", "seed")}
                            | {"env": r["task"], "budget": b, "method": method, "seed": r["seed"],
                               "normalized_return": (r["return"] - r_min) / max(r_max - r_min, 1e-9),
                               "normalized_cost": r["cost"] / (b * scale), "safe": float(r["cost"] <= b * scale)})
        report["episodes"] = rows
        report["summary"] = summarize(rows, ("env", "budget", "method"),
                                      ("normalized_return", "normalized_cost", "safe", "return", "cost"), unit="seed")
        report["note"] = report.pop("score_note")
        report["data"] = self.data_stats
        report.setdefault("validation", [])
        for name in ("metrics", "metrics_seeds"):
            report.pop(name, None)

    def plot(self, report: dict) -> None:
        _write_plots(report, self.out)

    def print_summary(self, report: dict, log) -> None:
        log("normalized return / normalized cost (safe when <= 1) / fraction of safe episodes "
            "(errors over seeds when there are 2 or more)")
        for e in report["summary"]:
            print(f"    {e['env']:15s} budget {e['budget']:4g} {e['method']:27s} return "
                  f"{e['normalized_return_mean']:5.2f} +- {score_error(e, 'normalized_return'):4.2f}  cost "
                  f"{e['normalized_cost_mean']:5.2f} +- {score_error(e, 'normalized_cost'):4.2f}  safe "
                  f"{e['safe_mean']:4.2f}")


def split_method(name: str) -> tuple[str, float | None]:
    """'MPDiffuser | budget 10' -> ('MPDiffuser', 10.0); an unbudgeted method's budget is None."""
    method, _, budget = name.partition(BUDGET)
    return method, float(budget) if budget else None


def _run_cell(experiment: Constrained, cell: Cell, log, progress: bool) -> dict:
    """One method at one budget (or without one) on one robot and seed: its policy (a tuned method
    picks g by validation episodes first), its test episodes, cached under <out>/episodes/."""
    from mpdiffuser.control.bc import BCPolicy
    from mpdiffuser.control.evaluate import EpisodeResult
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.control.tune import choose_setting
    from mpdiffuser.data.dataset import OfflineDataset
    from mpdiffuser.export import model_file_digest
    from mpdiffuser.models.bundle import BundleSpec
    from mpdiffuser.sampling.sampler import Sampler

    config, env_id, seed = experiment.config, cell.task, cell.seed
    method, budget = split_method(cell.method)
    task = cached_dataset(experiment.files[env_id][0])
    per_1000 = np.array([1000.0 * e.costs.sum() / e.length for e in task.episodes])
    bundle_dir = experiment.bundle_dir(env_id, seed)
    model_file = bundle_dir / "model.safetensors"
    sampler = Sampler(model_file, config.backend, threads=config.threads, env_id=env_id)
    spec = BundleSpec.load(bundle_dir)
    d = sampler.defaults
    scale = config.max_steps / 1000.0  # budgets are per 1000 steps; shorter episodes get a share
    eval_seed = test_start(seed)
    evaluation = {"env": env_id, "data": experiment.mixed[env_id].recipe(), "episodes": config.episodes,
                  "max_steps": config.max_steps, "start_seed": eval_seed}
    model = {"model_file": model_file_digest(model_file), "backend": config.backend}
    cache_dir = experiment.out / "episodes" / env_id.split("-")[0].lower() / f"s{seed}"
    validation_rows: list[dict] = []

    def bc(episodes, what):
        def make():
            data = OfflineDataset(episodes, task.metadata)
            policy, info = BCPolicy.train(data, spec.states, spec.actions, TrainConfig(steps=config.bc_steps, seed=seed),
                                          progress=progress, device=config.device)
            log(f"    bc on {what}: {config.bc_steps} steps, final loss {info['final_loss']:.4f} ({info['seconds']:.0f}s)")
            return policy
        return make

    def choose_g(options, b) -> float:
        """The return target of config.return_targets for this method under episode budget b, by
        validation episodes from start seeds eval_seed + VALIDATION_OFFSET on."""
        start = eval_seed + VALIDATION_OFFSET

        def run(setting):
            g = setting["return_target"]
            done = cached_rows(cache_dir / f"validation-{slug(method)}-b{budget:g}-g{g:g}.json",
                               evaluation | model | {"method": method, "budget": budget, "return_target": g,
                                                     "start_seed": start, "episodes": config.validation_episodes},
                               lambda: _episodes(MPCPolicy(sampler, options.replace(return_target=g), episode_budget=b,
                                                           episode_length=config.max_steps),
                                                 env_id, start, f"validation {method} g={g:g}", budget, config,
                                                 progress, config.validation_episodes))
            return [EpisodeResult(r["return"], None, r["cost"], r["length"]) for r in done]

        best, tried = choose_setting([{"return_target": float(g)} for g in config.return_targets], run, b)
        validation_rows.extend({"env": env_id, "seed": seed, "budget": budget, "method": method, "start_seed": start}
                               | r for r in tried)
        log(f"    {method} budget {budget:g}: g = {best['return_target']:g} (validation return / cost "
            + ", ".join(f"g {r['return_target']:g}: {r['return_mean']:.0f} / {r['cost_mean']:.0f}" for r in tried) + ")")
        return best["return_target"]

    b = None if budget is None else budget * scale
    depends = None  # None: the model file
    if method == NO_BUDGET:
        largest = float(max(e.costs.sum() for e in task.episodes))  # the largest cost-to-go the models have seen
        make = lambda: MPCPolicy(sampler, d.replace(cost_limit=largest, cost_budget=None))  # noqa: E731
    elif method == BC_ALL:
        depends, make = {"bc_steps": config.bc_steps, "seed": seed}, bc(task.episodes, "all episodes")
    elif method == WITH_BUDGET:
        make = lambda: MPCPolicy(sampler, d, episode_budget=b, episode_length=config.max_steps)  # noqa: E731
    elif method == PLANNER_ONLY:
        make = lambda: MPCPolicy(sampler, d.replace(dynamics_weight=0.0), episode_budget=b,  # noqa: E731
                                 episode_length=config.max_steps)
    elif method in TUNED_METHODS:
        options = d if method == TUNED_WITH_BUDGET else d.replace(dynamics_weight=0.0)
        g = choose_g(options, b)
        depends = model | {"return_target": g}
        make = lambda: MPCPolicy(sampler, options.replace(return_target=g), episode_budget=b,  # noqa: E731
                                 episode_length=config.max_steps)
    elif method == BC_SAFE:
        safe = [e for e, c in zip(task.episodes, per_1000) if c <= budget]
        depends, make = {"bc_steps": config.bc_steps, "seed": seed}, bc(safe, f"{len(safe)} episodes within budget "
                                                                            f"{budget:g}")
    else:
        raise ValueError(f"unknown method {method!r}: the constrained methods are {', '.join(METHODS + TUNED_METHODS)}")
    done = cached_rows(cache_dir / f"{slug(method)}-{'all' if budget is None else f'b{budget:g}'}.json",
                       evaluation | (model if depends is None else depends) | {"method": method, "budget": budget},
                       lambda: _episodes(make(), env_id, eval_seed, method, budget, config, progress))
    return {"episodes": done, "metrics": {}, "validation": validation_rows}


def run_constrained(config: ConstrainedConfig, progress: bool = True, ray_address: str | None = None) -> dict:
    """The grid (robots x seeds x methods and budgets), here or on Ray; returns the report (also
    written to <out>/constrained.json, .csv and the plot)."""
    from mpdiffuser.experiments.grid import run_grid

    return run_grid(lambda: Constrained(config, progress), ray_address, progress)


def _episodes(policy, env_id: str, eval_seed: int, method: str, budget, config: ConstrainedConfig,
              progress: bool, episodes: int | None = None) -> list[dict]:
    from mpdiffuser.control.evaluate import evaluate

    summary = evaluate(policy, env_id, episodes or config.episodes, eval_seed, config.max_steps, constrained=True,
                       progress=progress, desc=f"{env_id} {method} {budget}", limit=config.velocity_limit)
    return [{"episode": i, "return": e.episode_return, "cost": e.cost, "length": e.length}
            for i, e in enumerate(summary.episodes)]


def _write_plots(report: dict, out: Path) -> None:
    """constrained_validation.csv and the plot (the grid writes the JSON and constrained.csv)."""
    out.mkdir(parents=True, exist_ok=True)
    if report["validation"]:
        write_csv(out / "constrained_validation.csv", report["validation"])
    plt = pyplot()
    summary = report["summary"]
    groups = list(dict.fromkeys((e["env"], e["budget"]) for e in summary))
    cell = {(e["env"], e["budget"], e["method"]): e for e in summary}
    labels = [f"{env.split('-')[0]} b={b:g}" for env, b in groups]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 1.1 * len(groups) + 2), 6.5), sharex=True)
    for ax, field, ylabel in ((top, "normalized_return", "normalized return"),
                              (bottom, "normalized_cost", "normalized cost (cost / budget)")):
        methods = [m for m in METHODS + TUNED_METHODS if any((*g, m) in cell for g in groups)]
        nan = {f"{field}_mean": float("nan"), f"{field}_stderr": 0.0}
        grouped_bars(ax, labels, {m: ([cell.get((*g, m), nan)[f"{field}_mean"] for g in groups],
                                      [score_error(cell.get((*g, m), nan), field) for g in groups])
                                  for m in methods}, ylabel)
    bottom.axhline(1.0, color="tab:red", linestyle="--", linewidth=1)
    top.set_title("Velocity-constrained locomotion: return and cost per budget")
    fig.tight_layout()
    fig.savefig(out / "constrained.png", dpi=120)
    plt.close(fig)
