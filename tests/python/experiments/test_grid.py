"""The experiment skeleton (experiments.grid): cells cached and reused, failures reported while the
other cells finish, the same JSON in one process and on a local Ray cluster of two workers, a cell
whose worker dies retried, and the scarce-data experiment on it end to end."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mpdiffuser.experiments.grid import Cell, Experiment, results_only, run_experiment


@dataclass(frozen=True)
class ToyConfig:
    out_dir: str
    seeds: tuple[int, ...] = (0, 1)
    crash: str = ""  # a method whose cells raise
    die_once: str = ""  # a marker file: the first cell to find it missing kills its process (a worker's death)


def toy(config: ToyConfig) -> Experiment:
    """A grid without training: a cell's scores are a function of its task, seed and method. The
    class is made inside a function so that Ray's workers receive it by value."""

    class Toy(Experiment):
        name = "toy"

        def tasks(self):
            return ["walk", "run"]

        def methods(self):
            return ["a", "b"]

        def prepare(self, task, seed, log, progress):
            Path(self.config.out_dir, "prepared").mkdir(parents=True, exist_ok=True)
            Path(self.config.out_dir, "prepared", f"{task}-{seed}").touch()

        def run(self, cell, log, progress):
            if cell.method == self.config.crash:
                raise RuntimeError(f"{cell.method} cannot run")
            if self.config.die_once and cell == Cell("run", 1, "b") and not Path(self.config.die_once).exists():
                Path(self.config.die_once).touch()
                os._exit(1)
            base = {"walk": 10.0, "run": 20.0}[cell.task] + 5.0 * cell.seed + (1.0 if cell.method == "b" else 0.0)
            return {"episodes": [{"episode": i, "score": base + i, "return": 100 * (base + i)} for i in range(3)],
                    "metrics": {"error": base / 100.0}}

    return Toy(config)


def test_a_grid_runs_caches_and_summarizes_with_standard_errors_over_seeds(tmp_path):
    report = run_experiment(toy(ToyConfig(str(tmp_path))), progress=False)
    assert report["failures"] == [] and len(report["episodes"]) == 2 * 2 * 2 * 3
    walk_a = next(e for e in report["summary"] if (e["task"], e["method"]) == ("walk", "a"))
    # seeds 0 and 1: episode scores 10, 11, 12 and 15, 16, 17; seed means 11 and 16
    assert walk_a["score_mean"] == pytest.approx(13.5) and walk_a["seeds"] == 2
    assert walk_a["score_stderr_seeds"] == pytest.approx(2.5)  # std(11, 16, ddof=1) / sqrt(2)
    assert {m["task"] for m in report["metrics"]} == {"walk", "run"}
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == ["run-0", "run-1", "walk-0", "walk-1"]
    for name in ("toy.json", "toy.csv", "toy.png"):
        assert (tmp_path / name).stat().st_size > 100
    shutil.rmtree(tmp_path / "prepared")
    again = run_experiment(toy(ToyConfig(str(tmp_path))), progress=False)
    assert not (tmp_path / "prepared").exists()  # every cell read from its cache: nothing prepared or run
    assert results_only(again) == results_only(report)
    assert json.loads((tmp_path / "toy.json").read_text())["summary"] == json.loads(json.dumps(report["summary"]))


def test_a_failing_cell_is_reported_and_the_others_finish(tmp_path):
    report = run_experiment(toy(ToyConfig(str(tmp_path), crash="b")), progress=False)
    assert {(f["task"], f["seed"], f["method"]) for f in report["failures"]} == {
        (t, s, "b") for t in ("walk", "run") for s in (0, 1)}
    assert all(f["error"] == "RuntimeError: b cannot run" and f["stage"] == "run" for f in report["failures"])
    assert {e["method"] for e in report["summary"]} == {"a"}
    fixed = run_experiment(toy(ToyConfig(str(tmp_path))), progress=False)  # a failed cell was not cached
    assert fixed["failures"] == [] and {e["method"] for e in fixed["summary"]} == {"a", "b"}


def test_a_ray_address_that_does_not_answer_is_one_line(tmp_path):
    pytest.importorskip("ray", reason="ray is an optional extra (bash scripts/install.sh --ray)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ValueError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        run_experiment(toy(ToyConfig(str(tmp_path))), ray_address=f"127.0.0.1:{port}", progress=False)
    with pytest.raises(ValueError, match="auto or HOST:PORT"):
        run_experiment(toy(ToyConfig(str(tmp_path))), ray_address="nowhere", progress=False)
    out = subprocess.run([sys.executable, "-m", "mpdiffuser", "experiment", "scarce", "--ray", f"127.0.0.1:{port}"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray cluster of two worker CPUs, started as a user would (`ray start --head`)."""
    pytest.importorskip("ray", reason="ray is an optional extra (bash scripts/install.sh --ray)")
    ray_bin = Path(sys.executable).with_name("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([str(ray_bin), "start", "--head", "--num-cpus", "2", "--port", str(port),
                    "--include-dashboard", "false", "--disable-usage-stats"], check=True, capture_output=True,
                   env=env, timeout=120)
    yield f"127.0.0.1:{port}"
    import ray

    ray.shutdown()
    subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, env=env, timeout=120)


@pytest.mark.slow
def test_the_grid_on_ray_writes_the_json_of_one_process_and_survives_a_dead_worker(tmp_path, ray_cluster):
    local = run_experiment(toy(ToyConfig(str(tmp_path / "local"))), progress=False)
    marker = tmp_path / "died"
    on_ray = run_experiment(toy(ToyConfig(str(tmp_path / "ray"), die_once=str(marker))), ray_address=ray_cluster,
                            progress=False)
    assert marker.exists()  # the worker of (run, 1, b) died once; its task ran again on another
    assert on_ray["failures"] == [] and on_ray["run"]["executor"] == f"ray {ray_cluster}"
    strip = lambda r: {k: v for k, v in results_only(r).items() if k != "config"}  # noqa: E731 - out_dir differs
    assert strip(on_ray) == strip(local)
    crashed = run_experiment(toy(ToyConfig(str(tmp_path / "crash"), crash="a")), ray_address=ray_cluster,
                             progress=False)
    assert len(crashed["failures"]) == 4 and {e["method"] for e in crashed["summary"]} == {"b"}


@pytest.mark.slow
def test_the_scarce_experiment_on_ray_equals_the_one_process_run(tmp_path, ray_cluster):
    """`mpdiffuser experiment scarce --ray ADDRESS` on a tiny grid: the same JSON as without --ray."""
    from mpdiffuser.data.generate import GenerateConfig, generate

    data = tmp_path / "data"
    expert = generate(GenerateConfig("Hopper-v5", "medium", 600, policy_steps=400), data, progress=False)
    extra = generate(GenerateConfig("Hopper-v5", "random", 500), data, progress=False)
    common = ["experiment", "scarce", "--quick", "--dataset", str(expert), "--extra", str(extra),
              "--expert-episodes", "2", "--train-steps", "40", "--episodes", "2", "--consistency-steps", "5",
              "--threads", "1", "--device", "cpu"]
    runs = {}
    for name, more in (("local", []), ("ray", ["--ray", ray_cluster])):
        out = tmp_path / name
        done = subprocess.run([sys.executable, "-m", "mpdiffuser", *common, "--out", str(out), *more],
                              capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=1500)
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads((out / "scarce.json").read_text())
        runs[name] = {k: v for k, v in results_only(report).items() if k != "config"}
        assert (out / "scarce_vs_n.png").stat().st_size > 5000
    assert runs["ray"] == runs["local"]
    assert {e["method"] for e in runs["local"]["summary"]} == {"MPDiffuser", "planner only (lambda=0)",
                                                               "behaviour cloning"}
    assert {m["method"] for m in runs["local"]["metrics"]} == {"MPDiffuser", "planner only (lambda=0)"}


def test_the_scarce_experiment_refuses_what_it_cannot_run(tmp_path):
    from mpdiffuser.data.generate import GenerateConfig, generate
    from mpdiffuser.experiments.scarce import ScarceConfig, ScarceExpert

    expert = generate(GenerateConfig("Hopper-v5", "random", 300), tmp_path, progress=False)
    with pytest.raises(ValueError, match="no --extra file is of Hopper-v5"):
        ScarceExpert(ScarceConfig(datasets=(str(expert),), extra=()))
    with pytest.raises(ValueError, match="fewer than n = 100000"):
        ScarceExpert(ScarceConfig(datasets=(str(expert),), extra=(str(expert),), expert_episodes=(100000,)))
    with pytest.raises(FileNotFoundError, match="make_suite.sh"):
        ScarceExpert(ScarceConfig(datasets=(str(tmp_path / "missing.hdf5"),)))
    with pytest.raises(ValueError, match="decision-diffuser baseline only"):
        ScarceConfig(diffusion_baselines=("diffuser",))
    out = subprocess.run([sys.executable, "-m", "mpdiffuser", "experiment", "scarce", "--dataset",
                          str(tmp_path / "missing.hdf5")], capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    out = subprocess.run([sys.executable, "-m", "mpdiffuser", "experiment", "quadruped", "--ray", "127.0.0.1:1"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "no Ray cluster answers at 127.0.0.1:1" in out.stderr or "--ray needs the optional ray package" in out.stderr


def test_a_key_field_added_later_keeps_the_cells_cached_at_its_old_behaviour(tmp_path):
    """An option added after cells were cached (declared in the experiment's LEGACY with the value
    those cells were made with) reads them back at that value and reruns them at another."""
    run_experiment(toy(ToyConfig(str(tmp_path))), progress=False)  # cached before the field "mode" existed
    newer = toy(ToyConfig(str(tmp_path)))
    newer.key = lambda cell, base=newer.key: base(cell) | {"mode": "old"}
    type(newer).LEGACY = {"mode": "old"}
    shutil.rmtree(tmp_path / "prepared")
    run_experiment(newer, progress=False)
    assert not (tmp_path / "prepared").exists()  # read back: nothing ran
    other = toy(ToyConfig(str(tmp_path)))
    other.key = lambda cell, base=other.key: base(cell) | {"mode": "new"}
    type(other).LEGACY = {"mode": "old"}
    run_experiment(other, progress=False)
    assert (tmp_path / "prepared").exists()  # another value: run again


def test_cells_cached_before_the_family_and_weight_fields_are_read_back_at_their_old_values(tmp_path):
    """ExperimentConfig's architecture and weights came after cells were cached: a key without them
    holds the values those cells were made with (common.LEGACY_FIELDS: mlp, float32), for every
    experiment; bf16 weights or a unet run again."""
    from mpdiffuser.experiments.common import LEGACY_FIELDS

    run_experiment(toy(ToyConfig(str(tmp_path))), progress=False)
    for fields, reruns in ((dict(LEGACY_FIELDS), False), ({"architecture": "mlp", "weights": "bf16"}, True),
                           ({"architecture": "unet", "weights": "float32"}, True)):
        newer = toy(ToyConfig(str(tmp_path)))
        newer.key = lambda cell, base=newer.key, fields=fields: base(cell) | fields
        shutil.rmtree(tmp_path / "prepared", ignore_errors=True)
        run_experiment(newer, progress=False)
        assert (tmp_path / "prepared").exists() == reruns, fields
        if reruns:  # back to the cells made at the old values
            shutil.rmtree(tmp_path / "cells")
            run_experiment(toy(ToyConfig(str(tmp_path))), progress=False)
