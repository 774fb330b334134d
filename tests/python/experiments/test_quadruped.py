"""The quadruped experiment's --quick setting, end to end: Ant-v5 data, training, export, and
fixed-rate MPC control with the native backend, with its JSON, CSV and latency plot; and the
control phase alone on a model file the user has (--model-file)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mpdiffuser import cli
from mpdiffuser.experiments.quadruped import QuadrupedConfig, fixed_rate_episode


@pytest.mark.slow
def test_quick_setting_end_to_end(tmp_path, capsys):
    out = tmp_path / "quadruped"
    policies = tmp_path / "policies"
    assert cli.main(["experiment", "quadruped", "--quick", "--out", str(out), "--policy-dir", str(policies)]) == 0
    report = json.loads((out / "quadruped.json").read_text())
    quick = QuadrupedConfig.quick()
    assert report["backend"] == "cpu" and report["config"]["env_id"] == "Ant-v5"
    assert report["config"]["policy_dir"] == str(policies) and (policies / "sac-Ant-v5-3000-s0.zip").exists()
    assert report["config"]["train_steps"] == quick.train_steps and len(report["episodes"]) == quick.episodes
    assert report["steps"] == sum(e["length"] for e in report["episodes"]) and report["steps"] >= quick.episodes
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert 0 <= report["missed_deadlines"] <= report["steps"]
    # The loop keeps its rate: it neither runs faster than asked nor falls far behind on 2 cores.
    assert report["achieved_hz"] <= quick.control_hz * 1.05
    assert report["achieved_hz"] >= quick.control_hz * 0.5
    rows = list(csv.DictReader(open(out / "quadruped.csv")))
    assert len(rows) == quick.episodes and float(rows[0]["return"]) == pytest.approx(report["episodes"][0]["return"], abs=1e-3)
    assert (out / "quadruped_latency.png").stat().st_size > 1000
    assert "missed deadlines" in capsys.readouterr().out


class _FakeTime:
    """A clock that moves only when the loop sleeps or a step spends time: no real time, exact counts."""

    def __init__(self):
        self.now = 100.0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        assert seconds > 0
        self.now += seconds


class _Env:
    """Thirty steps of nothing, each costing `step_s` of the fake clock."""

    def __init__(self, time, step_s):
        self.time, self.step_s = time, step_s

    def reset(self, seed):
        return np.zeros(3), {}

    def step(self, action):
        self.time.now += self.step_s
        return np.zeros(3), 1.0, False, False, {}


class _Policy:
    """Plans taking `plan_s(call)` seconds of the fake clock."""

    def __init__(self, time, plan_s):
        self.time, self.plan_s, self.calls = time, plan_s, 0

    def reset(self, seed):
        self.calls = 0

    def act(self, obs):
        self.calls += 1
        self.time.now += self.plan_s(self.calls)
        return np.zeros(1)


@pytest.mark.parametrize("plan_ms, step_ms, misses", [
    (lambda n: 0.015 if n % 3 == 0 else 0.001, 0.001, 10),  # every third plan overruns a 10 ms slot
    (lambda n: 0.008, 0.001, 0),  # 8 ms of planning + 1 ms of simulation fit a 10 ms slot
    (lambda n: 0.0095, 0.002, 29),  # fits its own slot once, then the simulation pushes every later plan past it
    (lambda n: 0.011, 0.0, 30),  # every plan overruns; the loop resynchronizes instead of piling up
])
def test_fixed_rate_loop_counts_missed_deadlines_exactly(plan_ms, step_ms, misses):
    time = _FakeTime()
    result = fixed_rate_episode(_Policy(time, plan_ms), _Env(time, step_ms), seed=0, hz=100.0, max_steps=30,
                                clock=time.clock, sleep=time.sleep)
    assert result["length"] == 30 and result["return"] == 30.0
    assert result["missed_deadlines"] == misses
    assert len(result["latencies_ms"]) == 30
    if misses == 0:  # the loop kept its slots exactly: 30 steps in 0.3 s of the fake clock
        assert result["achieved_hz"] == pytest.approx(100.0 * 30 / 30, rel=1e-9)


class _SlowPolicy:
    """A policy whose every third plan overruns a 100 Hz deadline (real time)."""

    def __init__(self):
        self.calls = 0

    def reset(self, seed):
        self.calls = 0

    def act(self, obs):
        import time

        self.calls += 1
        if self.calls % 3 == 0:
            time.sleep(0.015)
        return np.zeros(8, np.float32)


def test_fixed_rate_loop_runs_in_real_time():
    # Real time on a possibly busy machine: the overrunning plans are always misses (a sleep of
    # 15 ms cannot fit a 10 ms slot), others may be too; no exact count or rate is demanded.
    from mpdiffuser.envs import make_env

    env = make_env("Ant-v5")
    result = fixed_rate_episode(_SlowPolicy(), env, seed=0, hz=100.0, max_steps=30)
    env.close()
    assert result["length"] == 30
    assert 10 <= result["missed_deadlines"] <= 30
    assert min(result["latencies_ms"][2::3]) >= 15.0
    assert 0 < result["achieved_hz"] <= 101


def test_model_file_runs_the_control_phase_alone(tmp_path, monkeypatch):
    """--model-file: no data and no training (they would fail here), the file's model at the
    asked N and rate, the same report."""
    from mpdiffuser import bench
    from mpdiffuser.config import ModelConfig
    from mpdiffuser.envs import make_env
    from mpdiffuser.experiments import quadruped

    env = make_env("Ant-v5")
    dx, du = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    model = bench.synthetic_model_file(tmp_path / "ant.safetensors", dx, du, env_id="Ant-v5",
                                       model=ModelConfig(horizon=4, num_steps=3, width=32, layers=2, ranker_width=16))

    def no_training(*args):
        raise AssertionError("the data and training steps ran")

    monkeypatch.setattr(quadruped, "_data_and_models", no_training)
    out = tmp_path / "out"
    assert cli.main(["experiment", "quadruped", "--model-file", str(model), "--out", str(out), "--backend", "cpu",
                     "--candidates", "3", "--episodes", "1", "--hz", "200", "--threads", "1"]) == 0
    report = json.loads((out / "quadruped.json").read_text())
    assert report["model_file"] == str(model) and report["backend"] == "cpu"
    assert report["options"]["num_candidates"] == 3 and report["control_hz"] == 200
    assert report["steps"] == report["episodes"][0]["length"] >= 1
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["max"]


def test_missing_model_file_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        QuadrupedConfig(model_file=str(tmp_path / "none.safetensors"))
