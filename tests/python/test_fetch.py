"""Goal-conditioned robots: Dict observations flattened in a documented order, the success rate as
the score, the Fetch robots' extra (gymnasium-robotics on MuJoCo 3.2.7, an environment of its own)
and its scripted pick-and-place expert. The Fetch tests run where the extra is installed
(.venv-fetch); without it, a Fetch robot is refused with what to do."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from mpdiffuser.control.evaluate import evaluate
from mpdiffuser.envs import make_env


class ToyReach(gym.Env):
    """A point in the plane that moves by its action toward a goal: a Dict observation
    (observation, achieved_goal, desired_goal) and info["is_success"], as goal-conditioned robots have."""

    def __init__(self):
        box = lambda n: gym.spaces.Box(-10.0, 10.0, (n,), np.float64)  # noqa: E731
        self.observation_space = gym.spaces.Dict({"observation": box(4), "achieved_goal": box(2),
                                                  "desired_goal": box(2)})
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _obs(self):
        return {"observation": np.concatenate([self.pos, self.pos * 2]), "achieved_goal": self.pos.copy(),
                "desired_goal": self.goal.copy()}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-1, 1, 2)
        self.goal = self.np_random.uniform(-1, 1, 2)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.pos = self.pos + 0.5 * np.asarray(action, np.float64)
        self.t += 1
        success = float(np.linalg.norm(self.pos - self.goal) < 0.2)
        return self._obs(), success - 1.0, False, self.t >= 10, {"is_success": success}


gym.register("ToyReach-v0", entry_point=ToyReach, max_episode_steps=10)


def test_a_dict_observation_is_flattened_in_sorted_key_order():
    env = make_env("ToyReach-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (8,) and env.observation_space.shape == (8,)
    raw = env.unwrapped._obs()
    np.testing.assert_array_equal(obs, np.concatenate([raw["achieved_goal"], raw["desired_goal"],
                                                       raw["observation"]]))


def test_a_goal_conditioned_robots_desired_goal_is_fixed_across_the_plan_window(tmp_path):
    """The desired goal's flattened dimensions (envs.goal_dims) become the bundle's fixed state
    dimensions, the model file's, and every plan keeps them at the observed goal."""
    from mpdiffuser.config import ModelConfig, SamplerOptions
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.data.dataset import Episode, OfflineDataset
    from mpdiffuser.envs import goal_dims
    from mpdiffuser.models.bundle import BundleSpec
    from mpdiffuser.sampling.sampler import Sampler
    from mpdiffuser.training.bundles import fit

    assert goal_dims("ToyReach-v0") == (2, 3)  # achieved_goal 0-1, desired_goal 2-3, observation 4-7
    env, rng, episodes = make_env("ToyReach-v0"), np.random.default_rng(0), []
    for i in range(6):
        obs, _ = env.reset(seed=i)
        states, actions, rewards = [obs], [], []
        for _ in range(10):
            action = rng.uniform(-1, 1, 2).astype(np.float32)
            obs, reward, *_ = env.step(action)
            states.append(obs), actions.append(action), rewards.append(reward)
        episodes.append(Episode(np.asarray(states), np.asarray(actions), np.asarray(rewards), False))
    data = OfflineDataset(episodes, {"env_id": "ToyReach-v0", "name": "toy-reach"})
    assert BundleSpec.fit(data, [data]).fixed_state_dims == (2, 3)
    bundle = fit(data, tmp_path / "b", steps=2, model={"horizon": 4, "num_steps": 3, "width": 16, "layers": 2},
                 progress=False)
    path = bundle.export()
    for backend in ("cpu", "torch"):
        sampler = Sampler(path, backend)
        assert sampler.spec.fixed_state_dims == (2, 3)
        state = env.reset(seed=9)[0].astype(np.float32)
        plan = sampler.plan(state, 1, SamplerOptions(num_candidates=3))
        goal = sampler.spec.states.normalize(state)[[2, 3]]
        np.testing.assert_array_equal(plan.windows[:, :, [2, 3]], np.broadcast_to(goal, (3, 4, 2)))
    summary = evaluate(MPCPolicy(Sampler(path, "cpu")), "ToyReach-v0", episodes=1, progress=False)
    assert len(summary.episodes) == 1


def test_a_goal_conditioned_robot_scores_its_success_rate():
    class Toward:  # straight at the goal: always succeeds within 10 steps
        def reset(self, seed):
            pass

        def act(self, obs):
            return np.clip(2 * (obs[2:4] - obs[0:2]), -1, 1).astype(np.float32)

    class Still(Toward):
        def act(self, obs):
            return np.zeros(2, np.float32)

    good = evaluate(Toward(), "ToyReach-v0", 4, seed=0, progress=False).to_dict()
    assert good["success_rate"] == 1.0 and good["score_mean"] == 100.0
    assert [e["success"] for e in good["episodes"]] == [1.0] * 4
    still = evaluate(Still(), "ToyReach-v0", 4, seed=0, progress=False).to_dict()
    assert still["score_mean"] == 100.0 * still["success_rate"] < 100.0
    class StillHopper(Toward):
        def act(self, obs):
            return np.zeros(3, np.float32)

    hopper = evaluate(StillHopper(), "Hopper-v5", 1, seed=0, max_steps=5, progress=False).to_dict()
    assert "success_rate" not in hopper and hopper["episodes"][0]["success"] is None


FETCH = importlib.util.find_spec("gymnasium_robotics") is not None
needs_fetch = pytest.mark.skipif(not FETCH, reason="the fetch extra (bash scripts/install.sh --fetch) is not "
                                                   "installed in this environment")


@pytest.mark.skipif(FETCH, reason="the fetch extra is installed here: the refusal is for environments without it")
def test_a_fetch_robot_without_the_extra_says_how_to_install_it(tmp_path):
    from mpdiffuser.data.dataset import Episode, OfflineDataset

    with pytest.raises(ValueError, match=r"FetchPickAndPlace-v4 needs the fetch extra: `bash scripts/install.sh "
                                         r"--fetch`"):
        make_env("FetchPickAndPlace-v4")
    rng = np.random.default_rng(0)
    episodes = [Episode(rng.normal(size=(51, 31)), rng.uniform(-1, 1, (50, 4)), -np.ones(50), False)
                for _ in range(6)]
    path = OfflineDataset(episodes, {"env_id": "FetchPickAndPlace-v4", "name": "fetch"}).save_hdf5(
        tmp_path / "fetch.hdf5")
    out = subprocess.run([sys.executable, "-m", "mpdiffuser", "experiment", "scarce", "--dataset", str(path),
                          "--extra", str(path), "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "bash scripts/install.sh --fetch" in out.stderr


@needs_fetch
def test_fetch_plans_keep_its_desired_goal():
    from mpdiffuser.envs import goal_dims

    assert goal_dims("FetchPickAndPlace-v4") == (3, 4, 5)  # achieved_goal 0-2, desired_goal 3-5


@needs_fetch
def test_the_scripted_expert_picks_and_places():
    from mpdiffuser.control.scripted import scripted_policy

    env = make_env("FetchPickAndPlace-v4")
    expert = scripted_policy("FetchPickAndPlace-v4", env)

    class Policy:
        def reset(self, seed):
            pass

        def act(self, obs):
            return expert(obs)

    summary = evaluate(Policy(), env, 20, seed=0, progress=False)
    assert summary.success_rate >= 0.95, summary.success_rate
    assert env.observation_space.shape == (31,)


@needs_fetch
def test_fetch_replays_from_the_simulator_state():
    """Plan consistency restores Fetch from MuJoCo's integration state and its goal: the same actions
    then reach the same observations (to 1e-3 m: MuJoCo's derived quantities after mj_forward are
    fresher than after a step), and another goal would show at once."""
    from mpdiffuser.control.consistency import _restore, _snapshot

    env, sim = make_env("FetchPickAndPlace-v4"), make_env("FetchPickAndPlace-v4")
    env.reset(seed=3)
    sim.reset(seed=99)
    for _ in range(5):
        env.step(env.action_space.sample())
    state = _snapshot(env)
    actions = [env.action_space.sample() for _ in range(8)]
    a = np.array([env.step(x)[0] for x in actions])
    _restore(sim, state)
    b = np.array([sim.step(x)[0] for x in actions])
    assert np.abs(a - b).max() < 1e-3
    np.testing.assert_array_equal(a[:, 3:6], b[:, 3:6])  # the desired goal (flattened: after achieved_goal)


def test_eval_prints_a_goal_conditioned_robots_success_rate(tmp_path, capsys):
    from mpdiffuser import bench, cli
    from mpdiffuser.config import ModelConfig

    model = bench.synthetic_model_file(tmp_path / "reach.safetensors", 8, 2, env_id="ToyReach-v0",
                                       model=ModelConfig(horizon=4, num_steps=3, width=16, layers=1, ranker_width=8))
    assert cli.main(["eval", "--model-file", str(model), "--env", "ToyReach-v0", "--episodes", "2", "--backend",
                     "cpu", "--json", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    assert "ToyReach-v0: success rate " in out and "%" in out
    import json

    report = json.loads((tmp_path / "eval.json").read_text())
    assert 0.0 <= report["success_rate"] <= 1.0 and report["score_mean"] == 100 * report["success_rate"]


def test_the_fetch_extras_pins_are_the_install_hints(repo_root):
    """pyproject.toml's fetch extra and envs.ROBOTICS_PINS (the versions the install hint names and
    the MuJoCo check reads) are one set of pins."""
    import tomllib

    from mpdiffuser.envs import ROBOTICS_PINS

    extra = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["fetch"]
    assert dict(pin.split("==") for pin in extra) == ROBOTICS_PINS
