"""What a user of a large robot reads: data reports that stay readable at hundreds of dimensions,
data warnings that say what was lost, an evaluation summary that prints as one line, and `eval
--threads`."""

from __future__ import annotations

import numpy as np
import pytest

from mpdiffuser import cli
from mpdiffuser.data.dataset import OfflineDataset
from mpdiffuser.data.inspect import RANGES_PER_LINE, format_report, inspect_dataset
from tests.python.conftest import make_toy_dataset


def test_a_365_dimension_report_wraps_its_ranges_with_their_indices():
    data = make_toy_dataset(state_dim=348, action_dim=17, env_id="HumanoidStandup-v5")
    text = format_report(inspect_dataset(data, "big"))
    assert max(len(line) for line in text.splitlines() if line.startswith("    ")) < 120
    assert "observations ranges (348 dimensions" in text and f" 342-347 " in text
    assert text.count("\n    ") == -(-348 // RANGES_PER_LINE) + -(-17 // RANGES_PER_LINE)
    small = format_report(inspect_dataset(make_toy_dataset(state_dim=4, action_dim=2), "small"))
    assert "  observations ranges: [" in small  # a few dimensions stay on one line


def test_constant_dimensions_are_reported_with_their_own_values():
    data = make_toy_dataset(state_dim=30, env_id="Hopper-v5")
    for e in data.episodes:
        e.observations[:, 3:15] = np.arange(12) * 0.5  # twelve constant dimensions, each its own value
    warning = next(w for w in data.problems() if "never change" in w)
    assert warning.startswith("12 observation dimension(s) never change (3 = 0, 4 = 0.5, 5 = 1,")
    assert "12 = 4.5 and 2 more)" in warning


def test_flat_data_without_next_observations_and_robot_say_what_was_lost():
    rows = 40
    rng = np.random.default_rng(0)
    flat = {"observations": rng.normal(size=(rows, 5)), "actions": rng.uniform(-1, 1, (rows, 2)),
            "rewards": rng.normal(size=rows), "terminals": np.zeros(rows), "timeouts": np.zeros(rows)}
    flat["timeouts"][[9, 19, 39]] = 1
    data = OfflineDataset.from_flat(flat, {}, source="plain.npz")
    problems = "\n".join(data.problems())
    assert "no next_observations: the last transition of each of the 3 episode(s) was dropped" in problems
    assert "the data name no robot" in problems
    assert data.num_transitions == rows - 3
    flat["next_observations"] = flat["observations"] + 1
    full = OfflineDataset.from_flat(flat, {"env_id": "Hopper-v5"}, source="full.npz")
    assert not any("next_observations" in p or "no robot" in p for p in full.problems())
    assert "dropped_last_steps" not in data.stored_metadata  # a saved copy holds next_observations


def test_an_evaluation_summary_prints_as_one_line():
    from mpdiffuser.control.evaluate import EpisodeResult, EvalSummary

    episodes = [EpisodeResult(episode_return=100.0 + i, normalized_score=None, cost=0.0, length=300) for i in range(10)]
    summary = EvalSummary("HumanoidStandup-v5", episodes, latencies_ms=list(np.linspace(10, 20, 3000)))
    text = repr(summary)
    assert "\n" not in text and len(text) < 200
    assert "10 episodes, return 104.5 +- 1.0" in text and "p50 15.00 ms" in text and "over 3000" in text


def test_eval_takes_threads_and_refuses_a_negative_count(capsys):
    assert cli.main(["eval", "--model-file", "x.safetensors", "--backend", "cpu", "--threads", "-1"]) == 2
    out = capsys.readouterr()
    assert "--threads must be >= 0" in out.err + out.out
