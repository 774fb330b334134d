"""A goal-conditioned robot's plans with and without the desired goal kept fixed across the plan
window (BundleSpec.fixed_state_dims), from the same trained weights: the models of a scarce-data
experiment (`mpdiffuser experiment scarce`), each re-exported twice, evaluated as that experiment
evaluates them (MPDiffuser and planner-only, its test starts, 10 episodes). Writes JSON and prints
the success rates per number of expert episodes (mean +- standard error over seeds).

    .venv-fetch/bin/python benchmarks/goal_fixed.py --models runs/scarce-fetch/models --seeds 0 1 2 \\
        --out runs/goal-fixed/goal_fixed.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    from mpdiffuser.control.evaluate import evaluate
    from mpdiffuser.control.mpc import MPCPolicy
    from mpdiffuser.envs import goal_dims
    from mpdiffuser.experiments.common import machine, test_start
    from mpdiffuser.export import export_model
    from mpdiffuser.models.bundle import BundleSpec
    from mpdiffuser.results_json import write
    from mpdiffuser.sampling.sampler import Sampler

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, help="the scarce experiment's models folder (<out>/models)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--out", default="runs/goal-fixed/goal_fixed.json")
    a = p.parse_args()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    tasks = sorted(Path(a.models).iterdir(), key=lambda d: int(re.search(r"(\d+)ep$", d.name).group(1)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            n = int(re.search(r"(\d+)ep$", task.name).group(1))
            for seed in a.seeds:
                bundle = task / f"s{seed}"
                spec = BundleSpec.load(bundle)
                for fixed in (False, True):
                    copy = Path(tmp) / f"{task.name}-s{seed}-{fixed}"  # the experiment's bundle stays as it is
                    copy.mkdir()
                    for f in bundle.glob("*.pt"):
                        (copy / f.name).write_bytes(f.read_bytes())
                    dataclasses.replace(spec, fixed_state_dims=goal_dims(spec.env_id) if fixed else ()).save(copy)
                    path = export_model(copy, copy / "model.safetensors")
                    for lam, method in ((1.0, "MPDiffuser"), (0.0, "planner only")):
                        sampler = Sampler(path, "cpu", threads=1)
                        policy = MPCPolicy(sampler, sampler.defaults.replace(dynamics_weight=lam))
                        summary = evaluate(policy, spec.env_id, a.episodes, test_start(seed), None, progress=False)
                        rows.append({"task": task.name, "expert_episodes": n, "seed": seed, "goal_fixed": fixed,
                                     "method": method, "fixed_state_dims": list(goal_dims(spec.env_id) if fixed else ()),
                                     "success_rate": float(np.mean([e.success for e in summary.episodes]))})
                        print(json.dumps(rows[-1]), flush=True)
    write(a.out, {"experiment": "goal_fixed", "machine": machine(), "episodes": a.episodes, "rows": rows})
    print("| expert episodes | method | goal free | goal fixed |\n|---:|---|---:|---:|")
    for n in sorted({r["expert_episodes"] for r in rows}):
        for method in ("MPDiffuser", "planner only"):
            cells = []
            for fixed in (False, True):
                v = 100 * np.array([r["success_rate"] for r in rows if r["expert_episodes"] == n
                                    and r["method"] == method and r["goal_fixed"] == fixed])
                err = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
                cells.append(f"{v.mean():.1f} ± {err:.1f}")
            print(f"| {n} | {method} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
