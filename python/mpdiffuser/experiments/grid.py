"""The experiment skeleton: an experiment is a grid of cells (task, training seed, method); one
driver runs it in this process or as Ray tasks on a cluster and writes the same JSON either way.

An Experiment names its tasks, seeds and methods; `prepare_seed(seed)` trains what every task of a
seed shares, `prepare(task, seed)` what the methods of one (task, seed) share (once: training resumes from checkpoints, so a finished model is not
trained twice); `run(cell)` evaluates one method there and returns its result:
{"episodes": [rows with "score" and "return"], "metrics": {name: number}} (metrics: measures of
the cell that are not episodes, e.g. the plan-vs-robot state error; may be empty). The driver
caches each finished cell under <out>/cells/ with what it depends on (`key(cell)`), so a rerun or
an extended grid redoes only what is new, summarizes with standard errors over seeds, and writes
<out>/<name>.json, <name>.csv and <name>.png (`report` adds an experiment's own outputs).

A cell that raises is reported in the JSON (`failures`, with its error) and not cached; the other
cells finish. On Ray (`ray_address`: "auto", or host:port of a running cluster) the (task, seed)
preparations run as tasks and each cell as a task that waits for its preparation; a task whose
worker dies is retried (RAY_RETRIES), and every cell is cached as soon as it returns.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import traceback
from dataclasses import dataclass
from pathlib import Path

from mpdiffuser.experiments.common import Log, machine, pyplot, score_error, slug, summarize, write_csv, write_json

RAY_RETRIES = 3  # times a Ray task is run again after its worker died
RUN_KEYS = ("seconds", "executor")  # the report's fields that describe the run, not the results: under "run"


@dataclass(frozen=True)
class Cell:
    task: str
    seed: int
    method: str

    @property
    def label(self) -> str:
        return f"{self.task} s{self.seed} {self.method}"


class Experiment:
    """The shape every experiment of the suite has; subclasses set `name` and `config` (a frozen
    dataclass with `out_dir`) and define the methods below."""

    name = "experiment"
    # key fields added after cells were cached, with the value those cells were made with: a cached
    # key without the field is read as having it (so a new option at its old behaviour keeps the cache)
    LEGACY: dict = {}
    GRID_FIELDS: tuple = ()  # config fields that shape the grid, not a cell's result: left out of every key
    score_note = "mean over all evaluation episodes of all training seeds; stderr over the seeds' means"
    score = "score"  # the episode field the summary leads with: "score" (D4RL-normalized) or "return" (any robot)
    CACHED = True  # whether finished cells are read back (False: a measurement of the machine, made anew each run)

    def __init__(self, config) -> None:
        self.config = config

    @property
    def out(self) -> Path:
        return Path(self.config.out_dir)

    def tasks(self) -> list[str]:
        raise NotImplementedError

    def seeds(self) -> list[int]:
        return list(self.config.seeds)

    def methods(self) -> list[str]:
        raise NotImplementedError

    def cells(self) -> list[Cell]:
        """Seed by seed, so that a grid stopped early has every task and method for its first seeds."""
        return [Cell(t, s, m) for s in self.seeds() for t in self.tasks() for m in self.methods()]

    def prepare_seed(self, seed: int, log: Log, progress: bool) -> None:
        """Train what every task of `seed` shares (before its tasks' prepare); nothing by default."""

    def prepare(self, task: str, seed: int, log: Log, progress: bool) -> None:
        """Train what the methods of (task, seed) share; nothing by default."""

    def config_key(self) -> dict:
        """The config's fields a cell's result depends on: all but GRID_FIELDS."""
        return {k: v for k, v in dataclasses.asdict(self.config).items() if k not in self.GRID_FIELDS}

    def key(self, cell: Cell) -> dict:
        """Everything a cell's result depends on (its cache is reused only when this is equal)."""
        return self.config_key() | {"cell": dataclasses.asdict(cell)}

    def run(self, cell: Cell, log: Log, progress: bool) -> dict:
        raise NotImplementedError

    def report(self, report: dict, log: Log) -> None:
        """Add the experiment's own entries to `report` and write its own outputs; nothing by default."""

    def plot(self, report: dict) -> None:
        """The experiment's plot: by default <out>/<name>.png, the summary's bars per task and method."""
        plot_summary(self, report)

    def print_summary(self, report: dict, log: Log) -> None:
        print_summary(report, log, self.score)


def cache_path(experiment: Experiment, cell: Cell) -> Path:
    return experiment.out / "cells" / slug(cell.task) / f"s{cell.seed}" / f"{slug(cell.method)}.json"


def _cached(experiment: Experiment, cell: Cell) -> dict | None:
    path = cache_path(experiment, cell)
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    key = json.loads(json.dumps(experiment.key(cell), default=str))
    from mpdiffuser.experiments.common import LEGACY_FIELDS

    legacy = {k: v for k, v in (LEGACY_FIELDS | experiment.LEGACY).items() if k in key}
    legacy = json.loads(json.dumps(legacy, default=str))
    return saved["result"] if isinstance(saved.get("key"), dict) and legacy | saved["key"] == key else None


def _store(experiment: Experiment, cell: Cell, result: dict) -> None:
    write_json(cache_path(experiment, cell), {"key": experiment.key(cell), "result": result})


def _failure(cell: Cell, stage: str, exc: BaseException) -> dict:
    return dataclasses.asdict(cell) | {"stage": stage, "error": f"{type(exc).__name__}: {exc}",
                                       "traceback": traceback.format_exc(limit=6)}


def _prepare_seed_task(experiment: Experiment, seed: int, progress: bool, log: Log | None = None) -> dict | None:
    """prepare_seed(), with its failure returned instead of raised (None: prepared)."""
    try:
        experiment.prepare_seed(seed, log or Log(), progress)
        return None
    except Exception as exc:  # noqa: BLE001 - reported in the JSON, the other seeds go on
        return _failure(Cell("*", seed, "*"), "prepare", exc)


def _prepare_task(experiment: Experiment, task: str, seed: int, progress: bool, log: Log | None = None,
                  seed_prepared: dict | None = None) -> dict | None:
    """prepare(), with its failure (or its seed's) returned instead of raised (None: prepared)."""
    if seed_prepared is not None:
        return seed_prepared
    try:
        experiment.prepare(task, seed, log or Log(), progress)
        return None
    except Exception as exc:  # noqa: BLE001 - reported in the JSON, the other cells go on
        return _failure(Cell(task, seed, "*"), "prepare", exc)


def _cell_task(experiment: Experiment, cell: Cell, prepared: dict | None, progress: bool,
               log: Log | None = None) -> dict:
    """run(), as {"result": ...} or {"failure": ...}; a failed preparation fails its cells."""
    if prepared is not None:
        return {"failure": dataclasses.asdict(cell) | {k: prepared[k] for k in ("stage", "error", "traceback")}}
    try:
        return {"result": experiment.run(cell, log or Log(), progress)}
    except Exception as exc:  # noqa: BLE001
        return {"failure": _failure(cell, "run", exc)}


def check_ray_address(address: str) -> None:
    """Raise ValueError (one line) when `address` is not "auto" and nothing answers at host:port."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray takes auto or HOST:PORT of a running Ray cluster, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ValueError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
                         "`ray start --head` or pass --ray auto on a node of a running cluster") from None


def connect_ray(address: str):
    """The ray module, connected to the cluster at `address`; ValueError (one line) when ray is not
    installed or nothing answers."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs the optional ray package: pip install 'mpdiffuser[ray]' "
                         "(or bash scripts/install.sh --ray)") from None
    check_ray_address(address)
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError) as exc:
            raise ValueError(f"could not connect to a Ray cluster at {address}: {str(exc).splitlines()[0]}; start "
                             "one with `ray start --head`") from None
    return ray


def _run_local(experiment: Experiment, todo: list[Cell], log: Log, progress: bool, done: dict, failures: list):
    seeds: dict[int, dict | None] = {}
    prepared: dict[tuple, dict | None] = {}
    for cell in todo:
        if cell.seed not in seeds:
            seeds[cell.seed] = _prepare_seed_task(experiment, cell.seed, progress, log)
        group = (cell.task, cell.seed)
        if group not in prepared:
            log(f"{cell.task} seed {cell.seed}: preparing")
            prepared[group] = _prepare_task(experiment, cell.task, cell.seed, progress, log, seeds[cell.seed])
        out = _cell_task(experiment, cell, prepared[group], progress, log)
        _collect(experiment, cell, out, log, done, failures)


def _run_ray(experiment: Experiment, todo: list[Cell], address: str, log: Log, done: dict, failures: list):
    ray = connect_ray(address)
    prepare_seed = ray.remote(max_retries=RAY_RETRIES, num_cpus=1)(_prepare_seed_task)
    prepare = ray.remote(max_retries=RAY_RETRIES, num_cpus=1)(_prepare_task)
    run = ray.remote(max_retries=RAY_RETRIES, num_cpus=1)(_cell_task)
    exp = ray.put(experiment)
    seeds, groups = {}, {}
    for cell in todo:
        if cell.seed not in seeds:
            seeds[cell.seed] = prepare_seed.remote(exp, cell.seed, False)
        if (cell.task, cell.seed) not in groups:
            groups[(cell.task, cell.seed)] = prepare.remote(exp, cell.task, cell.seed, False, None, seeds[cell.seed])
    pending = {run.remote(exp, cell, groups[(cell.task, cell.seed)], False): cell for cell in todo}
    log(f"ray: {len(groups)} preparations and {len(pending)} cells on {address} "
        f"({ray.cluster_resources().get('CPU', 0):.0f} CPUs)")
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        cell = pending.pop(ready[0])
        try:
            out = ray.get(ready[0])
        except Exception as exc:  # noqa: BLE001 - the worker died more than RAY_RETRIES times
            out = {"failure": _failure(cell, "ray", exc)}
        _collect(experiment, cell, out, log, done, failures)


def _collect(experiment: Experiment, cell: Cell, out: dict, log: Log, done: dict, failures: list) -> None:
    if "failure" in out:
        failures.append(out["failure"])
        log(f"  {cell.label}: FAILED ({out['failure']['error']})")
        return
    _store(experiment, cell, out["result"])
    done[cell] = out["result"]
    scores = [r[experiment.score] for r in out["result"]["episodes"]]
    log(f"  {cell.label}: {experiment.score} {sum(scores) / max(len(scores), 1):.1f} over {len(scores)} episodes")


def run_experiment(experiment: Experiment, ray_address: str | None = None, progress: bool = True) -> dict:
    """Run every cell not cached yet (here, or on the Ray cluster at `ray_address`), then summarize
    and write the outputs; returns the report."""
    log = Log()
    ran_on = machine()  # the commit and library versions the run starts with (not those of its end)
    if ray_address is not None:
        connect_ray(ray_address)  # a bad address fails before anything runs
    cells = experiment.cells()
    done, failures = {}, []
    for cell in cells:
        if experiment.CACHED and (result := _cached(experiment, cell)) is not None:
            done[cell] = result
    todo = [c for c in cells if c not in done]
    log(f"{experiment.name}: {len(cells)} cells, {len(cells) - len(todo)} cached, {len(todo)} to run"
        + (f" on Ray ({ray_address})" if ray_address else ""))
    if ray_address is None:
        _run_local(experiment, todo, log, progress, done, failures)
    else:
        _run_ray(experiment, todo, ray_address, log, done, failures)
    episodes, metrics, more = [], [], {}
    for cell in cells:
        if cell in done:
            labels = {"task": cell.task, "method": cell.method, "seed": cell.seed}
            episodes += [labels | row for row in done[cell]["episodes"]]
            if done[cell].get("metrics"):
                metrics.append(labels | done[cell]["metrics"])
            for name, rows in done[cell].items():  # an experiment's own rows (e.g. validation episodes), as given
                if name not in ("episodes", "metrics"):
                    more.setdefault(name, []).extend(rows)
    metric_names = tuple(dict.fromkeys(k for row in metrics for k in row if k not in ("task", "method", "seed")))
    report = {"experiment": experiment.name, "config": dataclasses.asdict(experiment.config),
              "machine": ran_on, "score_note": experiment.score_note,
              "summary": summarize(episodes, ("task", "method"), tuple(dict.fromkeys((experiment.score, "return"))),
                                   unit="seed"),
              "metrics": summarize(metrics, ("task", "method"), metric_names, unit="seed") if metrics else [],
              "failures": sorted(failures, key=lambda f: (f["task"], f["seed"], f["method"])),
              "episodes": episodes, "metrics_seeds": metrics, **more,
              "run": {"seconds": round(log.seconds, 1), "executor": f"ray {ray_address}" if ray_address else "local"}}
    experiment.report(report, log)
    write_outputs(experiment, report)
    experiment.print_summary(report, log)
    if failures:
        log(f"{len(failures)} cell(s) failed: their errors are in {experiment.out / (experiment.name + '.json')}")
    return report


def run_grid(make, ray_address: str | None = None, progress: bool = True) -> dict:
    """run_experiment(make()) where `make` builds the experiment (reading or making its data):
    a Ray address is checked first, so a bad one fails before any data is read."""
    if ray_address is not None:
        connect_ray(ray_address)
    return run_experiment(make(), ray_address, progress)


def results_only(report: dict) -> dict:
    """The report without what describes the run (its time and executor): equal for the same
    results however they were run."""
    return {k: v for k, v in report.items() if k != "run"}


def print_summary(report: dict, log: Log, field: str = "score") -> None:
    log(f"{report['experiment']}: {field} (mean +- standard error over seeds; one seed: over episodes)")
    for entry in report["summary"]:
        print(f"    {entry['task']:28s} {entry['method']:36s} {entry[field + '_mean']:9.1f} +- "
              f"{score_error(entry, field):7.1f} [{entry['seeds']} seeds, {entry['n']} episodes]")


def write_outputs(experiment: Experiment, report: dict) -> None:
    out, name = experiment.out, experiment.name
    write_json(out / f"{name}.json", report)
    if report["episodes"]:
        write_csv(out / f"{name}.csv", report["episodes"])
    experiment.plot(report)


def plot_summary(experiment: Experiment, report: dict) -> None:
    out, name = experiment.out, experiment.name
    summary = report["summary"]
    if not summary:
        return
    plt = pyplot()
    from mpdiffuser.experiments.common import grouped_bars

    tasks = list(dict.fromkeys(e["task"] for e in summary))
    methods = list(dict.fromkeys(e["method"] for e in summary))
    cell = {(e["task"], e["method"]): e for e in summary}
    field = experiment.score
    nan = {f"{field}_mean": float("nan"), f"{field}_stderr": 0.0}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(tasks) + 2), 4))
    grouped_bars(ax, tasks, {m: ([cell.get((t, m), nan)[f"{field}_mean"] for t in tasks],
                                 [score_error(cell.get((t, m), nan), field) for t in tasks]) for m in methods}, field)
    ax.set_title(f"{name}: {field} per task and method (error: s.e. over training seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=120)
    plt.close(fig)
