"""Sampling: reference.py is the pure-PyTorch alternating sampler, the specification every
native backend is tested against."""

from mpdiffuser.sampling.reference import Plan, ReferenceSampler, select_candidate

__all__ = ["Plan", "ReferenceSampler", "select_candidate"]
