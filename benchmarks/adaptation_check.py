"""Why fine-tuning the dynamics model alone does not pay (docs/results.md, "Novel dynamics"): two
checks on the output folder of `mpdiffuser experiment dynamics`, seeds 0 1 2.

1. Dynamics guidance: original and fine-tuned models on each of the experiment's changed robots at
   every w_d of --dynamics-guidance (the experiment plans at the model file's w_d, 2), on the
   experiment's own start states (10000 (seed + 1) on), 5 episodes.
2. Held-out dynamics loss on behaviour-policy windows the fine-tuning never saw: the next seed's
   rollouts of the same policy, on the changed robot and on the nominal one. The experiment's own
   held-out loss is on random-action data.

    python benchmarks/adaptation_check.py --out runs/dynamics-hopper-eps --json check.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the dynamics experiment's output folder")
    parser.add_argument("--dynamics-guidance", type=float, nargs="+", default=[2.0, 1.0])
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--json", default=None, help="write every row here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.data.generate import GenerateConfig
    from mpdiffuser.envs import PhysicsChange
    from mpdiffuser.experiments.dynamics_shift import heldout_dynamics_loss
    from mpdiffuser.sampling.sampler import Sampler

    root, seeds = Path(args.out), (0, 1, 2)
    spec = json.loads((root / "dynamics.json").read_text())["config"]
    shifts = [PhysicsChange(**shift) for shift in spec["shifts"]]  # the experiment's changed robots
    env_id = spec["env_id"]
    data = root / "data"

    def rollouts(seed: int, physics=None) -> str:
        """The file of the behaviour policy's rollouts for training seed `seed`, as the experiment named it."""
        return GenerateConfig(env_id, "medium", spec["task_transitions"], spec["policy_steps"], seed=seed,
                              policy_seed=spec["policy_seed"], physics=physics).name + ".hdf5"

    rows = []
    for seed in seeds:
        models = root / "models" / f"s{seed}"
        base = Sampler(models / "nominal" / "model.safetensors", "cpu", threads=1, env_id=env_id)
        held = seeds[(seeds.index(seed) + 1) % len(seeds)]  # the next seed's rollouts: never fine-tuned on
        for physics in shifts:
            robot = physics.tag
            tuned = Sampler(models / robot / "model.safetensors", "cpu", threads=1, env_id=env_id)
            for model, sampler in (("original", base), ("fine-tuned", tuned)):
                for w_d in args.dynamics_guidance:
                    policy = MPCPolicy(sampler, sampler.defaults.replace(dynamics_guidance=w_d))
                    summary = evaluate(policy, env_id, args.episodes, 10_000 * (seed + 1), 1000, progress=False,
                                       physics=physics)
                    rows.append({"check": "dynamics guidance", "seed": seed, "robot": robot, "model": model,
                                 "dynamics_guidance": w_d, "score": summary.score[0]})
                    print(rows[-1], flush=True)
            for where, file in ((robot, rollouts(held, physics)), ("nominal", rollouts(held))):
                windows = load_dataset(data / file)
                rows.append({"check": "held-out loss on policy data", "seed": seed, "robot": robot,
                             "data": f"{where} ({file})",
                             "original": heldout_dynamics_loss(models / "nominal", windows),
                             "fine-tuned": heldout_dynamics_loss(models / robot, windows)})
                print(rows[-1], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
