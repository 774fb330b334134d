"""The recipe sweep behind the defaults (issue 15, docs/results.md): train bundles on the shared
data suite, then control Hopper with every combination of sampler options on the native CPU
backend, against behaviour cloning on the same data.

    # one training seed per process (one thread each; run two side by side on 2 cores)
    python benchmarks/recipe_sweep.py train --seed 0 --out runs/sweep [--prediction epsilon] [--action-weight 1]
    python benchmarks/recipe_sweep.py eval --out runs/sweep --grid default   # every bundle under --out
    python benchmarks/recipe_sweep.py bc --out runs/sweep --seed 0
    python benchmarks/recipe_sweep.py baseline --out runs/sweep --algorithm iql --baseline-steps 20000   # d3rlpy
    python benchmarks/recipe_sweep.py table --out runs/sweep                 # the markdown table

The family comparison (issue 18): the same, with --architecture unet|mlp and the planner validated
on 5% held-out episodes (--validate-every); `families` prints score, held-out planner loss,
first-action error and training time per family and budget:

    python benchmarks/recipe_sweep.py train --out runs/families --architecture unet --steps 3000 --dynamics-steps 3000 --validate-every 1000
    python benchmarks/recipe_sweep.py eval --out runs/families --grid default-only --episodes 5
    python benchmarks/recipe_sweep.py families --out runs/families

Every evaluation row (one bundle x one option set, 10 episodes, start seeds 1000-1009) is appended
to <out>/rows.jsonl with its options, episode scores and plan latency.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ENV = "Hopper-v5"

GRIDS = {
    # sampler options crossed on every bundle; lambda 0 is the planner-only baseline
    "default": dict(num_candidates=[1, 8], temperature=[1.0, 1e-3], guidance=[1.2, 2.0], return_target=[0.9, 1.1],
                    dynamics_weight=[1.0, 0.0]),
    # the chosen sampling (the authors' values, best or level-best on seed 0), N = 8 with it, and the
    # old defaults, each with its planner-only twin
    "core": [dict(num_candidates=1, temperature=1e-3, guidance=2.0, return_target=1.1, dynamics_weight=lam)
             for lam in (1.0, 0.0)]
            + [dict(num_candidates=8, temperature=1e-3, guidance=2.0, return_target=1.1, dynamics_weight=lam)
               for lam in (1.0, 0.0)]
            + [dict(num_candidates=8, temperature=1.0, guidance=1.2, return_target=0.9, dynamics_weight=lam)
               for lam in (1.0, 0.0)],
    "default-only": [dict(num_candidates=1, temperature=1e-3, guidance=2.0, return_target=1.1, dynamics_weight=lam)
                     for lam in (1.0, 0.0)],
    "small": dict(num_candidates=[1], temperature=[1e-3], guidance=[1.2], return_target=[1.0],
                  dynamics_weight=[1.0, 0.0]),
    # ranking needs diverse candidates: moderate temperatures, more candidates, guidance and target
    "explore": dict(num_candidates=[8, 32], temperature=[0.1, 0.3], guidance=[1.2], return_target=[1.1],
                    dynamics_weight=[1.0, 0.0]),
    "guidance": dict(num_candidates=[1], temperature=[1e-3], guidance=[3.0, 5.0], return_target=[1.3, 1.6],
                     dynamics_weight=[1.0, 0.0]),
    # strong planner guidance with the dynamics model unguided (w_d = 1)
    "strong": dict(num_candidates=[1], temperature=[1e-3], guidance=[3.0, 5.0, 8.0], return_target=[1.3, 1.6, 2.0],
                   dynamics_guidance=[1.0], dynamics_weight=[1.0, 0.0]),
    "strong-core": [dict(num_candidates=1, temperature=1e-3, guidance=w, return_target=g, dynamics_guidance=1.0,
                         dynamics_weight=lam) for w, g in ((5.0, 2.0), (8.0, 1.6)) for lam in (1.0, 0.0)],
    "warm": dict(num_candidates=[1], temperature=[1e-3], guidance=[1.2], return_target=[1.0],
                 dynamics_weight=[1.0], warm_start_level=[0, 5, 10]),
}


def bundle_name(a) -> str:
    norm = "" if a.normalizer == "minmax" else f"-{a.normalizer}"
    family = "" if a.architecture == "mlp" else f"-{a.architecture}"
    return f"{a.task}{family}-{a.prediction}-aw{a.action_weight:g}-{a.return_condition}{norm}-{a.steps}-s{a.seed}"


def cmd_train(a) -> None:
    from mpdiffuser.config import ModelConfig, TrainConfig
    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.models.bundle import BundleSpec
    from mpdiffuser.training.bundles import prepare_bundle, train_bundle

    task = load_dataset(DATA / f"{a.task}.hdf5")
    extra = load_dataset(DATA / "hopper-random-s0.hdf5")
    out = Path(a.out) / bundle_name(a)
    model = ModelConfig.sized_for(task.state_dim, task.action_dim, prediction=a.prediction,
                                  return_condition=a.return_condition, normalizer=a.normalizer,
                                  architecture=a.architecture)
    prepare_bundle(out, [task], [extra], spec=BundleSpec.fit(task, [task, extra], model))
    configs = {name: TrainConfig(steps=steps, seed=a.seed, action_weight=a.action_weight if name == "planner" else 1.0,
                                 validate_every=a.validate_every if name == "planner" else 0)
               for name, steps in (("planner", a.steps), ("dynamics", a.dynamics_steps), ("reward", a.ranker_steps))}
    for _, name, config, info in train_bundle(out, [task], [extra], configs=configs, progress=False):
        with (Path(a.out) / "train.jsonl").open("a") as f:
            f.write(json.dumps({"bundle": out.name, "model": name, "steps": config.steps, "seconds": info["seconds"],
                                "final_loss": info["final_loss"]}) + "\n")
        print(f"{out.name} {name}: {config.steps} steps, loss {info['final_loss']:.4f}, {info['seconds']:.0f}s",
              flush=True)


def evaluate_rows(model_file: Path, grid: dict, episodes: int, label: str, rows_path: Path) -> None:
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.sampling.sampler import Sampler

    sampler = Sampler(model_file, "cpu", threads=1)
    done = set()
    if rows_path.exists():
        done = {(r["bundle"], json.dumps(r["changes"], sort_keys=True)) for r in map(json.loads, rows_path.open())}
    combos = grid if isinstance(grid, list) else [dict(zip(grid, v)) for v in itertools.product(*grid.values())]
    for changes in combos:
        if (label, json.dumps(changes, sort_keys=True)) in done:
            continue
        # grids that name no w_d guide the dynamics model with w, as every row did before w_d existed
        options = sampler.defaults.replace(**({"dynamics_guidance": changes.get("guidance", 1.0)} | changes))
        started = time.perf_counter()
        summary = evaluate(MPCPolicy(sampler, options), ENV, episodes, seed=1000, progress=False).to_dict()
        row = {"bundle": label, "changes": changes, "options": dataclasses.asdict(options),
               "score_mean": summary["score_mean"], "score_stderr": summary["score_stderr"],
               "scores": [e["normalized_score"] for e in summary["episodes"]], "latency": summary["latency"],
               "seconds": round(time.perf_counter() - started, 1)}
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{label} {changes}: {row['score_mean']:.1f} +- {row['score_stderr']:.1f} ({row['seconds']}s)", flush=True)


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})


def cmd_eval(a) -> None:
    from mpdiffuser.export import export_model

    root = Path(a.out)
    for bundle in sorted(p.parent for p in root.glob("*/reward.pt")):
        if a.match and a.match not in bundle.name:
            continue
        model_file = bundle / "model.safetensors"
        if not model_file.exists() or "default.dynamics_guidance" not in _metadata(model_file):
            export_model(bundle, model_file)  # (re-)export files written before w_d existed
        evaluate_rows(model_file, GRIDS[a.grid], a.episodes, bundle.name, root / "rows.jsonl")


def cmd_bc(a) -> None:
    from mpdiffuser.config import TrainConfig
    from mpdiffuser.control.bc import BCPolicy
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.data.normalizer import MinMaxNormalizer

    task = load_dataset(DATA / f"{a.task}.hdf5")
    states = MinMaxNormalizer.fit(np.concatenate([e.observations for e in task.episodes]))
    actions = MinMaxNormalizer.fit(np.concatenate([e.actions for e in task.episodes]))
    policy, _ = BCPolicy.train(task, states, actions, TrainConfig(steps=a.bc_steps, seed=a.seed), progress=False)
    summary = evaluate(policy, ENV, a.episodes, seed=1000, progress=False).to_dict()
    row = {"bundle": f"{a.task}-bc-{a.bc_steps}-s{a.seed}", "changes": {"bc": True},
           "score_mean": summary["score_mean"], "score_stderr": summary["score_stderr"],
           "scores": [e["normalized_score"] for e in summary["episodes"]]}
    with (Path(a.out) / "rows.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"BC {a.task} seed {a.seed}: {row['score_mean']:.1f} +- {row['score_stderr']:.1f}", flush=True)


def cmd_baseline(a) -> None:
    """An offline RL baseline from d3rlpy (--algorithm, --baseline-steps) on the task data, the
    same evaluation starts; one row in rows.jsonl."""
    from mpdiffuser.control.baselines import OfflineRLPolicy
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.data.dataset import load_dataset

    task = load_dataset(DATA / f"{a.task}.hdf5")
    policy, info = OfflineRLPolicy.train(a.algorithm, task, a.baseline_steps, seed=a.seed, progress=False)
    summary = evaluate(policy, ENV, a.episodes, seed=1000, progress=False).to_dict()
    row = {"bundle": f"{a.task}-{a.algorithm}-{a.baseline_steps}-s{a.seed}", "changes": {"baseline": a.algorithm},
           "score_mean": summary["score_mean"], "score_stderr": summary["score_stderr"],
           "scores": [e["normalized_score"] for e in summary["episodes"]], "train_seconds": round(info["seconds"], 1)}
    with (Path(a.out) / "rows.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{a.algorithm} {a.task} seed {a.seed}: {row['score_mean']:.1f} +- {row['score_stderr']:.1f} "
          f"({info['seconds']:.0f}s)", flush=True)


def cmd_table(a) -> None:
    """One row per (recipe, sampler options without lambda): MPDiffuser (lambda = 1) and
    planner-only (lambda = 0) side by side. Score = mean over training seeds of each seed's mean
    over its episodes; +- is the standard error over seeds, or over episodes for a single seed."""
    rows = [json.loads(line) for line in (Path(a.out) / "rows.jsonl").open()]
    groups: dict[tuple, dict[float, list]] = {}
    for r in rows:
        recipe = r["bundle"].rsplit("-s", 1)[0]
        changes = dict(r["changes"])
        lam = changes.pop("dynamics_weight", "bc")
        groups.setdefault((recipe, json.dumps(changes, sort_keys=True)), {}).setdefault(lam, []).append(r)

    def cell(found) -> str:
        if not found:
            return ""
        means = np.array([r["score_mean"] for r in found])
        if len(means) > 1:
            se = means.std(ddof=1) / np.sqrt(len(means))
        else:
            scores = np.asarray(found[0]["scores"])
            se = scores.std(ddof=1) / np.sqrt(len(scores)) if len(scores) > 1 else 0.0
        return f"{means.mean():.1f} +- {se:.1f} ({len(means)})"

    print("| recipe | sampler options | MPDiffuser (lambda 1) | planner only (lambda 0) |\n|---|---|---:|---:|")
    for (recipe, changes), by in sorted(groups.items()):
        if "bc" in by:
            print(f"| {recipe} | behaviour cloning | {cell(by['bc'])} | |")
            continue
        print(f"| {recipe} | {changes} | {cell(by.get(1.0))} | {cell(by.get(0.0))} |")


def _last_validation(bundle: Path) -> dict:
    """The planner's last validation row of logs/planner.csv (held-out loss and sampled errors)."""
    import csv

    rows = [r for r in csv.DictReader((bundle / "logs" / "planner.csv").open()) if r.get("val_loss")]
    return {k: float(rows[-1][k]) for k in ("step", "val_loss", "val_first_action_error")} if rows else {}


def cmd_families(a) -> None:
    """One row per (family, budget) over its training seeds: MPDiffuser and planner-only at the
    default sampling, the held-out planner loss and first-action error at the last validation,
    and the planner + dynamics training time. Mean +- standard error over seeds."""
    root = Path(a.out)
    rows = [json.loads(line) for line in (root / "rows.jsonl").open()]
    trained = [json.loads(line) for line in (root / "train.jsonl").open()]
    groups: dict[str, dict[str, list]] = {}
    for bundle in sorted({r["bundle"] for r in rows}):
        group = groups.setdefault(bundle.rsplit("-s", 1)[0], {})
        for r in rows:
            if r["bundle"] == bundle:
                group.setdefault(f"lambda{r['changes']['dynamics_weight']:g}", []).append(r["score_mean"])
        val = _last_validation(root / bundle)
        for key in ("val_loss", "val_first_action_error"):
            group.setdefault(key, []).append(val.get(key, np.nan))
        group.setdefault("minutes", []).append(sum(t["seconds"] for t in trained if t["bundle"] == bundle
                                                   and t["model"] in ("planner", "dynamics")) / 60)

    def cell(values, digits) -> str:
        v = np.asarray(values, float)
        se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
        return f"{v.mean():.{digits}f} +- {se:.{digits}f}"

    print("| family and budget | seeds | MPDiffuser | planner only | held-out planner loss | first-action error "
          "| planner + dynamics training (min) |\n|---|---:|---:|---:|---:|---:|---:|")
    def order(name: str):  # family, then training steps
        head, steps = name.rsplit("-", 1)
        return ("-unet-" in head, head, int(steps) if steps.isdigit() else 0)

    for name, g in sorted(groups.items(), key=lambda item: order(item[0])):
        print(f"| {name} | {len(g['minutes'])} | {cell(g.get('lambda1', [np.nan]), 1)} | "
              f"{cell(g.get('lambda0', [np.nan]), 1)} | {cell(g['val_loss'], 4)} | "
              f"{cell(g['val_first_action_error'], 4)} | {cell(g['minutes'], 1)} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["train", "eval", "bc", "baseline", "table", "families"])
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--task", default="hopper-medium-s0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prediction", default="sample", choices=["sample", "epsilon"])
    p.add_argument("--return-condition", default="authors", choices=["authors", "minmax"])
    p.add_argument("--normalizer", default="minmax", choices=["minmax", "cdf"])
    p.add_argument("--action-weight", type=float, default=10.0)
    p.add_argument("--architecture", default="mlp", choices=["mlp", "unet"])
    p.add_argument("--validate-every", type=int, default=0, help="planner validation on held-out episodes (0: none)")
    p.add_argument("--steps", type=int, default=30000, help="planner steps")
    p.add_argument("--dynamics-steps", type=int, default=20000)
    p.add_argument("--ranker-steps", type=int, default=5000)
    p.add_argument("--bc-steps", type=int, default=5000)
    p.add_argument("--algorithm", default="iql", choices=["iql", "td3+bc"], help="baseline: the d3rlpy algorithm")
    p.add_argument("--baseline-steps", type=int, default=20000)
    p.add_argument("--grid", default="default", choices=list(GRIDS))
    p.add_argument("--match", default=None, help="eval: only bundles whose name contains this")
    p.add_argument("--episodes", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(1)
    {"train": cmd_train, "eval": cmd_eval, "bc": cmd_bc, "baseline": cmd_baseline, "table": cmd_table,
     "families": cmd_families}[a.command](a)


if __name__ == "__main__":
    main()
