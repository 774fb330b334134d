"""What the experiments of the evaluation suite share: a timestamped log, training a bundle and
exporting its model file, statistics, and CSV/JSON/plot writing."""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpdiffuser import results_json
from mpdiffuser.config import RANKER_MODELS, WEIGHT_FORMATS, ModelConfig, SamplerOptions, TrainConfig
from mpdiffuser.control.tune import VALIDATION_SEED
from mpdiffuser.data.dataset import OfflineDataset


# validation starts of the experiments: test starts + this (a test never has this many episodes);
# the same offset as `mpdiffuser tune`'s validation starts (one home: control.tune)
VALIDATION_OFFSET = VALIDATION_SEED


TEST_START_STRIDE = 10_000  # training seed s is tested from start seeds TEST_START_STRIDE (s + 1) + i


def test_start(seed: int) -> int:
    """The first test start of training seed `seed`: the same for every method of that seed."""
    return TEST_START_STRIDE * (seed + 1)


@functools.lru_cache(maxsize=32)
def cached_dataset(path: str) -> OfflineDataset:
    """load_dataset, once per path and process (the experiments' cells read the same files)."""
    from mpdiffuser.data.dataset import load_dataset

    return load_dataset(path)


def suite_dataset(path: str) -> OfflineDataset:
    """A dataset file an experiment reads (cached_dataset), or a message that says how to make it."""
    if not str(path).startswith("minari:") and not Path(path).exists():
        raise FileNotFoundError(f"dataset {path} does not exist: make the Hopper suite with `bash scripts/make_suite.sh` "
                                "(about 75 min on one thread) or pass --dataset and --extra")
    return cached_dataset(path)


class Log:
    """Prints `[elapsed] message` lines; `elapsed` is the seconds since the experiment began."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def __call__(self, message: str) -> None:
        print(f"[{self.seconds:7.1f}s] {message}", flush=True)


def check_model_options(width: int | None, action_weight: float, prediction: str = ModelConfig.prediction) -> None:
    """The experiments' model options, checked before any data or training: `width` of planner and
    dynamics (None: ModelConfig.sized_for the robot), the planner's u_0 loss weight, what the
    diffusion networks predict. The configs' own checks decide."""
    ModelConfig(prediction=prediction, **({} if width is None else {"width": width}))
    TrainConfig(action_weight=action_weight)


@dataclass(frozen=True)
class ExperimentConfig:
    """The fields every experiment of the evaluation suite shares (each experiment's config adds
    its own and may change a default here by declaring the field again)."""

    out_dir: str = "runs/experiment"  # output directory: data, models, episodes, results (--quick: <out_dir>-quick)
    policy_dir: str = "runs/policies"  # behaviour policies, shared by experiments; datasets go to <out_dir>/data
    policy_steps: int = 30_000  # SAC steps of the behaviour policy
    task_transitions: int = 50_000  # behaviour-policy transitions of the task data
    random_transitions: int = 20_000  # extra data for the dynamics model and the ranker
    train_steps: int = 5000  # training steps of planner and dynamics (and of behaviour cloning, where it runs)
    ranker_steps: int = 3000  # training steps of the reward (and cost) model
    episodes: int = 5  # evaluation episodes per method, task and seed
    max_steps: int = 1000  # steps per evaluation episode at most
    backend: str = "cpu"  # the sampler's backend: cpu, cuda, torch, or auto (the fastest available)
    threads: int = 0  # native CPU backend threads (0: every core)
    candidates: int = SamplerOptions.num_candidates  # N of the exported model file (every sampler plans with it)
    return_target: float = SamplerOptions.return_target  # g: the model files' default, for the untuned methods
    width: int | None = None  # hidden width of planner and dynamics (None: sized for the robot)
    action_weight: float = TrainConfig.action_weight  # the planner's loss weight on u_0
    prediction: str = ModelConfig.prediction  # what planner and dynamics predict: "sample" or "epsilon"
    architecture: str = ModelConfig.architecture  # the network family of planner and dynamics: mlp or unet
    weights: str = WEIGHT_FORMATS[0]  # how the model files store the weight matrices: float32 or bf16
    device: str = "cpu"  # where the models train: cpu, cuda, cuda:<i> (the CLI resolves auto)

    @property
    def data_dir(self) -> Path:
        return Path(self.out_dir) / "data"

    @property
    def sampler_options(self) -> SamplerOptions:
        """The sampler defaults stored in the experiment's model files."""
        return SamplerOptions(num_candidates=self.candidates, return_target=self.return_target)

    def train_bundle(self, bundle_dir: Path, task: OfflineDataset, extra: list[OfflineDataset], seed: int, log,
                     progress: bool = True, train_steps: int | None = None,
                     options: SamplerOptions | None = None, spec=None) -> Path:
        """train_bundle with this experiment's training settings (planner and dynamics train_steps
        unless given, the ranker ranker_steps) and its model files' sampler defaults (or options)."""
        return train_bundle(bundle_dir, task, extra, train_steps or self.train_steps, self.ranker_steps, seed, log,
                            progress, options=options or self.sampler_options, width=self.width,
                            action_weight=self.action_weight, device=self.device, prediction=self.prediction,
                            spec=spec, architecture=self.architecture, weights=self.weights)

    def model_config(self, state_dim: int, action_dim: int) -> ModelConfig:
        """The model an experiment that fits its own normalizers trains: sized for the robot, with
        this config's prediction, family and width."""
        return ModelConfig.sized_for(state_dim, action_dim, prediction=self.prediction, architecture=self.architecture,
                                     **({"width": self.width} if self.width else {}))


# Fields added to ExperimentConfig after experiments had cached cells: the value those cells were
# computed with (experiments.grid reads a cached key without them as holding these).
LEGACY_FIELDS = {"architecture": "mlp", "weights": "float32"}


def train_bundle(bundle_dir: Path, task: OfflineDataset, extra: list[OfflineDataset], train_steps: int,
                 ranker_steps: int, seed: int, log: Log, progress: bool = True,
                 options: SamplerOptions | None = None, width: int | None = None,
                 action_weight: float = TrainConfig.action_weight, device: str = "cpu",
                 prediction: str = ModelConfig.prediction, spec=None,
                 architecture: str = ModelConfig.architecture, weights: str = WEIGHT_FORMATS[0]) -> Path:
    """Planner on `task`; dynamics, reward (and cost, for data with costs) on task + extra; then the
    model file. Training resumes from checkpoints, so a finished bundle is not trained twice.
    width: hidden width of planner and dynamics (None: sized for the robot); action_weight: the
    planner's loss weight on u_0 (TrainConfig.action_weight); device: where the models train;
    prediction: what planner and dynamics predict, "sample" or "epsilon" (ModelConfig.prediction);
    architecture: their family (ModelConfig.architecture); spec: the bundle's BundleSpec
    (normalizers, return scale, model; its model's family wins) when not fitted on task + extra;
    weights: how the model file stores the weight matrices (export_model)."""
    from mpdiffuser.export import export_model
    from mpdiffuser.training.request import TrainRequest

    # One request, as `mpdiffuser train` makes: the ranker trains ranker_steps, the planner and the
    # dynamics model train_steps; side by side on a GPU (a thread and a CUDA stream each), one after
    # another on the CPU, the same weights either way (training.train.train_models).
    sizes = {} if spec is not None else ({"prediction": prediction, "architecture": architecture}
                                         | ({"width": width} if width else {}))
    request = TrainRequest.of(bundle_dir, [task], extra_data=tuple(extra), device=device, spec=spec,
                              steps=train_steps, seed=seed, action_weight=action_weight, **sizes,
                              per_model={name: {"steps": ranker_steps} for name in RANKER_MODELS})
    request.run(progress=progress, say=lambda message: log(f"    {message}"))
    return export_model(bundle_dir, bundle_dir / "model.safetensors", options or SamplerOptions(), weights=weights)


def mean_stderr(values) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else 0.0


def summarize(rows: list[dict], keys: tuple[str, ...], fields: tuple[str, ...], unit: str | None = None) -> list[dict]:
    """Group `rows` by `keys` (first-seen order) and give mean and stderr of each of `fields`.
    With `unit` (say "seed": the training seed, the unit that is replicated), also the number of
    units and `<field>_stderr_<unit>s`, the standard error of the per-unit means: episodes of one
    seed share its models, so their spread alone understates how much a result varies."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for group_key, members in groups.items():
        entry = dict(zip(keys, group_key)) | {"n": len(members)}
        units: dict = {}
        if unit is not None:
            for m in members:
                units.setdefault(m[unit], []).append(m)
            entry[f"{unit}s"] = len(units)
        for f in fields:  # a row without the field (a measure a cell could not take) is left out of its mean
            entry[f"{f}_mean"], entry[f"{f}_stderr"] = mean_stderr(m[f] for m in members if m.get(f) is not None)
            if unit is not None:
                entry[f"{f}_stderr_{unit}s"] = mean_stderr(
                    np.mean(present) for u in units.values() if (present := [m[f] for m in u if m.get(f) is not None])
                )[1]
        out.append(entry)
    return out


def episode_rows(summary, **labels) -> list[dict]:
    """One result row per episode of an evaluation summary: `labels` (task, method, seed...) plus
    the episode's index, return, normalized score (goal-conditioned robots: 100 x success) and
    length, and whether it succeeded where the robot says."""
    return [labels | {"episode": i, "return": e.episode_return, "score": e.normalized_score, "length": e.length}
            | ({} if e.success is None else {"success": e.success}) for i, e in enumerate(summary.episodes)]


def slug(name: str) -> str:
    """A file name for a method or setting: 'planner only (lambda=0)' -> 'planner-only-lambda-0'."""
    return "-".join("".join(c if c.isalnum() or c == "+" else " " for c in name.lower()).split())


def score_error(entry: dict, field: str = "score") -> float:
    """The error of a summary entry's `field`: over the seeds' means when it has 2 or more seeds,
    else over its episodes."""
    return entry[f"{field}_stderr_seeds"] if entry.get("seeds", 1) > 1 else entry[f"{field}_stderr"]


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def write_json(path: Path, report: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    results_json.write(path, report)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cached_rows(path: Path, key: dict, run) -> list[dict]:
    """The result rows of one unit of an experiment (a method on a task and seed): read from `path`
    when it was made with the same `key` (everything the rows depend on), else `run()` and save
    them there. A rerun of an interrupted or extended experiment redoes only what is missing."""
    key = json.loads(json.dumps(key, default=str))
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved["rows"]
    rows = run()
    write_json(path, {"key": key, "rows": rows})
    return rows


# The libraries a result depends on (simulation changes between MuJoCo releases: a score without its
# MuJoCo version cannot be reproduced); machine() records the installed version of each.
RESULT_LIBRARIES = ("torch", "numpy", "gymnasium", "mujoco", "stable-baselines3", "d3rlpy", "h5py", "safetensors")


def machine() -> dict:
    """CPU model, cores, platform and commit (bench.machine_info), the Python version and the
    versions of RESULT_LIBRARIES ("not installed" for an optional one that is not)."""
    from importlib import metadata

    from mpdiffuser.bench import machine_info

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return machine_info() | {"python": platform.python_version(),
                             "libraries": {name: version(name) for name in RESULT_LIBRARIES},
                             "torch": version("torch")}


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grouped_bars(ax, groups: list[str], series: dict[str, tuple[list[float], list[float]]], ylabel: str) -> None:
    """One bar per series within each group, with standard-error bars."""
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, (label, (means, errs)) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, means, width, yerr=errs, capsize=3, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.legend(fontsize=8)
