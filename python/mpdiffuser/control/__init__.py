"""Receding-horizon control with MPDiffuser: the MPC policy, the gymnasium evaluator and the
plan-consistency measurement, and the return target chosen by validation episodes."""

from mpdiffuser.control.consistency import plan_consistency
from mpdiffuser.control.evaluate import EpisodeResult, EvalSummary, evaluate
from mpdiffuser.control.mpc import MPCPolicy
from mpdiffuser.control.tune import choose_return_target, choose_setting, tune_return_target

__all__ = ["MPCPolicy", "evaluate", "EpisodeResult", "EvalSummary", "plan_consistency", "tune_return_target",
           "choose_return_target", "choose_setting"]
