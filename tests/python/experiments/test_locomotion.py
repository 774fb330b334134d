"""The locomotion experiment end to end on tiny settings (seconds; --quick takes minutes)."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest

from mpdiffuser.config import SamplerOptions
from mpdiffuser.data.generate import GenerateConfig, generate
from tests.python.experiments.tiny import TINY


def test_locomotion_tiny_end_to_end_with_a_user_dataset(tmp_path):
    """Two tasks (one generated, one the user's own file), three methods, the sweeps; the sweep's
    lambda = 0 and lambda = 1 runs must reproduce the planner-only and MPDiffuser runs exactly
    (same models, same seeds), which checks that every method saw the same start states."""
    from mpdiffuser.experiments.locomotion import METHODS, LocomotionConfig, run_locomotion

    user_file = generate(GenerateConfig("Hopper-v5", "medium", 600, policy_steps=400), tmp_path / "mine", progress=False)
    config = LocomotionConfig.quick(envs=("Hopper-v5",), kinds=("medium",), out_dir=str(tmp_path / "out"),
                                    policy_dir=str(tmp_path / "policies"), bc_steps=60, **TINY)
    report = run_locomotion(config, progress=False)
    assert [e["task"] for e in report["summary"]] == ["hopper-medium"] * 3
    user = run_locomotion(LocomotionConfig.quick(datasets=(str(user_file),), out_dir=str(tmp_path / "out2"),
                                                 policy_dir=str(tmp_path / "policies"), bc_steps=60, candidates=2,
                                                 return_target=0.9, **TINY), progress=False)
    assert {e["task"] for e in user["summary"]} == {"hopper-medium-s0"}
    from mpdiffuser.sampling.sampler import Sampler  # the model files carry the experiment's N

    mine = Sampler(tmp_path / "out2" / "models" / "hopper-medium-s0" / "s0" / "model.safetensors").defaults
    assert mine.num_candidates == 2 and mine.return_target == 0.9  # and the experiment's g
    default = Sampler(tmp_path / "out" / "models" / "hopper-medium" / "s0" / "model.safetensors").defaults
    assert default.num_candidates == 1 and default.return_target == SamplerOptions.return_target
    with pytest.raises(ValueError, match="num_candidates"):
        LocomotionConfig(candidates=0)
    with pytest.raises(ValueError, match="return_target"):
        LocomotionConfig(return_target=float("nan"))
    rows = report["episodes"]
    assert len(rows) == len(METHODS) * config.episodes
    by = lambda method: [r["return"] for r in rows if r["method"] == method]  # noqa: E731
    sweep = lambda setting: [r["return"] for r in report["sweep_episodes"] if r["setting"] == setting]  # noqa: E731
    assert sweep("0") == by("planner only (lambda=0)") and sweep("1") == by("MPDiffuser")
    assert sweep("every step") == by("MPDiffuser")
    assert {e["setting"] for e in report["sweeps"]} == {"0", "0.5", "1", "every step", "every 4 steps", "last 5 steps"}
    out = tmp_path / "out"
    assert len(list(csv.DictReader(open(out / "locomotion.csv")))) == len(rows)
    assert json.loads((out / "locomotion.json").read_text())["summary"] == json.loads(json.dumps(report["summary"]))
    for png in ("locomotion_scores.png", "locomotion_sweeps.png"):
        assert (out / png).stat().st_size > 5000


def test_locomotion_rerun_reads_finished_methods_and_redoes_only_what_changed(tmp_path, monkeypatch):
    """A rerun of the same experiment reads every method's and sweep's episodes from disk (no
    training, no episode); changing one method's setting (here BC's steps) redoes that method only."""
    import importlib

    from mpdiffuser.experiments.locomotion import LocomotionConfig, run_locomotion

    config = LocomotionConfig.quick(kinds=("medium",), out_dir=str(tmp_path / "out"),
                                    policy_dir=str(tmp_path / "policies"), bc_steps=40, lambdas=(0.0, 1.0),
                                    schedules=((2, 0),), **TINY)
    first = run_locomotion(config, progress=False)
    bc_module = importlib.import_module("mpdiffuser.control.bc")
    evaluate_module = importlib.import_module("mpdiffuser.control.evaluate")  # the module, not the function
    real_evaluate, evaluated = evaluate_module.evaluate, []

    def counting_evaluate(policy, *args, **kwargs):
        evaluated.append(kwargs.get("desc"))
        return real_evaluate(policy, *args, **kwargs)

    def no_training(*args, **kwargs):
        raise AssertionError("behaviour cloning trained again")

    monkeypatch.setattr(evaluate_module, "evaluate", counting_evaluate)
    monkeypatch.setattr(bc_module.BCPolicy, "train", no_training)
    again = run_locomotion(config, progress=False)
    assert evaluated == []
    assert again["episodes"] == first["episodes"] and again["sweep_episodes"] == first["sweep_episodes"]
    monkeypatch.undo()
    monkeypatch.setattr(evaluate_module, "evaluate", counting_evaluate)
    changed = run_locomotion(dataclasses.replace(config, bc_steps=30), progress=False)
    assert evaluated == ["hopper-medium behaviour cloning"]
    keep = lambda report: [r for r in report["episodes"] if r["method"] != "behaviour cloning"]  # noqa: E731
    assert keep(changed) == keep(first)
    with pytest.raises(ValueError, match="baseline_seeds \\[3\\] must be among the seeds \\[0\\]"):
        dataclasses.replace(config, baseline_seeds=(3,))


def test_locomotion_picks_the_return_target_by_validation_on_unseen_starts(tmp_path):
    """With return_targets, each tuned method runs validation episodes per target on start states
    no test episode uses, takes the target of the highest validation return, and its test episodes
    are exactly a plain run of the same models with that target on the test starts."""
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.experiments.locomotion import TUNED_METHODS, LocomotionConfig, run_locomotion
    from mpdiffuser.sampling.sampler import Sampler

    config = LocomotionConfig.quick(kinds=("medium",), out_dir=str(tmp_path / "out"),
                                    policy_dir=str(tmp_path / "policies"), bc_steps=40, lambdas=(1.0,),
                                    schedules=((1, 0),), return_targets=(0.2, 1.0), validation_episodes=2, **TINY)
    assert config.methods[3:5] == TUNED_METHODS
    report = run_locomotion(config, progress=False)
    sampler = Sampler(tmp_path / "out" / "models" / "hopper-medium" / "s0" / "model.safetensors", env_id="Hopper-v5")
    test_start = 10_000  # seed 0's test starts: 10000, 10001
    for method, lam in zip(TUNED_METHODS, (1.0, 0.0)):
        tried = [r for r in report["validation"] if r["method"] == method]
        assert [r["return_target"] for r in tried] == [0.2, 1.0]
        assert all(r["start_seed"] == test_start + 5000 and r["episodes"] == 2 for r in tried)
        best = max(tried, key=lambda r: r["return_mean"])["return_target"]
        options = sampler.defaults.replace(dynamics_weight=lam, return_target=best)
        plain = evaluate(MPCPolicy(sampler, options), "Hopper-v5", config.episodes, test_start, config.max_steps,
                         progress=False)
        assert [r["return"] for r in report["episodes"] if r["method"] == method] == \
            [e.episode_return for e in plain.episodes]
    assert len(list(csv.DictReader(open(tmp_path / "out" / "locomotion_validation.csv")))) == 4
    with pytest.raises(ValueError, match="return_targets must be finite"):
        dataclasses.replace(config, return_targets=(float("nan"),))
    with pytest.raises(ValueError, match="validation_episodes >= 1"):
        dataclasses.replace(config, validation_episodes=0)


def test_locomotion_picks_the_training_length_and_g_together_from_snapshots_of_one_run(tmp_path):
    """With train_lengths, each seed's planner and dynamics are trained to each length, every
    length continuing the next shorter one's checkpoint (the main bundle's for longer lengths);
    the two methods pick (length, g) by the highest validation return, reuse the g-only methods'
    validation episodes for the main bundle, and test exactly that sampler and g."""
    import torch

    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.experiments.locomotion import LENGTH_METHODS, TUNED_METHODS, LocomotionConfig, run_locomotion
    from mpdiffuser.sampling.sampler import Sampler
    from mpdiffuser.training.train import checkpoint_path

    config = LocomotionConfig.quick(kinds=("medium",), out_dir=str(tmp_path / "out"),
                                    policy_dir=str(tmp_path / "policies"), bc_steps=40, lambdas=(1.0,),
                                    schedules=((1, 0),), return_targets=(0.2, 1.0), validation_episodes=2,
                                    **TINY | {"train_steps": 60}, train_lengths=(90, 30, 60))
    assert config.methods[3:7] == TUNED_METHODS + LENGTH_METHODS
    report = run_locomotion(config, progress=False)
    models = tmp_path / "out" / "models" / "hopper-medium"
    history = lambda d, name: torch.load(checkpoint_path(d, name), weights_only=True)["history"].tolist()  # noqa: E731
    for name in ("planner", "dynamics"):
        main, longer, shorter = history(models / "s0", name), history(models / "s0-steps90", name), \
            history(models / "s0-steps30", name)
        assert (len(shorter), len(main), len(longer)) == (30, 60, 90)
        assert longer[:60] == main  # 90 continued the main bundle's 60 steps
    assert history(models / "s0-steps90", "reward") == history(models / "s0", "reward")  # the ranker as always
    for method, tuned, lam in zip(LENGTH_METHODS, TUNED_METHODS, (1.0, 0.0)):
        tried = [r for r in report["validation"] if r["method"] == method]
        assert [(r["train_steps"], r["return_target"]) for r in tried] == [(n, g) for n in (30, 60, 90)
                                                                           for g in (0.2, 1.0)]
        assert [r["return_mean"] for r in tried if r["train_steps"] == 60] == \
            [r["return_mean"] for r in report["validation"] if r["method"] == tuned]
        best = max(tried, key=lambda r: r["return_mean"])
        path = models / ("s0" if best["train_steps"] == 60 else f"s0-steps{best['train_steps']}") / "model.safetensors"
        sampler = Sampler(path, env_id="Hopper-v5")
        plain = evaluate(MPCPolicy(sampler, sampler.defaults.replace(dynamics_weight=lam,
                                                                     return_target=best["return_target"])),
                         "Hopper-v5", config.episodes, 10_000, config.max_steps, progress=False)
        assert [r["return"] for r in report["episodes"] if r["method"] == method] == \
            [e.episode_return for e in plain.episodes]
    with pytest.raises(ValueError, match="give return_targets too"):
        dataclasses.replace(config, return_targets=())
    with pytest.raises(ValueError, match="distinct step counts >= 1"):
        dataclasses.replace(config, train_lengths=(30, 30))
    with pytest.raises(ValueError, match="distinct step counts >= 1"):
        dataclasses.replace(config, train_lengths=(0,))


def test_locomotion_runs_diffuser_and_decision_diffuser_with_validation_and_consistency(tmp_path):
    """The prior diffusion planners on the same task, seeds and starts: trained, their setting
    chosen by validation (Diffuser's scale, DD's g), their test episodes equal to a plain run of
    the chosen setting, and every diffusion method's plan-vs-robot state error reported."""
    from mpdiffuser.control.diffusion_baselines import DecisionDiffuserSampler, DiffuserSampler
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.experiments.locomotion import DIFFUSION_METHODS, LocomotionConfig, run_locomotion

    config = LocomotionConfig.quick(kinds=("medium",), out_dir=str(tmp_path / "out"),
                                    policy_dir=str(tmp_path / "policies"), bc_steps=40, lambdas=(1.0,),
                                    schedules=((1, 0),), diffusion_baselines=("diffuser", "decision-diffuser"),
                                    value_scales=(0.0, 1.0), return_targets=(0.3, 1.0), validation_episodes=1,
                                    consistency_steps=5, **TINY)
    assert set(DIFFUSION_METHODS.values()) <= set(config.methods)
    report = run_locomotion(config, progress=False)
    bundle = tmp_path / "out" / "models" / "hopper-medium" / "s0"
    for method in DIFFUSION_METHODS.values():
        tried = [r for r in report["validation"] if r["method"] == method]
        assert len(tried) == 2
        best = max(tried, key=lambda r: r["return_mean"])  # the first of equal returns
        if "value_scale" in best:
            policy = MPCPolicy(DiffuserSampler(bundle, value_scale=best["value_scale"]))
        else:
            sampler = DecisionDiffuserSampler(bundle)
            policy = MPCPolicy(sampler, sampler.defaults.replace(return_target=best["return_target"]))
        plain = evaluate(policy, "Hopper-v5", config.episodes, 10_000, config.max_steps, progress=False)
        assert [r["return"] for r in report["episodes"] if r["method"] == method] == \
            [e.episode_return for e in plain.episodes]
    measured = {e["method"]: e for e in report["consistency"]}
    assert set(measured) == {m for m in config.methods if m != "behaviour cloning"}
    assert all(e["state_error_window_mean"] > 0 for e in measured.values())
    with pytest.raises(ValueError, match="unknown diffusion baseline 'dd'"):
        dataclasses.replace(config, diffusion_baselines=("dd",))
    with pytest.raises(ValueError, match="value_scales must be finite numbers >= 0"):
        dataclasses.replace(config, value_scales=(-1.0,))
