"""A fingerprint of what mpdiffuser computes, to show that a restructuring changed no behaviour.

Through the command line a user runs: trains a bundle on the shipped demo data (500 steps per
model), exports it, plans from it with every backend and a spread of options, and evaluates two
Hopper episodes. Prints JSON of SHA-256 digests of the trained weights, the plans (windows,
values, chosen index) and the episodes' returns; the same code before and after a change must
print the same JSON. Run with one thread so that the arithmetic is the same on every run:

    OMP_NUM_THREADS=1 python scripts/behaviour_fingerprint.py --out /tmp/fp > after.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def flat_tensors(obj, prefix=""):
    """(name, tensor) of every tensor in a nested checkpoint dict."""
    import torch

    if isinstance(obj, torch.Tensor):
        return [(prefix, obj.detach().cpu())]
    if isinstance(obj, dict):
        return [item for k, v in obj.items() for item in flat_tensors(v, f"{prefix}.{k}")]
    return []


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "mpdiffuser", "--quiet", *args], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="scratch directory (made empty first)")
    args = parser.parse_args()
    import shutil

    import torch
    from safetensors.numpy import load_file

    from mpdiffuser.data.dataset import load_dataset
    from mpdiffuser.demo import DEMO_DATA
    from mpdiffuser.sampling.sampler import Sampler

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    bundle = out / "bundle"
    cli("train", "--bundle", str(bundle), "--data", str(DEMO_DATA), "--steps", "500", "--batch-size", "64",
        "--seed", "3", "--no-tensorboard")
    report: dict = {"weights": {}}
    for name in ("planner", "dynamics", "reward"):
        state = torch.load(bundle / f"{name}.pt", map_location="cpu", weights_only=False)
        state = state.get("model", state) if isinstance(state, dict) else state
        report["weights"][name] = digest(*(v.numpy() for _, v in sorted(flat_tensors(state))))
    model_file = bundle / "model.safetensors"
    cli("export", "--bundle", str(bundle), "--out", str(model_file))
    tensors = load_file(str(model_file))
    report["model_file_tensors"] = digest(*(tensors[k] for k in sorted(tensors)))

    states = load_dataset(DEMO_DATA).episodes[0].observations[:3]
    plans = {}
    for backend in ("cpu", "torch"):
        sampler = Sampler(model_file, backend, threads=1)
        d = sampler.defaults
        for label, options in (("defaults", d), ("n8", d.replace(num_candidates=8)),
                               ("lambda.5-every2", d.replace(num_candidates=4, dynamics_weight=0.5, dynamics_every=2)),
                               ("planner-only-w1", d.replace(dynamics_weight=0.0, guidance=1.0, temperature=0.5)),
                               ("apl3-last5", d.replace(actions_per_plan=3, dynamics_last=5, dynamics_guidance=1.0))):
            results = [sampler.plan(s, 11 + i, options) for i, s in enumerate(states)]
            plans[f"{backend}/{label}"] = digest(*(np.round(r.windows, 4 if backend == "torch" else 7) for r in results),
                                                 *(np.round(r.actions, 4) for r in results),
                                                 np.array([r.index for r in results]))
        warm = sampler.plan(states[0], 1, d)
        warm2 = sampler.plan(states[1], 2, d.replace(warm_start_level=5), warm_start=warm.window)
        plans[f"{backend}/warm5"] = digest(np.round(warm2.windows, 4), np.round(warm2.actions, 4))
    report["plans"] = plans
    tuned = bundle / "tuned.safetensors"  # sampler flags through the CLI into the stored defaults
    cli("export", "--bundle", str(bundle), "--out", str(tuned), "--candidates", "4", "--temperature", "0.01",
        "--dynamics-every", "2", "--warm-start-level", "3", "--guidance", "1.5")
    report["tuned_defaults"] = {k: v for k, v in sorted(vars(Sampler(tuned, "cpu").defaults).items())}

    result_json = out / "eval.json"
    cli("eval", "--model-file", str(model_file), "--env", "Hopper-v5", "--backend", "cpu", "--episodes", "2",
        "--max-steps", "60", "--seed", "100", "--lambda", "0.5", "--candidates", "2", "--json", str(result_json))
    evaluation = json.loads(result_json.read_text())
    report["eval"] = {"returns": [round(e["episode_return"], 9) for e in evaluation["episodes"]],
                      "options": evaluation["options"]}
    print(json.dumps(report, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
