"""Closed-loop evaluation while the planner trains (`--eval-every N --eval-episodes E`): every N
steps, the planner's EMA weights control the bundle's robot for E episodes with the bundle's
trained dynamics and reward models and its stored sampler options (the PyTorch reference sampler,
on the CPU), so that a user sees the score, not only the loss. The scores go into the loss log
(eval_return, eval_score) beside the loss; the best step is recorded in the planner's summary."""

from __future__ import annotations

import copy
import math
from pathlib import Path

EVAL_START_SEED = 20_000  # the evaluation episodes' starts: seeds 20000 + i (never a test's 1000 + i)
COLUMNS = ["eval_return", "eval_score"]


class ClosedLoop:
    """evaluate(ema, step) -> {"eval_return", "eval_score"}; `best` holds the best step so far."""

    def __init__(self, bundle_dir: str | Path, episodes: int, max_steps: int | None = None) -> None:
        from mpdiffuser.models.bundle import BundleSpec

        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
            raise ValueError(f"eval_episodes must be an integer >= 1, got {episodes!r}")
        self.bundle_dir, self.episodes, self.max_steps = Path(bundle_dir), episodes, max_steps
        spec = BundleSpec.load(self.bundle_dir)
        if not spec.env_id:
            raise ValueError("eval_every runs the bundle's robot: its data name no environment, so give env")
        self.env_id = spec.env_id
        self.best: dict | None = None

    def __call__(self, ema, step: int) -> dict:
        from mpdiffuser.config import SamplerOptions
        from mpdiffuser.control.evaluate import evaluate
        from mpdiffuser.control.mpc import MPCPolicy
        from mpdiffuser.models.bundle import BundleSpec, ModelBundle, load_weights
        from mpdiffuser.sampling.reference import ReferenceSampler

        spec = BundleSpec.load(self.bundle_dir)
        others = ["dynamics", "reward"] + (["cost"] if spec.with_cost else [])
        trained = {name: load_weights(self.bundle_dir, name, spec) for name in others}  # trained before the planner
        bundle = ModelBundle.from_modules(spec, planner=copy.deepcopy(ema).cpu().eval(), **trained)
        options = spec.sampler_defaults or SamplerOptions()
        summary = evaluate(MPCPolicy(ReferenceSampler(bundle), options), self.env_id, self.episodes,
                           EVAL_START_SEED, self.max_steps, progress=False, desc=f"eval at step {step}")
        score = summary.score[0]
        row = {"eval_return": float(summary.episode_return[0]), "eval_score": float(score)}
        if self.best is None or row["eval_return"] > self.best["eval_return"]:
            self.best = {"step": step} | row
        return {k: (v if math.isfinite(v) else float("nan")) for k, v in row.items()}


def planner_last(names: list[str]) -> list[str]:
    """The models in training order for a run that evaluates the planner: the others first."""
    return [n for n in names if n != "planner"] + (["planner"] if "planner" in names else [])

