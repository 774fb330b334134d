"""Run a policy in a gymnasium environment: returns, D4RL-normalized scores, costs, latency."""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from mpdiffuser.envs import SCORE_REFERENCES, make_env

PLAN_SEED_STRIDE = 100_003  # more than any episode's steps: episodes never share plan seeds


@dataclass(frozen=True)
class EpisodeResult:
    episode_return: float
    normalized_score: float | None  # D4RL-normalized; goal-conditioned robots: 100 x success
    cost: float
    length: int
    success: float | None = None  # goal-conditioned robots: info["is_success"] at the episode's last step


@dataclass
class EvalSummary:
    env_id: str
    episodes: list[EpisodeResult]
    latencies_ms: list[float] = field(default_factory=list)
    deadline_ms: float = 0.0  # the policy's soft deadline per plan (SamplerOptions.max_plan_ms; 0: none)

    def __repr__(self) -> str:  # one line: not every episode and every plan's latency
        ret, err = self.episode_return
        score = self.score
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        plans = (f", plan p50 {np.percentile(lat, 50):.2f} ms p99 {np.percentile(lat, 99):.2f} ms over {len(lat)}"
                 if len(lat) else "")
        scored = f", score {score[0]:.1f} +- {score[1]:.1f}" if np.isfinite(score[0]) else ""
        return (f"EvalSummary({self.env_id}: {len(self.episodes)} episodes, return {ret:.1f} +- {err:.1f}{scored}"
                f"{plans})")

    def _stat(self, values: list[float]) -> tuple[float, float]:
        a = np.asarray(values, dtype=np.float64)
        return float(a.mean()), float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0

    @property
    def score(self) -> tuple[float, float]:
        """(mean, standard error) of the D4RL-normalized score (goal-conditioned robots: the success
        rate in %); NaN for robots without either."""
        if any(e.normalized_score is None for e in self.episodes):
            return float("nan"), float("nan")
        return self._stat([e.normalized_score for e in self.episodes])

    @property
    def episode_return(self) -> tuple[float, float]:
        return self._stat([e.episode_return for e in self.episodes])

    @property
    def cost(self) -> tuple[float, float]:
        return self._stat([e.cost for e in self.episodes])

    def latency_percentiles(self) -> dict[str, float]:
        if not self.latencies_ms:
            return {}
        a = np.asarray(self.latencies_ms)
        deadline = {"deadline_ms": self.deadline_ms, "overruns": int((a > self.deadline_ms).sum())} \
            if self.deadline_ms > 0 else {}
        return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
                "mean_ms": float(a.mean()), "plans": int(a.size)} | deadline

    @property
    def success_rate(self) -> float | None:
        """The fraction of episodes that ended in success (goal-conditioned robots), else None."""
        if not self.episodes or any(e.success is None for e in self.episodes):
            return None
        return float(np.mean([e.success for e in self.episodes]))

    def to_dict(self) -> dict:
        success = {} if self.success_rate is None else {"success_rate": self.success_rate}
        return {"env_id": self.env_id, "score_mean": self.score[0], "score_stderr": self.score[1],
                "return_mean": self.episode_return[0], "cost_mean": self.cost[0]} | success | {
                "episodes": [e.__dict__ for e in self.episodes], "latency": self.latency_percentiles()}


def resolve_env(env, constrained: bool = False, physics=None, limit: float | None = None) -> tuple[gym.Env, str, bool]:
    """(environment, its id, whether evaluate made it and must close it) for an env id or a
    gymnasium Env. An id is made by envs.make_env (any registered id with 1-D Box spaces; the
    options constrained, physics and velocity limit where they apply); an Env instance runs as it is."""
    if isinstance(env, gym.Env):
        if constrained or physics is not None or limit is not None:
            raise ValueError("constrained and physics apply to built-in environment ids only; wrap your Env yourself")
        return env, env.spec.id if env.spec is not None else type(env.unwrapped).__name__, False
    if not isinstance(env, str):
        raise TypeError(f"env must be an environment id or a gymnasium.Env, got {type(env).__name__}")
    return make_env(env, constrained=constrained, physics=physics, limit=limit), env, True


def check_spaces(policy, env: gym.Env, env_id: str) -> None:
    """The model's robot, when gymnasium knows it, must be `env_id`, and the env's observation and
    action shapes the model's (dx,) and (du,)."""
    spec = getattr(getattr(policy, "sampler", None), "spec", None)
    if spec is None:
        return
    # A model of a robot gymnasium knows runs on that robot only (another of the same shapes, say
    # Humanoid-v5 for HumanoidStandup-v5, is refused); one of an unregistered robot, the user's
    # own, runs wherever the shapes match.
    from mpdiffuser.envs import registered

    if registered(spec.env_id) and env_id != spec.env_id:
        raise ValueError(f"the policy's models were trained for {spec.env_id}, not {env_id}")
    for what, space, dim in (("observation", env.observation_space, spec.state_dim),
                             ("action", env.action_space, spec.action_dim)):
        if getattr(space, "shape", None) != (dim,):
            raise ValueError(f"{env_id}: its {what} space has shape {getattr(space, 'shape', None)}, the model's "
                             f"{what}s have shape ({dim},)")


def evaluate(policy, env_id, episodes: int = 1, seed: int = 0, max_steps: int | None = None,
             constrained: bool = False, progress: bool = True, desc: str = "eval",
             physics=None, limit: float | None = None) -> EvalSummary:
    """Run `episodes` episodes of `policy` (an MPCPolicy or anything with reset/act) in `env_id`:
    an environment id (a built-in robot, or any registered gymnasium id) or a gymnasium.Env whose
    spaces match the model; an Env passed in is reset but not closed. D4RL scores exist for the
    built-in robots only (None elsewhere); a goal-conditioned robot (info["is_success"]) scores
    100 x success at the episode's last step, so its mean score is the success rate in %.

    Episode i resets the env with seed + i and the policy with (seed + i) * PLAN_SEED_STRIDE: the
    policy plans with seed + step, so without the stride consecutive episodes would reuse each
    other's noise shifted by one step and would not be independent samples. Costs come from info['cost']
    (constrained envs) and are fed back to the policy's budget when it has `observe_cost`.
    `physics` (an envs.PhysicsChange) runs the episodes under changed dynamics; `limit` (m/s)
    replaces a constrained robot's velocity limit (default DSRL's).
    """
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer))
                                  or max_steps < 1):
        raise ValueError(f"max_steps must be a positive integer or None (the environment's limit), got {max_steps!r}")
    env, env_id, owned = resolve_env(env_id, constrained, physics, limit)
    check_spaces(policy, env, env_id)
    limit = max_steps if max_steps is not None else (env.spec.max_episode_steps or 1000)
    reference = SCORE_REFERENCES.get(env_id)
    results, latencies = [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        policy.reset((seed + i) * PLAN_SEED_STRIDE)
        start_latencies = len(getattr(policy, "latencies_ms", []))
        total, cost, steps = 0.0, 0.0, 0
        bar = tqdm(total=limit, desc=f"{desc} ep {i + 1}/{episodes}", disable=None if progress else True, dynamic_ncols=True,
                   leave=False)
        done, info = False, {}
        while not done and steps < limit:
            obs, reward, terminated, truncated, info = env.step(policy.act(obs))
            total += float(reward)
            step_cost = float(info.get("cost", 0.0))
            cost += step_cost
            if hasattr(policy, "observe_cost"):
                policy.observe_cost(step_cost)
            steps += 1
            done = terminated or truncated
            bar.update(1)
            if steps % 25 == 0:
                bar.set_postfix(ret=f"{total:.0f}")
        bar.close()
        latencies.extend(getattr(policy, "latencies_ms", [])[start_latencies:])
        success = float(info["is_success"]) if "is_success" in info else None
        score = reference.normalize(total) if reference else (100.0 * success if success is not None else None)
        results.append(EpisodeResult(total, score, cost, steps, success))
    if owned:
        env.close()
    options = getattr(policy, "options", None)
    return EvalSummary(env_id, results, latencies, float(getattr(options, "max_plan_ms", 0.0)))
