"""Choosing the return target g by validation episodes. The best g differs by task (measured on
the shared suite: 0.4-0.6 on Hopper medium-expert and medium-replay data, 0.8-1.1 on HalfCheetah
medium-replay), and the return condition cannot tell from the data alone how far it may ask
beyond it, so g is picked on episodes from start states the test never uses."""

from __future__ import annotations

from typing import Callable

import numpy as np

VALIDATION_SEED = 5000  # validation starts of `mpdiffuser tune`: the evaluations' own starts are 0-4999


def choose_setting(settings: list[dict], run: Callable[[dict], list],
                   budget: float | None = None) -> tuple[dict, list[dict]]:
    """The setting of `settings` (dicts, say {"return_target": g} or {"train_steps": T,
    "return_target": g}) whose validation episodes, `run(setting)` (EpisodeResults), reach the
    highest mean return; equal returns go to the first listed. With an episode cost `budget`
    (constrained tasks): the highest return among the settings whose mean episode cost is within
    it, or, when none is, the lowest mean cost. Returns it and one row per setting: the setting's
    entries plus episodes, return_mean, return_stderr, cost_mean and score_mean (None without D4RL
    scores)."""
    if not settings:
        raise ValueError("choosing by validation needs at least one setting")
    tried = []
    for setting in settings:
        episodes = run(setting)
        returns = np.array([e.episode_return for e in episodes], dtype=np.float64)
        scores = [e.normalized_score for e in episodes]
        tried.append(dict(setting) | {
            "episodes": len(episodes), "return_mean": float(returns.mean()),
            "return_stderr": float(returns.std(ddof=1) / np.sqrt(returns.size)) if returns.size > 1 else 0.0,
            "cost_mean": float(np.mean([e.cost for e in episodes])),
            "score_mean": None if None in scores else float(np.mean(scores))})
    order = range(len(tried))
    if budget is not None:
        within = [i for i in order if tried[i]["cost_mean"] <= budget]
        if not within:  # min keeps the first of equal costs
            return settings[min(order, key=lambda i: tried[i]["cost_mean"])], tried
        order = within
    best = max(order, key=lambda i: tried[i]["return_mean"])  # max keeps the first of equal returns
    return settings[best], tried


def choose_return_target(targets, run: Callable[[float], list]) -> tuple[float, list[dict]]:
    """choose_setting over return targets: the g of `targets` whose validation episodes `run(g)`
    reach the highest mean return (the first of equals), and one row per target."""
    if not targets:
        raise ValueError("choose_return_target needs at least one target")
    best, tried = choose_setting([{"return_target": float(g)} for g in targets], lambda s: run(s["return_target"]))
    return best["return_target"], tried


def tune_models(candidates: dict, env_id: str, targets, episodes: int = 3, seed: int = VALIDATION_SEED,
                max_steps: int | None = None, progress: bool = True, budget: float | None = None,
                limit: float | None = None) -> tuple[dict, list[dict]]:
    """choose_setting over every model and return target: `candidates` maps a name (say a model
    file's path) to (sampler, options); each pair of name and g runs `episodes` MPC episodes from
    starts seed, seed + 1, ... with those options and that g. `budget`: an episode cost budget
    (the constrained robot, velocity limit `limit` m/s or DSRL's), given to the policy and to the
    choice. Returns the best {"model": name, "return_target": g} and the rows of choose_setting."""
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy

    def run(setting: dict) -> list:
        sampler, options = candidates[setting["model"]]
        g = setting["return_target"]
        desc = f"g = {g:g}" if len(candidates) == 1 else f"{setting['model']} g = {g:g}"
        policy = MPCPolicy(sampler, options.replace(return_target=g), episode_budget=budget)
        return evaluate(policy, env_id, episodes, seed, max_steps, constrained=budget is not None, progress=progress,
                        desc=desc, limit=limit).episodes

    return choose_setting([{"model": name, "return_target": float(g)} for name in candidates for g in targets], run,
                          budget)


def tune_return_target(sampler, options, env_id, targets, episodes: int = 3, seed: int = VALIDATION_SEED,
                       max_steps: int | None = None, progress: bool = True) -> tuple[float, list[dict]]:
    """tune_models for one sampler: run `episodes` MPC episodes per return target (starts seed,
    seed + 1, ...) with `options` otherwise; returns the target of the highest mean return and the
    rows of choose_return_target."""
    if not targets:
        raise ValueError("choose_return_target needs at least one target")
    best, tried = tune_models({"model": (sampler, options)}, env_id, targets, episodes, seed, max_steps, progress)
    return best["return_target"], [{k: v for k, v in r.items() if k != "model"} for r in tried]
