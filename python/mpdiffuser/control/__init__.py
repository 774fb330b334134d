"""Receding-horizon control with MPDiffuser: the MPC policy and the gymnasium evaluator."""

from mpdiffuser.control.evaluate import EpisodeResult, EvalSummary, evaluate
from mpdiffuser.control.mpc import MPCPolicy

__all__ = ["MPCPolicy", "evaluate", "EpisodeResult", "EvalSummary"]
