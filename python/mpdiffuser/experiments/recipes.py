"""The recipe sweep behind the defaults (docs/results.md): bundles trained with several training
recipes on the same data, each controlling its robot with every sampler option set of a named grid
(MPDiffuser, lambda = 1, beside its planner-only twin, lambda = 0), against behaviour cloning (and
the d3rlpy baselines, with --baselines) on the same data and start states.

A recipe is a named recipe, optionally with training and model settings by their `train` flag
names, and training settings of one model as MODEL.SETTING: "default", "authors",
"default:prediction=epsilon,action_weight=1", "default:steps=30000,dynamics.steps=20000",
"default:architecture=unet,validate_every=1000". Each (dataset, recipe) is a task; its bundle
trains once per seed (train_steps for planner and dynamics unless the recipe sets steps,
ranker_steps for the ranker). Every option-set cell also records the bundle's training minutes
(planner + dynamics), the planner's last held-out loss and first-action error (recipes that
validate) and the plan latency, so that a family or budget comparison reads off the same table.

    mpdiffuser experiment recipes --dataset data/hopper-medium-s0.hdf5 --extra data/hopper-random-s0.hdf5 \
        --recipes default default:prediction=epsilon,action_weight=1 --option-grid core --seeds 0 1 2
    mpdiffuser experiment recipes --recipes default:architecture=unet,steps=3000,validate_every=1000 \
        default:steps=3000,validate_every=1000 --option-grid default-only     # the family comparison
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpdiffuser.config import TrainConfig
from mpdiffuser.experiments.common import (ExperimentConfig, check_model_options, episode_rows, score_error, slug,
                                           suite_dataset, test_start)
from mpdiffuser.experiments.grid import Cell, Experiment

# Sampler option sets crossed on every bundle (a dict: the product of its lists; a list: those sets).
# lambda 0 (dynamics_weight) is each set's planner-only twin.
GRIDS = {
    "default": dict(num_candidates=[1, 8], temperature=[1.0, 1e-3], guidance=[1.2, 2.0], return_target=[0.9, 1.1],
                    dynamics_weight=[1.0, 0.0]),
    # the chosen sampling (the authors' values), N = 8 with it, and the older defaults
    "core": [dict(num_candidates=n, temperature=t, guidance=w, return_target=g, dynamics_weight=lam)
             for n, t, w, g in ((1, 1e-3, 2.0, 1.1), (8, 1e-3, 2.0, 1.1), (8, 1.0, 1.2, 0.9)) for lam in (1.0, 0.0)],
    "default-only": [dict(num_candidates=1, temperature=1e-3, guidance=2.0, return_target=1.1, dynamics_weight=lam)
                     for lam in (1.0, 0.0)],
    # ranking needs diverse candidates: moderate temperatures, more candidates
    "explore": dict(num_candidates=[8, 32], temperature=[0.1, 0.3], guidance=[1.2], return_target=[1.1],
                    dynamics_weight=[1.0, 0.0]),
    "guidance": dict(num_candidates=[1], temperature=[1e-3], guidance=[3.0, 5.0], return_target=[1.3, 1.6],
                     dynamics_weight=[1.0, 0.0]),
    # strong planner guidance with the dynamics model unguided (w_d = 1)
    "strong": dict(num_candidates=[1], temperature=[1e-3], guidance=[3.0, 5.0, 8.0], return_target=[1.3, 1.6, 2.0],
                   dynamics_guidance=[1.0], dynamics_weight=[1.0, 0.0]),
    "strong-core": [dict(num_candidates=1, temperature=1e-3, guidance=w, return_target=g, dynamics_guidance=1.0,
                         dynamics_weight=lam) for w, g in ((5.0, 2.0), (8.0, 1.6)) for lam in (1.0, 0.0)],
    "small": dict(num_candidates=[1], temperature=[1e-3], guidance=[1.2], return_target=[1.0],
                  dynamics_weight=[1.0, 0.0]),
    "warm": dict(num_candidates=[1], temperature=[1e-3], guidance=[1.2], return_target=[1.0],
                 dynamics_weight=[1.0], warm_start_level=[0, 5, 10]),
}
BEHAVIOUR_CLONING = "behaviour cloning"
BASELINES_TASK = "baselines"  # the task suffix of the methods that train no bundle (one per dataset and seed)


def option_sets(grid: str) -> list[dict]:
    """The sampler option sets of a named grid."""
    chosen = GRIDS[grid]
    return list(chosen) if isinstance(chosen, list) else [dict(zip(chosen, v)) for v in itertools.product(*chosen.values())]


def option_label(changes: dict) -> str:
    return " ".join(f"{k}={v:g}" for k, v in changes.items())


def parse_recipe(text: str) -> tuple[str, dict]:
    """"NAME[:SETTING=VALUE,...]" -> (recipe name, {setting: value}): `mpdiffuser train`'s training
    and model settings by their flag names, each of its field's type (a tuple's values joined by /);
    MODEL.SETTING=VALUE gives one model a training setting (settings["per_model"], as --per-model)."""
    from mpdiffuser.commands.common import field_type
    from mpdiffuser.config import MODEL_FLAGS, MODEL_NAMES, TRAIN_FLAGS, ModelConfig
    from mpdiffuser.recipes import RECIPES

    name, _, rest = text.partition(":")
    if name not in RECIPES:
        raise ValueError(f"recipe {text!r}: {name!r} is no recipe; the recipes are {', '.join(RECIPES)}")
    allowed = [s for s in {**TRAIN_FLAGS, **MODEL_FLAGS} if s != "seed"]
    settings: dict = {}
    for item in filter(None, rest.split(",")):
        target, eq, value = item.partition("=")
        model, dot, flag = target.strip().rpartition(".")
        flag = flag.replace("-", "_")
        if not eq or flag not in allowed or (dot and (model not in MODEL_NAMES or flag not in TRAIN_FLAGS)):
            raise ValueError(f"recipe {text!r}: {item!r} is not [MODEL.]SETTING=VALUE with a training or model "
                             f"setting ({', '.join(allowed)}; a model ({', '.join(MODEL_NAMES)}) takes training "
                             "settings)")
        owner, fields = (TrainConfig, TRAIN_FLAGS) if flag in TRAIN_FLAGS else (ModelConfig, MODEL_FLAGS)
        kind, several = field_type(owner, fields[flag])
        try:
            parsed = tuple(kind(v) for v in value.split("/")) if several else kind(value.strip())
        except ValueError:
            raise ValueError(f"recipe {text!r}: {flag} needs a value of type {kind.__name__}") from None
        if dot:
            settings.setdefault("per_model", {}).setdefault(model, {})[flag] = parsed
        else:
            settings[flag] = parsed
    return name, settings


@dataclass(frozen=True)
class RecipesConfig(ExperimentConfig):
    out_dir: str = "runs/recipes"
    datasets: tuple[str, ...] = ("data/hopper-medium-s0.hdf5",)  # task data, one or more files (each its robot)
    extra: tuple[str, ...] = ("data/hopper-random-s0.hdf5",)  # for the dynamics model and ranker only (per robot)
    # training recipes: NAME[:SETTING=VALUE,...] with `mpdiffuser train`'s training and model settings
    # (a tuple's values joined by /: unet_mults=1/2/4), one model's as MODEL.SETTING (dynamics.steps=20000)
    recipes: tuple[str, ...] = ("default",)
    option_grid: str = "core"  # the sampler option sets every bundle controls with (experiments.recipes.GRIDS)
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds
    episodes: int = 10
    train_steps: int = 20_000  # planner and dynamics steps, unless a recipe sets steps
    bc_steps: int = 5000
    baselines: tuple[str, ...] = ()  # d3rlpy offline RL on the task data beside behaviour cloning: iql, td3+bc
    baseline_steps: int = 100_000  # their gradient steps

    @classmethod
    def quick(cls, **changes) -> "RecipesConfig":
        base = cls(out_dir="runs/recipes-quick", option_grid="default-only", seeds=(0,), train_steps=1000,
                   ranker_steps=500, bc_steps=1000, episodes=3, max_steps=300)
        return dataclasses.replace(base, **changes)

    def __post_init__(self) -> None:
        from mpdiffuser.experiments.locomotion import BASELINE_METHODS

        self.sampler_options
        check_model_options(self.width, self.action_weight, self.prediction)
        if not self.datasets or not self.seeds or not self.recipes:
            raise ValueError("RecipesConfig needs datasets, seeds and recipes")
        if self.option_grid not in GRIDS:
            raise ValueError(f"option_grid must be one of {', '.join(GRIDS)}, got {self.option_grid!r}")
        for text in self.recipes:
            parse_recipe(text)
        if len(set(self.recipes)) != len(self.recipes):
            raise ValueError(f"recipes repeats one: {list(self.recipes)}")
        unknown = set(self.baselines) - set(BASELINE_METHODS)
        if unknown:
            raise ValueError(f"unknown baselines {sorted(unknown)}: choose from {', '.join(BASELINE_METHODS)}")


class RecipeSweep(Experiment):
    name = "recipes"
    GRID_FIELDS = ("out_dir", "policy_dir", "seeds", "datasets", "extra", "threads", "recipes", "option_grid",
                   "baselines")
    score_note = ("D4RL-normalized score: mean over all evaluation episodes of all training seeds; stderr over the "
                  "seeds' means. Planner on the task data; dynamics model and ranker on it plus the extra data")

    def __init__(self, config: RecipesConfig) -> None:
        super().__init__(config)
        if (Path(config.out_dir) / "rows.jsonl").exists():
            raise ValueError(f"{config.out_dir} holds rows.jsonl of benchmarks/recipe_sweep.py (before the "
                             "experiment skeleton), which this experiment does not read: choose another --out, or "
                             "move that file away to keep its bundles' training (they resume)")
        self._data: dict[str, str] = {}
        for path in config.datasets:
            data = suite_dataset(path)
            if not data.env_id:
                raise ValueError(f"dataset {path} names no environment: the experiment evaluates on its robot")
            if not self._extra(path):
                raise ValueError(f"no --extra file is of {data.env_id} (the robot of {path})")
            self._data[Path(path).stem] = path
        self._options = {option_label(o): o for o in option_sets(config.option_grid)}

    def _extra(self, path: str) -> list:
        env_id = suite_dataset(path).env_id
        return [suite_dataset(e).check_env() for e in self.config.extra if suite_dataset(e).env_id == env_id]

    def tasks(self) -> list[str]:
        return ([f"{stem}/{recipe}" for stem in self._data for recipe in self.config.recipes]
                + [f"{stem}/{BASELINES_TASK}" for stem in self._data])

    def methods(self) -> list[str]:
        from mpdiffuser.experiments.locomotion import BASELINE_METHODS

        return [*self._options, BEHAVIOUR_CLONING, *(BASELINE_METHODS[b] for b in self.config.baselines)]

    def cells(self) -> list[Cell]:
        """Option sets on the recipes' tasks; behaviour cloning and the baselines once per dataset."""
        return [Cell(t, s, m) for s in self.seeds() for t in self.tasks() for m in self.methods()
                if (m in self._options) != t.endswith("/" + BASELINES_TASK)]

    def key(self, cell: Cell) -> dict:
        stem, recipe = cell.task.split("/", 1)
        path = self._data[stem]
        key = self.config_key() | {"data": path, "extra": [e for e in self.config.extra
                                                             if suite_dataset(e).env_id == suite_dataset(path).env_id],
                                   "cell": dataclasses.asdict(cell)}
        if recipe != BASELINES_TASK:
            key["recipe"], key["options"] = parse_recipe(recipe), self._options[cell.method]
        return key

    def bundle_dir(self, task: str, seed: int) -> Path:
        stem, recipe = task.split("/", 1)
        return self.out / "models" / stem / slug(recipe) / f"s{seed}"

    def prepare(self, task: str, seed: int, log, progress: bool) -> None:
        """The recipe's bundle (TrainRequest: the `train` command's checks and resumption), exported."""
        from mpdiffuser.config import RANKER_MODELS
        from mpdiffuser.export import export_model
        from mpdiffuser.training.request import TrainRequest

        stem, recipe = task.split("/", 1)
        if recipe == BASELINES_TASK:
            return
        c = self.config
        name, settings = parse_recipe(recipe)
        per_model = {m: {"steps": c.ranker_steps} for m in RANKER_MODELS}
        for model, changes in settings.pop("per_model", {}).items():
            per_model[model] = per_model.get(model, {}) | changes
        path = self._data[stem]
        sizes = {"width": c.width} if c.width else {}
        request = TrainRequest.of(self.bundle_dir(task, seed), [suite_dataset(path)],
                                  extra_data=tuple(self._extra(path)), recipe=name, device=c.device,
                                  **({"steps": c.train_steps, "action_weight": c.action_weight,
                                      "prediction": c.prediction, "architecture": c.architecture}
                                     | sizes | settings), seed=seed,
                                  per_model=per_model)
        request.run(progress=progress, say=lambda message: log(f"    {message}"))
        bundle = self.bundle_dir(task, seed)
        export_model(bundle, bundle / "model.safetensors", weights=c.weights)

    def run(self, cell: Cell, log, progress: bool) -> dict:
        from mpdiffuser.control.evaluate import evaluate

        c = self.config
        stem, recipe = cell.task.split("/", 1)
        task = suite_dataset(self._data[stem])
        start = test_start(cell.seed)
        metrics: dict = {}
        if cell.method in self._options:
            from mpdiffuser.control.mpc import MPCPolicy
            from mpdiffuser.sampling.sampler import Sampler

            bundle = self.bundle_dir(cell.task, cell.seed)
            sampler = Sampler(bundle / "model.safetensors", c.backend, threads=c.threads, env_id=task.env_id)
            policy = MPCPolicy(sampler, sampler.defaults.replace(**self._options[cell.method]))
            metrics = bundle_metrics(bundle)
        elif cell.method == BEHAVIOUR_CLONING:
            from mpdiffuser.control.bc import BCPolicy
            from mpdiffuser.data.normalizer import fit_normalizer

            obs = np.concatenate([e.observations for e in task.episodes])
            act = np.concatenate([e.actions for e in task.episodes])
            policy, _ = BCPolicy.train(task, fit_normalizer("minmax", obs), fit_normalizer("minmax", act),
                                       TrainConfig(steps=c.bc_steps, seed=cell.seed), progress=progress,
                                       device=c.device)
        else:
            from mpdiffuser.control.baselines import OfflineRLPolicy
            from mpdiffuser.experiments.locomotion import BASELINE_METHODS

            name = next(n for n, m in BASELINE_METHODS.items() if m == cell.method)
            policy, _ = OfflineRLPolicy.train(name, task, c.baseline_steps, seed=cell.seed, device=c.device,
                                              progress=progress)
        summary = evaluate(policy, task.env_id, c.episodes, start, c.max_steps, progress=progress,
                           desc=f"{cell.task} {cell.method}")
        if cell.method in self._options:
            metrics["latency_p50_ms"] = float(summary.to_dict()["latency"]["p50_ms"])
        return {"episodes": episode_rows(summary), "metrics": metrics}

    def report(self, report: dict, log) -> None:
        """The table: per (task, option set without lambda), MPDiffuser (lambda 1) beside planner-only
        (lambda 0), with the bundles' training minutes and held-out planner loss."""
        by = {(e["task"], e["method"]): e for e in report["summary"]}
        metrics = {(e["task"], e["method"]): e for e in report.get("metrics", [])}
        rows = []
        for (task, method), entry in by.items():
            changes = self._options.get(method)
            if changes is not None and changes.get("dynamics_weight", 1.0) == 0.0:
                continue  # shown beside its lambda-1 twin
            twin = (dict(changes, dynamics_weight=0.0) if changes is not None else None)
            other = by.get((task, option_label(twin))) if twin is not None else None
            row = {"task": task, "options": method if changes is None else
                   option_label({k: v for k, v in changes.items() if k != "dynamics_weight"}),
                   "score_mean": entry["score_mean"], "score_stderr": score_error(entry), "seeds": entry.get("seeds")}
            if other is not None:
                row |= {"planner_only_mean": other["score_mean"], "planner_only_stderr": score_error(other)}
            for name in ("train_minutes", "val_loss", "val_first_action_error", "latency_p50_ms"):
                m = metrics.get((task, method))
                if m is not None and f"{name}_mean" in m:
                    row[name] = m[f"{name}_mean"]
            rows.append(row)
        report["table"] = rows

    def print_summary(self, report: dict, log) -> None:
        log("recipe sweep: score (MPDiffuser, lambda 1) and its planner-only twin (lambda 0), s.e. over seeds")
        for r in report.get("table", []):
            twin = (f"  planner-only {r['planner_only_mean']:6.1f} +- {r['planner_only_stderr']:5.1f}"
                    if "planner_only_mean" in r else "")
            log(f"    {r['task']:40s} {r['options']:60s} {r['score_mean']:6.1f} +- {r['score_stderr']:5.1f}{twin}")


def bundle_metrics(bundle: Path) -> dict:
    """Training minutes of planner and dynamics and, when the planner validated, its last held-out
    loss and first-action error (logs/planner.csv)."""
    import csv

    import torch

    out = {"train_minutes": sum(float(torch.load(bundle / f"{name}.pt", weights_only=False)["info"].get("seconds", 0.0))
                                for name in ("planner", "dynamics")) / 60}
    log = bundle / "logs" / "planner.csv"
    if log.exists():
        rows = [r for r in csv.DictReader(log.open()) if r.get("val_loss")]
        if rows:
            out |= {k: float(rows[-1][k]) for k in ("val_loss", "val_first_action_error") if rows[-1].get(k)}
    return out


def run_recipes(config: RecipesConfig, progress: bool = True, ray_address: str | None = None) -> dict:
    """The grid (datasets x recipes) x seeds x option sets, here or on Ray; returns the report."""
    from mpdiffuser.experiments.grid import run_grid

    return run_grid(lambda: RecipeSweep(config), ray_address, progress)

