"""How close are a model file's planned first actions to the data's actions?

    python benchmarks/diagnostics/action_error.py MODEL.safetensors DATA.hdf5 SAC_POLICY.zip [--states 300]

On `--states` random dataset states: the RMS difference (normalized action units, [-1, 1]) between
the data's action and (a) the behaviour policy's mean action (the noise floor of the stochastic
data), (b) behaviour cloning trained on the same data, (c) the plan's u_0 at lambda 0 and 1,
N = 1 and 8. A perfect sampler of the data's actions would score about sqrt(2) x the noise floor.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mpdiffuser.config import TrainConfig
from mpdiffuser.control.bc import BCPolicy
from mpdiffuser.data.dataset import load_dataset
from mpdiffuser.sampling.sampler import Sampler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_file")
    p.add_argument("data")
    p.add_argument("policy", help="the stable-baselines3 SAC behaviour policy (.zip) that made the data")
    p.add_argument("--states", type=int, default=300)
    p.add_argument("--bc-steps", type=int, default=3000)
    p.add_argument("--cost-limit", type=float, default=None,
                   help="cost-conditioned models: the episode cost limit to plan under (default: the data's "
                        "largest episode cost, as the constrained experiment's unbudgeted runs)")
    p.add_argument("--guidance", type=float, default=None, help="w (default: the model file's)")
    p.add_argument("--return-target", type=float, default=None, help="g (default: the model file's)")
    p.add_argument("--temperature", type=float, default=None, help="tau (default: the model file's)")
    args = p.parse_args()
    from stable_baselines3 import SAC

    torch.set_num_threads(1)
    sampler = Sampler(args.model_file, "cpu", threads=1)
    spec = sampler.spec
    data = load_dataset(args.data)
    states = np.concatenate([e.observations[:-1] for e in data.episodes])
    actions = np.concatenate([e.actions for e in data.episodes])
    idx = np.random.default_rng(0).choice(len(states), args.states, replace=False)
    norm = spec.actions.normalize
    error = lambda a: float(np.sqrt(((norm(np.asarray(a, np.float32)) - norm(actions[idx])) ** 2).mean()))  # noqa: E731
    sac = SAC.load(args.policy, device="cpu")
    bc, _ = BCPolicy.train(data, spec.states, spec.actions, TrainConfig(steps=args.bc_steps, seed=0), progress=False)
    rows = {"behaviour policy, mean action (noise floor)": error([sac.predict(states[i], deterministic=True)[0] for i in idx]),
            f"behaviour cloning ({args.bc_steps} steps)": error([bc.act(states[i]) for i in idx])}
    defaults = sampler.defaults
    if args.guidance is not None:
        defaults = defaults.replace(guidance=args.guidance)
    if args.return_target is not None:
        defaults = defaults.replace(return_target=args.return_target)
    if args.temperature is not None:
        defaults = defaults.replace(temperature=args.temperature)
    if spec.with_cost:
        limit = args.cost_limit if args.cost_limit is not None else max(float(e.costs.sum()) for e in data.episodes)
        defaults = defaults.replace(cost_limit=limit)
    for lam in (0.0, 1.0):
        for n in (1, 8):
            options = defaults.replace(dynamics_weight=lam, num_candidates=n)
            rows[f"plan u_0, lambda {lam:g}, N = {n}"] = error(
                [sampler.plan(states[i], seed=int(i), options=options).actions[0] for i in idx])
    for name, value in rows.items():
        print(f"{name:48s} RMS error vs the data's action: {value:.3f}")


if __name__ == "__main__":
    main()
