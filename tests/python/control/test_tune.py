"""The return target chosen by validation episodes: the choice rule, the Python call, `mpdiffuser
tune`, and the model file it writes (only the default g changes)."""

from __future__ import annotations

import numpy as np
import pytest

from mpdiffuser.config import ModelConfig
from mpdiffuser.control.evaluate import EpisodeResult

TINY = ModelConfig(horizon=4, num_steps=3, width=16, layers=1, ranker_width=16, ranker_layers=1)


def test_choose_return_target_takes_the_highest_mean_return_and_the_first_of_equals():
    from mpdiffuser.control.tune import choose_return_target

    returns = {0.4: [10.0, 30.0], 0.6: [20.0, 20.0], 0.8: [40.0, 0.0], 1.1: [5.0, 5.0]}
    best, tried = choose_return_target([0.4, 0.6, 0.8, 1.1],
                                       lambda g: [EpisodeResult(r, r / 2, 0.0, 10) for r in returns[g]])
    assert best == 0.4  # 0.4, 0.6 and 0.8 all average 20: the first listed wins
    assert [r["return_mean"] for r in tried] == [20.0, 20.0, 20.0, 5.0]
    assert [r["score_mean"] for r in tried] == [10.0, 10.0, 10.0, 2.5]
    returns[0.6] = [25.0, 26.0]
    best, tried = choose_return_target([0.4, 0.6, 0.8, 1.1],
                                       lambda g: [EpisodeResult(r, None, 0.0, 10) for r in returns[g]])
    assert best == 0.6 and tried[1]["return_stderr"] == pytest.approx(0.5) and tried[1]["score_mean"] is None
    with pytest.raises(ValueError, match="at least one target"):
        choose_return_target([], lambda g: [])


def test_tune_command_reports_every_target_and_writes_only_the_new_default(tmp_path, capsys):
    from safetensors.numpy import load_file

    from mpdiffuser import cli
    from mpdiffuser.bench import synthetic_model_file
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.export import read_model_file
    from mpdiffuser.sampling.sampler import Sampler

    model_file = synthetic_model_file(tmp_path / "m.safetensors", model=TINY)
    out = tmp_path / "tuned.safetensors"
    assert cli.main(["tune", "--model-file", str(model_file), "--return-targets", "0.3", "0.9", "--episodes", "2",
                     "--max-steps", "15", "--guidance", "1.5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "g = 0.3" in printed and "g = 0.9" in printed and "<- best" in printed
    sampler = Sampler(model_file, "cpu")
    means = {}
    for g in (0.3, 0.9):  # the command's episodes, rerun: starts 5000, 5001 and the given guidance
        summary = evaluate(MPCPolicy(sampler, sampler.defaults.replace(return_target=g, guidance=1.5)), "Hopper-v5",
                           2, 5000, 15, progress=False)
        means[g] = np.mean([e.episode_return for e in summary.episodes])
    best = max(means, key=means.get)
    _, _, tuned = read_model_file(out)
    assert tuned == sampler.defaults.replace(return_target=best, guidance=1.5)
    before, after = load_file(str(model_file)), load_file(str(out))
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    assert cli.main(["tune", "--model-file", str(model_file), "--return-targets", "0.5", "--episodes", "0"]) == 2


def test_tune_command_picks_the_model_file_and_g_together(tmp_path, capsys):
    """Several --model-file: every (file, g) pair runs the same validation starts; the pair of the
    highest mean return wins and --out copies that file with that g; files of different robots
    need --env."""
    from mpdiffuser import cli
    from mpdiffuser.bench import synthetic_model_file
    from mpdiffuser.control.tune import tune_models
    from mpdiffuser.export import read_model_file
    from mpdiffuser.sampling.sampler import Sampler

    files = [synthetic_model_file(tmp_path / f"m{seed}.safetensors", model=TINY, seed=seed) for seed in (0, 1)]
    out = tmp_path / "tuned.safetensors"
    assert cli.main(["tune", "--model-file", *map(str, files), "--return-targets", "0.3", "0.9", "--episodes", "2",
                     "--max-steps", "15", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("<- best") == 1 and all(printed.count(str(f)) >= 3 for f in files)
    samplers = {str(f): Sampler(f, "cpu") for f in files}
    best, tried = tune_models({f: (s, s.defaults) for f, s in samplers.items()}, "Hopper-v5", [0.3, 0.9], 2,
                              max_steps=15, progress=False)
    assert [(r["model"], r["return_target"]) for r in tried] == [(str(f), g) for f in files for g in (0.3, 0.9)]
    top = max(tried, key=lambda r: r["return_mean"])  # the first of equal returns
    assert best == {"model": top["model"], "return_target": top["return_target"]}
    spec, _, tuned = read_model_file(out)
    assert tuned == samplers[best["model"]].defaults.replace(return_target=best["return_target"])
    assert f"wrote {out}: copy of {best['model']}" in printed
    other = synthetic_model_file(tmp_path / "cheetah.safetensors", state_dim=17, action_dim=6, model=TINY,
                                 env_id="HalfCheetah-v5")
    assert cli.main(["tune", "--model-file", str(files[0]), str(other), "--return-targets", "0.5"]) == 2
    assert "different ones; pass --env" in capsys.readouterr().err


def test_with_a_budget_the_best_return_within_it_wins_or_else_the_lowest_cost():
    from mpdiffuser.control.tune import choose_setting

    episodes = {0.4: [(10.0, 5.0)], 0.8: [(30.0, 50.0)], 1.1: [(20.0, 8.0)]}  # (return, cost)
    run = lambda s: [EpisodeResult(r, None, c, 10) for r, c in episodes[s["return_target"]]]  # noqa: E731
    settings = [{"return_target": g} for g in (0.4, 0.8, 1.1)]
    assert choose_setting(settings, run)[0] == {"return_target": 0.8}  # no budget: the highest return
    best, tried = choose_setting(settings, run, budget=10.0)
    assert best == {"return_target": 1.1} and [r["cost_mean"] for r in tried] == [5.0, 50.0, 8.0]
    assert choose_setting(settings, run, budget=1.0)[0] == {"return_target": 0.4}  # none within: the lowest cost


def test_tune_command_tunes_a_cost_conditioned_model_under_its_budget(tmp_path, capsys):
    from mpdiffuser import cli
    from mpdiffuser.bench import synthetic_model_file

    model_file = synthetic_model_file(tmp_path / "c.safetensors", model=TINY, with_cost=True)
    assert cli.main(["tune", "--model-file", str(model_file), "--return-targets", "0.5", "1", "--episodes", "1",
                     "--max-steps", "10", "--budget", "5", "--velocity-limit", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("(budget 5)") == 2 and "<- best" in printed
    assert cli.main(["tune", "--model-file", str(model_file), "--return-targets", "1", "--velocity-limit", "1"]) == 2
    assert "--velocity-limit applies with --budget only" in capsys.readouterr().err
