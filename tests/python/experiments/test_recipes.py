"""The recipe sweep on the experiment skeleton: recipes parsed as `train` settings, one bundle per
(dataset, recipe, seed) trained through the training request, every option set beside its
planner-only twin, behaviour cloning once per dataset, an added recipe runs only its own cells."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mpdiffuser.experiments.recipes import RecipesConfig, RecipeSweep, option_sets, parse_recipe, run_recipes


def test_recipes_parse_as_train_settings():
    assert parse_recipe("default") == ("default", {})
    assert parse_recipe("authors:steps=300,prediction=sample,unet_mults=1/2") == (
        "authors", {"steps": 300, "prediction": "sample", "unet_mults": (1, 2)})
    assert parse_recipe("default:steps=30,dynamics.steps=20,reward.lr=0.001") == (
        "default", {"steps": 30, "per_model": {"dynamics": {"steps": 20}, "reward": {"lr": 1e-3}}})
    with pytest.raises(ValueError, match="is not \\[MODEL.\\]SETTING=VALUE"):
        parse_recipe("default:ranker.steps=3")
    with pytest.raises(ValueError, match="is not \\[MODEL.\\]SETTING=VALUE"):
        parse_recipe("default:dynamics.horizon=3")
    with pytest.raises(ValueError, match="'mine' is no recipe; the recipes are default, authors"):
        parse_recipe("mine")
    with pytest.raises(ValueError, match="'seed=3' is not \\[MODEL.\\]SETTING=VALUE with a training or model setting"):
        parse_recipe("default:seed=3")
    with pytest.raises(ValueError, match="steps needs a value of type int"):
        parse_recipe("default:steps=many")
    with pytest.raises(ValueError, match="option_grid must be one of"):
        RecipesConfig(option_grid="none")
    assert [o["dynamics_weight"] for o in option_sets("default-only")] == [1.0, 0.0]
    assert len(option_sets("default")) == 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from mpdiffuser.data.generate import GenerateConfig, generate

    root = tmp_path_factory.mktemp("data")
    task = generate(GenerateConfig("Hopper-v5", "random", 600, seed=1), root / "task", progress=False)
    extra = generate(GenerateConfig("Hopper-v5", "random", 400, seed=2), root / "extra", progress=False)
    return str(task), str(extra)


def test_a_tiny_sweep_end_to_end_and_an_added_recipe_runs_only_its_cells(tmp_path, data):
    task, extra = data
    tiny = dict(out_dir=str(tmp_path / "sweep"), datasets=(task,), extra=(extra,), option_grid="default-only",
                seeds=(0,), train_steps=6, ranker_steps=4, bc_steps=4, episodes=1, max_steps=20, threads=1,
                device="cpu", width=32)
    first = run_recipes(RecipesConfig(recipes=("default:horizon=4,validate_every=3",), **tiny), progress=False)
    assert not first["failures"]
    stem = task.rsplit("/", 1)[1].removesuffix(".hdf5")
    table = {(r["task"], r["options"]): r for r in first["table"]}
    row = table[f"{stem}/default:horizon=4,validate_every=3",
                "num_candidates=1 temperature=0.001 guidance=2 return_target=1.1"]
    assert {"score_mean", "planner_only_mean", "train_minutes", "val_loss", "latency_p50_ms"} <= set(row)
    assert (f"{stem}/baselines", "behaviour cloning") in table
    bundle = tmp_path / "sweep" / "models" / stem
    planner = json.loads((next(bundle.iterdir()) / "s0" / "bundle.json").read_text())["model"]
    assert planner["horizon"] == 4
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep" / "cells").rglob("*.json")}
    second = run_recipes(RecipesConfig(recipes=("default:horizon=4,validate_every=3", "default:horizon=8,reward.steps=2"), **tiny),
                         progress=False)
    rerun = {p for p in (tmp_path / "sweep" / "cells").rglob("*.json") if stamps.get(p) != p.stat().st_mtime_ns}
    assert len(rerun) == 2 and all("horizon-8" in str(p) for p in rerun), rerun  # the new recipe's two cells
    assert len(second["table"]) == 3
    import torch

    eight = next(p for p in bundle.iterdir() if "horizon-8" in p.name) / "s0"
    assert torch.load(eight / "reward.pt", weights_only=False)["info"]["steps"] == 2  # reward.steps=2
    assert torch.load(eight / "planner.pt", weights_only=False)["info"]["steps"] == 6  # train_steps


def test_bad_sweeps_are_one_line(tmp_path, data):
    task, extra = data
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "rows.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="rows.jsonl of benchmarks/recipe_sweep.py"):
        RecipeSweep(RecipesConfig(out_dir=str(tmp_path / "old"), datasets=(task,), extra=(extra,)))
    for flags, says in ((["--recipes", "default:depth=3"], "'depth=3' is not [MODEL.]SETTING=VALUE"),
                        (["--option-grid", "nope"], "invalid choice: 'nope'")):
        out = subprocess.run([sys.executable, "-m", "mpdiffuser", "experiment", "recipes", "--dataset", task,
                              "--extra", extra, "--out", str(tmp_path / "x"), *flags], capture_output=True, text=True)
        assert out.returncode == 2 and says in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) <= 2  # argparse: usage + error
