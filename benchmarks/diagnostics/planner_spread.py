"""Where does the planner lose the data's first action? Three measurements of a model file's
planner alone (no dynamics update, no ranking), on windows cut from a dataset.

    python benchmarks/diagnostics/planner_spread.py MODEL.safetensors DATA.hdf5 [--windows 300] [--states 40 --samples 32]

1. One-step denoising: the true window noised to level k, then the planner's clean estimate
   clip((v_k - sqrt(1-abar_k) eps) / sqrt(abar_k)); RMS error of u_0 and of the states, per k.
   This is what the network learned, level by level, when it sees the true future.
2. The sampling chain (lambda 0, N = 1, the model file's g and w): RMS error of the sampled u_0
   against the data's u_0, and of x_1 (with the no-change guess x_1 = x_0 for scale).
3. Spread: `--samples` chains from each of `--states` start states. The RMS spread of u_0 among
   samples of one state (the behaviour policy's own spread is its noise floor, see
   action_error.py), and the RMS error of the per-state sample mean (compare behaviour cloning).

All errors are in normalized units ([-1, 1] per dimension). Runs on one core in about a minute.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from mpdiffuser.data.dataset import load_dataset
from mpdiffuser.export import bundle_from_model_file
from mpdiffuser.sampling.reference import ReferenceSampler


def windows(data, spec, count: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` random (x_0, window) pairs, normalized: x_0 [count, dx], window [count, H, dx + du]."""
    H = spec.model.horizon
    episodes = [e for e in data.episodes if len(e.actions) >= H]
    if not episodes:
        raise ValueError(f"no episode of the dataset is as long as the horizon H = {H}")
    x0, tau = [], []
    for _ in range(count):
        e = episodes[rng.integers(len(episodes))]
        t = int(rng.integers(len(e.actions) - H + 1))
        x0.append(spec.states.normalize(e.observations[t]))
        tau.append(np.concatenate([spec.states.normalize(e.observations[t + 1:t + H + 1]),
                                   spec.actions.normalize(e.actions[t:t + H])], axis=-1))
    return torch.tensor(np.array(x0), dtype=torch.float32), torch.tensor(np.array(tau), dtype=torch.float32)


def rms(a: torch.Tensor) -> float:
    return float(a.square().mean().sqrt())


@torch.no_grad()
def chain(sampler: ReferenceSampler, x0: torch.Tensor, cond: torch.Tensor, w: float, gen: torch.Generator) -> torch.Tensor:
    """Plain planner sampling (lambda 0) of one window per row of x0, with guidance w."""
    planner, K = sampler.bundle.planner, sampler.num_steps
    B = x0.shape[0]
    tau = torch.randn(B, sampler.horizon, sampler.dx + sampler.du, generator=gen)
    zero = torch.zeros_like(cond)
    for k in range(K, 0, -1):
        kk = torch.full((B,), k)
        eps = sampler.guided(planner, (tau, x0, cond, kk), (tau, x0, zero, kk), w)
        tau = sampler.posterior_mean(tau, eps, k)
        if k > 1:
            tau = tau + sampler._sigma[k - 1] * torch.randn(tau.shape, generator=gen)
    return tau


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_file")
    p.add_argument("data")
    p.add_argument("--windows", type=int, default=300, help="dataset windows for measurements 1 and 2")
    p.add_argument("--states", type=int, default=40, help="start states for measurement 3")
    p.add_argument("--samples", type=int, default=32, help="chains per start state for measurement 3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cost-limit", type=float, default=None,
                   help="cost-conditioned models: the episode cost limit to plan under (default: the data's "
                        "largest episode cost, as in action_error.py)")
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args()
    if min(args.windows, args.states) < 1 or args.samples < 2:
        p.error("--windows and --states must be >= 1 and --samples >= 2")

    torch.set_num_threads(1)
    bundle, defaults = bundle_from_model_file(args.model_file)
    spec, sampler = bundle.spec, ReferenceSampler(bundle)
    data = load_dataset(args.data)
    if (data.state_dim, data.action_dim) != (spec.state_dim, spec.action_dim):
        raise SystemExit(f"the dataset's dims ({data.state_dim}, {data.action_dim}) differ from the model's "
                         f"({spec.state_dim}, {spec.action_dim})")
    if spec.with_cost:
        if data.episodes[0].costs is None and args.cost_limit is None:
            raise SystemExit("the model is cost-conditioned and the dataset has no costs: pass --cost-limit")
        limit = args.cost_limit if args.cost_limit is not None else max(float(e.costs.sum()) for e in data.episodes)
        defaults = defaults.replace(cost_limit=limit)
    dx, K = spec.state_dim, spec.model.num_steps
    gen = torch.Generator().manual_seed(args.seed)
    x0, tau = windows(data, spec, args.windows, np.random.default_rng(args.seed))
    u0 = tau[:, 0, dx:]
    cond = torch.tensor(sampler.condition(defaults), dtype=torch.float32).expand(args.windows, -1)
    report: dict = {"model_file": args.model_file, "data": args.data, "guidance": defaults.guidance,
                    "return_target": defaults.return_target, "data_u0_std": rms(u0 - u0.mean(0))}

    print(f"1. one-step denoising of the true window noised to level k (K = {K}):")
    levels = sorted({1, 2, max(1, K // 4), max(1, K // 2), max(1, 3 * K // 4), K})
    report["one_step"] = []
    with torch.no_grad():
        for k in levels:
            v = sampler._sqrt_ab[k - 1] * tau + sampler._sqrt_1mab[k - 1] * torch.randn(tau.shape, generator=gen)
            eps = sampler.bundle.planner(v, x0, cond, torch.full((args.windows,), k))
            clean = sampler.clean_estimate(v, eps, k)
            row = {"k": k, "u0": rms(clean[:, 0, dx:] - u0), "states": rms(clean[..., :dx] - tau[..., :dx])}
            report["one_step"].append(row)
            print(f"   k = {k:3d}: u_0 error {row['u0']:.3f}, states error {row['states']:.3f}")

    sampled = chain(sampler, x0, cond, defaults.guidance, gen)
    report["chain"] = {"u0": rms(sampled[:, 0, dx:] - u0), "x1": rms(sampled[:, 0, :dx] - tau[:, 0, :dx]),
                       "x1_no_change": rms(x0 - tau[:, 0, :dx])}
    c = report["chain"]
    print(f"2. sampled windows: u_0 error {c['u0']:.3f} (the data's u_0 spread around its mean: "
          f"{report['data_u0_std']:.3f}); x_1 error {c['x1']:.3f} (guessing x_1 = x_0: {c['x1_no_change']:.3f})")

    S, M = min(args.states, args.windows), args.samples
    many = chain(sampler, x0[:S].repeat_interleave(M, 0), cond[:1].expand(S * M, -1), defaults.guidance, gen)
    us = many[:, 0, dx:].reshape(S, M, -1)
    report["spread"] = {"states": S, "samples": M, "within_state": rms(us - us.mean(1, keepdim=True)),
                        "mean_error": rms(us.mean(1) - u0[:S])}
    s = report["spread"]
    print(f"3. {M} samples from each of {S} states: u_0 spread within a state {s['within_state']:.3f}; "
          f"error of the per-state mean {s['mean_error']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
