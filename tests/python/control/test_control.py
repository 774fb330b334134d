"""The MPC policy and the evaluator; the end-to-end test on a real MuJoCo Hopper."""

from __future__ import annotations

import numpy as np
import pytest

from mpdiffuser.config import ModelConfig, SamplerOptions, TrainConfig
from mpdiffuser.control.evaluate import evaluate
from mpdiffuser.control.mpc import MPCPolicy
from mpdiffuser.data.generate import GenerateConfig, generate
from mpdiffuser.data.dataset import load_dataset
from mpdiffuser.envs import SCORE_REFERENCES, make_env
from mpdiffuser.models.bundle import BundleSpec, ModelBundle
from mpdiffuser.sampling.reference import ReferenceSampler
from mpdiffuser.training.train import train_model


class RecordingSampler:
    """A stand-in sampler that records what the policy asks for."""

    def __init__(self, sampler):
        self.inner, self.spec, self.calls = sampler, sampler.spec, []

    def plan(self, state, seed, options):
        self.calls.append((seed, options))
        return self.inner.plan(state, seed, options)


@pytest.fixture(scope="module")
def sampler(toy_bundle):
    return ReferenceSampler(ModelBundle.load(toy_bundle[0]))


def test_seeds_replanning_and_budget(sampler, toy_bundle):
    rec = RecordingSampler(sampler)
    policy = MPCPolicy(rec, SamplerOptions(num_candidates=4, actions_per_plan=2), episode_budget=10.0,
                       episode_length=100)
    policy.reset(7)
    obs = toy_bundle[1].episodes[0].observations[0]
    first = policy.act(obs)
    second = policy.act(obs)
    np.testing.assert_array_equal(np.stack([first, second]), policy.last_plan.actions)
    policy.observe_cost(4.0)
    policy.act(obs)
    assert [c[0] for c in rec.calls] == [7, 9]  # seed + step, a plan every 2 actions
    assert rec.calls[0][1].cost_limit == 10.0 and rec.calls[1][1].cost_limit == 6.0
    assert rec.calls[1][1].cost_budget == pytest.approx(6.0 * 6 / 98)  # remaining * H / steps left
    assert len(policy.latencies_ms) == 2


def test_policy_rejects_bad_observations(sampler):
    policy = MPCPolicy(sampler, SamplerOptions(num_candidates=2, cost_limit=1.0))
    with pytest.raises(ValueError, match="shape"):
        policy.act(np.zeros(sampler.dx + 1))
    with pytest.raises(ValueError, match="NaN"):
        policy.act(np.full(sampler.dx, np.nan))
    with pytest.raises(ValueError, match="seed"):
        policy.reset(-1)


def test_constrained_env_reports_velocity_cost():
    env = make_env("Hopper-v5", constrained=True)
    env.reset(seed=0)
    costs = [env.step(env.action_space.sample())[4]["cost"] for _ in range(30)]
    assert set(costs) <= {0.0, 1.0}
    assert SCORE_REFERENCES["Hopper-v5"].normalize(-20.272305) == pytest.approx(0.0)
    assert SCORE_REFERENCES["Hopper-v5"].normalize(3234.3) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="action space is Discrete"):  # any Box robot is made; others are not
        make_env("CartPole-v1")
    with pytest.raises(ValueError, match="has no DSRL velocity limit"):
        make_env("Swimmer-v5", constrained=True)


@pytest.mark.slow
def test_end_to_end_tiny_models_control_hopper(tmp_path):
    """Generate random Hopper data, train tiny models for seconds, control a short episode."""
    path = generate(GenerateConfig("Hopper-v5", "random", transitions=3000, seed=0), tmp_path, progress=False)
    data = load_dataset(path)
    assert data.env_id == "Hopper-v5" and data.state_dim == 11 and data.num_transitions == 3000
    model = ModelConfig(horizon=8, num_steps=5, width=64, layers=2, ranker_width=32)
    BundleSpec.fit(data, [data], model).save(tmp_path / "m")
    for name in ("planner", "dynamics", "reward"):
        info = train_model(tmp_path / "m", name, [data], TrainConfig(steps=150, batch_size=64), progress=False)
        assert np.isfinite(info["final_loss"])
    bundle = ModelBundle.load(tmp_path / "m", env_id="Hopper-v5")
    policy = MPCPolicy(ReferenceSampler(bundle), SamplerOptions(num_candidates=8))
    summary = evaluate(policy, "Hopper-v5", episodes=2, seed=3, max_steps=40, progress=False)
    assert len(summary.episodes) == 2
    for ep in summary.episodes:
        assert 1 <= ep.length <= 40 and np.isfinite(ep.episode_return)
        assert ep.normalized_score == pytest.approx(SCORE_REFERENCES["Hopper-v5"].normalize(ep.episode_return))
    assert len(summary.latencies_ms) == sum(ep.length for ep in summary.episodes)
    lat = summary.latency_percentiles()
    assert 0 < lat["p50_ms"] <= lat["p99_ms"]
    # The same seeds replay the same episodes exactly.
    again = evaluate(MPCPolicy(ReferenceSampler(bundle), SamplerOptions(num_candidates=8)), "Hopper-v5", episodes=2,
                     seed=3, max_steps=40, progress=False)
    assert [e.episode_return for e in again.episodes] == [e.episode_return for e in summary.episodes]
    with pytest.raises(ValueError, match="Hopper-v5, not Walker2d-v5"):
        ModelBundle.load(tmp_path / "m", env_id="Walker2d-v5")


def test_episodes_use_disjoint_plan_seeds(sampler, toy_bundle):
    """Each episode's plans use their own seeds: no noise is shared between episodes."""

    class Fixed:
        def __init__(self, policy):
            self.policy, self.seeds = policy, []

        def reset(self, seed):
            self.seeds.append(seed)
            self.policy.reset(seed)

        def act(self, obs):
            return np.zeros(3)  # Hopper's action; the sampler is not called

    fixed = Fixed(None)
    fixed.policy = type("P", (), {"reset": lambda self, s: None})()
    evaluate(fixed, "Hopper-v5", episodes=3, seed=4, max_steps=5, progress=False)
    from mpdiffuser.control.evaluate import PLAN_SEED_STRIDE

    assert fixed.seeds == [4 * PLAN_SEED_STRIDE, 5 * PLAN_SEED_STRIDE, 6 * PLAN_SEED_STRIDE]
    assert PLAN_SEED_STRIDE > 1000  # longer than any episode


class WarmRecorder:
    """A stand-in sampler recording the warm-start window each plan receives."""

    def __init__(self, sampler):
        self.inner, self.spec, self.windows = sampler, sampler.spec, []

    def plan(self, state, seed, options, warm_start=None):
        self.windows.append(None if warm_start is None else np.array(warm_start))
        return self.inner.plan(state, seed, options, warm_start=warm_start)


def test_policy_warm_starts_from_its_last_window_and_resets_cold(sampler):
    recorder = WarmRecorder(sampler)
    policy = MPCPolicy(recorder, SamplerOptions(num_candidates=2, cost_limit=1.0, warm_start_level=3))
    obs = np.zeros(sampler.dx, np.float32)
    policy.act(obs)
    first = policy.last_plan.window
    policy.act(obs)
    assert recorder.windows[0] is None and np.array_equal(recorder.windows[1], first)
    policy.reset(7)
    policy.act(obs)
    assert recorder.windows[2] is None  # a new episode starts cold
    assert policy.predict(obs)[1] is None and policy.predict(obs)[0].shape == (sampler.du,)


def test_evaluate_rejects_empty_runs(sampler):
    policy = MPCPolicy(sampler, SamplerOptions(num_candidates=1, cost_limit=1.0))
    with pytest.raises(ValueError, match="episodes must be a positive integer"):
        evaluate(policy, "Hopper-v5", episodes=0)
    for bad in (0, -5):
        with pytest.raises(ValueError, match="max_steps must be a positive integer"):
            evaluate(policy, "Hopper-v5", episodes=1, max_steps=bad)


class PointMass(__import__("gymnasium").Env):
    """A user's own environment: 4-dim state, 2-dim force, reward for staying near the origin."""

    def __init__(self, state_dim: int = 4):
        import gymnasium as gym

        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.normal(size=self.observation_space.shape)
        return self.x.copy(), {}

    def step(self, action):
        self.x[:2] += 0.1 * np.asarray(action, np.float64)
        return self.x.copy(), -float(np.square(self.x).sum()), False, False, {}


def test_evaluate_runs_any_gymnasium_env_whose_spaces_match(sampler):
    import gymnasium as gym

    policy = MPCPolicy(sampler, SamplerOptions(num_candidates=2, cost_limit=1.0))
    env = PointMass()
    summary = evaluate(policy, env, episodes=2, max_steps=3, progress=False)
    assert [e.length for e in summary.episodes] == [3, 3] and np.isnan(summary.score[0])  # no D4RL reference
    assert np.isfinite(summary.episode_return[0])
    env.reset(seed=0)  # a caller's Env is not closed
    gym.register("PointMass-v0", entry_point=PointMass, max_episode_steps=4)
    try:
        by_id = evaluate(policy, "PointMass-v0", episodes=1, progress=False)
        assert by_id.env_id == "PointMass-v0" and by_id.episodes[0].length == 4  # the registered time limit
        with pytest.raises(ValueError, match=r"its observation space has shape \(5,\), the model's observations "
                                              r"have shape \(4,\)"):
            evaluate(policy, PointMass(state_dim=5), episodes=1, max_steps=2, progress=False)
        with pytest.raises(ValueError, match="has no DSRL velocity limit: give the limit in m/s"):
            evaluate(policy, "PointMass-v0", episodes=1, constrained=True, progress=False)
        with pytest.raises(ValueError, match="unknown environment 'NoSuchEnv-v9'"):
            evaluate(policy, "NoSuchEnv-v9", episodes=1, progress=False)
    finally:
        gym.registry.pop("PointMass-v0")


class SlowSampler(RecordingSampler):
    """Plans that take at least `ms` milliseconds."""

    def __init__(self, sampler, ms: float):
        super().__init__(sampler)
        self.ms = ms

    def plan(self, state, seed, options):
        import time

        started = time.perf_counter()
        plan = super().plan(state, seed, options)
        while (time.perf_counter() - started) * 1e3 < self.ms:
            pass
        return plan


def test_plans_over_the_soft_deadline_are_counted_and_reported(sampler):
    """max_plan_ms: every plan over it is counted (policy.overruns) and reported by evaluate; the
    plans are used all the same. A deadline no plan reaches counts none; 0 (the default) reports none."""
    slow = SlowSampler(sampler, ms=5.0)
    options = SamplerOptions(num_candidates=2, cost_limit=1.0)
    tight = MPCPolicy(slow, options.replace(max_plan_ms=2.0))
    summary = evaluate(tight, PointMass(), episodes=1, max_steps=4, progress=False)
    assert tight.overruns == 4 and summary.latency_percentiles()["overruns"] == 4
    assert summary.latency_percentiles()["deadline_ms"] == 2.0
    loose = MPCPolicy(slow, options.replace(max_plan_ms=60_000.0))
    assert evaluate(loose, PointMass(), episodes=1, max_steps=4, progress=False).latency_percentiles()["overruns"] == 0
    assert loose.overruns == 0
    none = evaluate(MPCPolicy(slow, options), PointMass(), episodes=1, max_steps=2, progress=False)
    assert "overruns" not in none.latency_percentiles()


def test_evaluate_refuses_a_model_of_another_robot_with_the_same_shapes(tmp_path):
    """Humanoid-v5 and HumanoidStandup-v5 share their spaces: the model's recorded robot decides."""
    from mpdiffuser.bench import synthetic_model_file
    from mpdiffuser.sampling.sampler import Sampler

    model = synthetic_model_file(tmp_path / "hopper.safetensors", env_id="Hopper-v5")
    sampler = Sampler(model, "cpu")
    with pytest.raises(ValueError, match="the policy's models were trained for Hopper-v5, not Hopper-v4"):
        evaluate(MPCPolicy(sampler), "Hopper-v4", episodes=1, max_steps=2, progress=False)
    assert evaluate(MPCPolicy(sampler), "Hopper-v5", episodes=1, max_steps=2, progress=False).episodes


def test_eval_the_python_evaluate_and_a_hand_written_loop_run_identical_episodes(tmp_path):
    """The three ways to run a model on a robot (`mpdiffuser eval`, mpd.evaluate, and the loop of
    the tutorial with MPCPolicy) give the same episodes: same starts, same plan seeds, same actions."""
    import json

    import mpdiffuser as mpd
    from mpdiffuser import cli
    from mpdiffuser.control.evaluate import PLAN_SEED_STRIDE
    from mpdiffuser.envs import make_env

    data_dir, bundle = tmp_path / "data", tmp_path / "bundle"
    assert cli.main(["generate-data", "--env", "Hopper-v5", "--kind", "random", "--transitions", "400",
                     "--out", str(data_dir)]) == 0
    assert cli.main(["--quiet", "train", "--bundle", str(bundle), "--data", str(data_dir / "hopper-random-s0.hdf5"),
                     "--steps", "10", "--horizon", "4", "--diffusion-steps", "3", "--width", "32", "--layers", "2",
                     "--batch-size", "16"]) == 0
    model_file = mpd.export_model(bundle, bundle / "model.safetensors")
    seed, episodes, steps = 7, 2, 25
    report = tmp_path / "eval.json"
    assert cli.main(["eval", "--model-file", str(model_file), "--backend", "cpu", "--episodes",
                     str(episodes), "--seed", str(seed), "--max-steps", str(steps), "--json", str(report)]) == 0
    from_cli = [e["episode_return"] for e in json.loads(report.read_text())["episodes"]]
    sampler = mpd.load(model_file, "cpu")  # every core, as eval
    summary = mpd.evaluate(mpd.MPCPolicy(sampler, sampler.defaults), "Hopper-v5", episodes, seed, steps,
                           progress=False)
    from_python = [e.episode_return for e in summary.episodes]
    by_hand = []
    env, policy = make_env("Hopper-v5"), mpd.MPCPolicy(sampler, sampler.defaults)
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        policy.reset((seed + i) * PLAN_SEED_STRIDE)
        total = 0.0
        for _ in range(steps):
            obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
            total += float(reward)
            if terminated or truncated:
                break
        by_hand.append(total)
    assert from_cli == from_python == by_hand
