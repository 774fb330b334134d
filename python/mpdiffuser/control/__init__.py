"""Receding-horizon control with MPDiffuser: the MPC policy, the gymnasium evaluator and the
plan-consistency measurement."""

from mpdiffuser.control.consistency import plan_consistency
from mpdiffuser.control.evaluate import EpisodeResult, EvalSummary, evaluate
from mpdiffuser.control.mpc import MPCPolicy

__all__ = ["MPCPolicy", "evaluate", "EpisodeResult", "EvalSummary", "plan_consistency"]
