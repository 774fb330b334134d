"""Closed-loop returns on a robot the package does not name: MPDiffuser (lambda = 1), the
planner-only sampler (lambda = 0) and behaviour cloning, trained on the same data, evaluated on
the same start seeds; raw returns (D4RL has no references for these robots).

    mpdiffuser generate-data --env InvertedDoublePendulum-v5 --kind medium --policy-steps 20000 \\
        --transitions 20000 --out data
    mpdiffuser generate-data --env InvertedDoublePendulum-v5 --kind random --transitions 10000 --out data
    python benchmarks/any_robot.py --data data/inverteddoublependulum-medium-s0.hdf5 \\
        --extra-data data/inverteddoublependulum-random-s0.hdf5 --out runs/anyrobot/idp.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

import mpdiffuser as mpd
from mpdiffuser.control.bc import BCPolicy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--extra-data", nargs="*", default=[])
    p.add_argument("--steps", type=int, default=5000, help="training steps of every model and of BC")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=1000, help="episode i starts from seed + i")
    p.add_argument("--bundle", default=None, help="default: next to --out")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    started = time.perf_counter()
    data = mpd.load_dataset(a.data)
    bundle_dir = a.bundle or str(Path(a.out).with_suffix("")) + "-bundle"
    bundle = mpd.fit(data, bundle_dir, extra_data=a.extra_data, steps=a.steps)
    sampler = mpd.load(bundle.export(), "cpu", threads=1)
    rows = {}
    for name, lam in (("MPDiffuser", 1.0), ("planner-only", 0.0)):
        policy = mpd.MPCPolicy(sampler, sampler.defaults.replace(dynamics_weight=lam))
        rows[name] = mpd.evaluate(policy, data.env_id, a.episodes, a.seed, progress=False)
    spec = mpd.ModelBundle.load(bundle_dir).spec
    bc, _ = BCPolicy.train(data, spec.states, spec.actions, mpd.TrainConfig(steps=a.steps), progress=False)
    rows["behaviour cloning"] = mpd.evaluate(bc, data.env_id, a.episodes, a.seed, progress=False)
    returns = data.returns()
    out = {"env_id": data.env_id, "data": a.data, "extra_data": a.extra_data, "steps": a.steps,
           "episodes": a.episodes, "seed": a.seed, "data_return_mean": float(returns.mean()),
           "data_return_stderr": float(returns.std(ddof=1) / np.sqrt(len(returns))),
           "methods": {n: {"return_mean": s.episode_return[0], "return_stderr": s.episode_return[1],
                           "length_mean": float(np.mean([e.length for e in s.episodes]))} for n, s in rows.items()},
           "machine": platform.processor() or platform.machine(), "seconds": time.perf_counter() - started,
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"{data.env_id}: data {out['data_return_mean']:.1f} +- {out['data_return_stderr']:.1f}")
    for name, r in out["methods"].items():
        print(f"  {name:18s} return {r['return_mean']:9.1f} +- {r['return_stderr']:.1f} "
              f"(length {r['length_mean']:.0f})")


if __name__ == "__main__":
    main()
