"""Plan consistency: do a plan's states match what the robot does under the plan's actions?

MPDiffuser's dynamics update exists to make sampled windows dynamically feasible. This measures
it directly. The robot is driven by the sampler at the first lambda in `lambdas` (replanning every
step). At every visited state, each lambda plans with the same seed, and the plan's H actions are
replayed open loop on a copy of the simulator started from the same physical state. Reported per
lambda, in the model's normalized state units ([-1, 1] per dimension):

  state_error_first   RMS over state dims of (x_1 planned - x_1 reached)
  state_error_window  the same, averaged over the window (up to a fall)
  window_return       the return the plan's actions actually earn over the window
  predicted_value     the ranker's value V of the chosen candidate (the same quantity, predicted)
  fall_rate           fraction of plans whose actions make the robot fall within the window
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from mpdiffuser.config import SamplerOptions
from mpdiffuser.control.evaluate import PLAN_SEED_STRIDE
from mpdiffuser.envs import make_env


def plan_consistency(sampler, env_id: str, lambdas=(1.0, 0.0), episodes: int = 1, seed: int = 1000,
                     max_steps: int = 1000, physics=None, options=None, progress: bool = True) -> dict:
    """Returns {"lambdas": {str(lambda): metrics}, "states": visited states, "steps": [per episode]}."""
    if not lambdas or any(not 0.0 <= float(lam) <= 1.0 for lam in lambdas):
        raise ValueError(f"lambdas must be a non-empty list of values in [0, 1], got {list(lambdas)}")
    if episodes < 1 or max_steps < 1:
        raise ValueError(f"episodes and max_steps must be >= 1, got {episodes} and {max_steps}")
    spec = sampler.spec
    base = options or getattr(sampler, "defaults", None) or SamplerOptions()
    if base.cost_budget is not None or base.cost_limit is not None:
        raise ValueError("plan consistency is measured without a cost budget; pass options with none")
    per_lambda = {float(lam): base.replace(dynamics_weight=float(lam)) for lam in lambdas}
    horizon, dx = spec.model.horizon, spec.state_dim
    env, sim = make_env(env_id, physics=physics), make_env(env_id, physics=physics)
    if not all(hasattr(e.unwrapped, name) for e in (env, sim) for name in ("data", "model")):
        env.close(), sim.close()
        raise ValueError(f"plan consistency replays plans from the robot's simulator state (MuJoCo's qpos and qvel): "
                         f"{env_id} is not a MuJoCo environment")
    sim.reset(seed=seed)
    records = {lam: [] for lam in per_lambda}
    steps = []
    bar = tqdm(total=episodes * max_steps, desc="plan consistency", disable=None if progress else True, dynamic_ncols=True,
               leave=False)
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        for t in range(max_steps):
            state = _snapshot(env)
            executed = None
            for lam, opts in per_lambda.items():
                plan = sampler.plan(obs, seed=(seed + ep) * PLAN_SEED_STRIDE + t, options=opts)
                executed = plan if executed is None else executed
                records[lam].append(_replay(sim, state, plan, spec, horizon, dx))
            obs, _, terminated, truncated, _ = env.step(executed.actions[0])
            bar.update(1)
            if terminated or truncated:
                break
        steps.append(t + 1)
    bar.close()
    env.close()
    sim.close()
    return {"env_id": env_id, "horizon": horizon, "steps": steps, "states": int(sum(steps)),
            "lambdas": {f"{lam:g}": _summarize(rows) for lam, rows in records.items()}}


def _snapshot(env) -> tuple:
    """The simulator state a replay starts from: (qpos, qvel) of a gymnasium MujocoEnv (its
    set_state restores them); for a robot env without set_state (gymnasium-robotics' Fetch, whose
    gripper moves by mocap and whose goal lives in the env) MuJoCo's integration state (qpos, qvel,
    act, mocap, ...) and the goal."""
    u = env.unwrapped
    if hasattr(u, "set_state"):
        return "qpos_qvel", u.data.qpos.copy(), u.data.qvel.copy()
    import mujoco

    kind = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(u.model, kind))
    mujoco.mj_getState(u.model, u.data, state, kind)
    return "integration", state, np.copy(getattr(u, "goal", None))


def _restore(sim, snapshot: tuple) -> None:
    u = sim.unwrapped
    if snapshot[0] == "qpos_qvel":
        u.set_state(snapshot[1], snapshot[2])
        return
    import mujoco

    mujoco.mj_setState(u.model, u.data, snapshot[1], mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_forward(u.model, u.data)
    if snapshot[2].shape:
        u.goal = snapshot[2].copy()


def _replay(sim, snapshot: tuple, plan, spec, horizon: int, dx: int) -> dict:
    """Replay the plan's actions from the simulator state `snapshot` on `sim`; compare with the plan's states."""
    window = np.asarray(plan.window, dtype=np.float64)
    actions = spec.actions.unnormalize(window[:, dx:].astype(np.float32))
    low, high = sim.action_space.low, sim.action_space.high
    _restore(sim, snapshot)
    reached, earned, fell = [], 0.0, False
    for h in range(horizon):
        obs, reward, terminated, _, _ = sim.step(np.clip(actions[h], low, high))
        reached.append(spec.states.normalize(np.asarray(obs, dtype=np.float32)))
        earned += float(reward)
        if terminated:
            fell = True
            break
    reached = np.asarray(reached, dtype=np.float64)
    errors = np.sqrt(((reached - window[:len(reached), :dx]) ** 2).mean(axis=1))
    return {"first": errors[0], "window": errors.mean(), "earned": earned,
            "value": float(plan.values[plan.index]), "fell": fell}


def _summarize(rows: list[dict]) -> dict:
    col = lambda key: np.asarray([r[key] for r in rows], dtype=np.float64)  # noqa: E731
    value, earned = col("value"), col("earned")
    corr = float(np.corrcoef(value, earned)[0, 1]) if len(rows) > 1 and value.std() > 0 and earned.std() > 0 else None
    stderr = lambda a: float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0  # noqa: E731
    return {"plans": len(rows),
            "state_error_first": float(col("first").mean()), "state_error_first_stderr": stderr(col("first")),
            "state_error_window": float(col("window").mean()), "state_error_window_stderr": stderr(col("window")),
            "window_return": float(earned.mean()), "window_return_stderr": stderr(earned),
            "predicted_value": float(value.mean()), "fall_rate": float(col("fell").mean()),
            "value_return_correlation": corr}
