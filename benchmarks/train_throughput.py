"""Training throughput: steps/s of the planner and the dynamics model on one dataset, per device,
precision and torch.compile setting, with the same models, batch and data as `mpdiffuser train`.

    python benchmarks/train_throughput.py --data data/hopper-medium-s0.hdf5 \\
        --device cpu --precision fp32 bf16 --steps 300 --out benchmarks/results/train_cpu.json
    python benchmarks/train_throughput.py --data data/hopper-medium-s0.hdf5 --device cuda \\
        --batches host device --architecture unet --unet-dim 128 --unet-mults 1 4 8 --horizon 32 --batch-size 64

(data/hopper-medium-s0.hdf5: `mpdiffuser generate-data --env Hopper-v5 --kind medium --transitions 100000
--out data`, or the shipped demo data python/mpdiffuser/data/demo/hopper-medium-200k-20k.hdf5.)
--batches host draws each batch with NumPy and copies it over (the CPU default), device draws it
on the training device (the GPU default).

Each cell is one training run of `--warmup` + `--steps` steps; its loss log (one row every
`--warmup` steps) times the rows after the first (allocator, compile). Under torchrun the JSON records the
world size and the global steps/s (every rank's step is one global step).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from mpdiffuser.config import ARCHITECTURES, BATCHES, CAPTURE_MODES, PRECISION_NAMES, ModelConfig, TrainConfig
from mpdiffuser.data.dataset import load_dataset
from mpdiffuser.data.windows import WindowSampler
from mpdiffuser.models.bundle import BundleSpec
from mpdiffuser.recipes import recipe
from mpdiffuser.training.captured import capture_refusal
from mpdiffuser.training.log import LossLog, read_log
from mpdiffuser.training.loop import initialized, train_loop
from mpdiffuser.training.losses import DynamicsLoss, PlannerLoss
from mpdiffuser.training.runtime import from_environment, leave_process_group


def measure(spec: BundleSpec, data, name: str, runtime, batch_size: int, steps: int, warmup: int,
            workdir: Path) -> tuple[float, float]:
    """Steps/s of one model after `warmup` steps, and its standard error over the loss log's rows
    of one training run (warm-up row left out; on a GPU every row ends with a host sync)."""
    if steps % warmup:
        raise SystemExit(f"--steps {steps} must be a multiple of --warmup {warmup}")
    m = spec.model
    windows = WindowSampler(data, spec.states, spec.actions, m.horizon, spec.conditions)
    windows = windows.shard(runtime.rank, runtime.world_size)
    device_sample = windows.on_device(runtime.torch_device).sample if runtime.device_batches else None
    if name == "planner":
        loss, columns = PlannerLoss(m.num_steps, m.condition_dropout, 10.0, m.prediction), ["loss", "first_action_loss"]
    else:
        loss, columns = DynamicsLoss(m.num_steps, m.condition_dropout, m.prediction), ["loss"]
    model = initialized(lambda: spec.build(name), 0)
    tag = f"{name}-{runtime.precision}-{'compiled' if runtime.compile else 'eager'}-{runtime.batches}-{runtime.capture}"
    log = LossLog(workdir, tag, columns, tensorboard=False) if runtime.is_main else None
    config = TrainConfig(steps=warmup + steps, batch_size=batch_size, checkpoint_every=10**9)
    train_loop(model, loss, windows.sample, config, progress=False, log=log,
               runtime=dataclasses.replace(runtime, log_every=warmup), device_sample=device_sample)
    if not runtime.is_main:
        return float("nan"), float("nan")
    rates = np.array([r["steps_per_s"] for r in read_log(log.path)[1:]])
    return steps / float(np.sum(warmup / rates)), float(rates.std(ddof=1) / np.sqrt(len(rates)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=PRECISION_NAMES)
    p.add_argument("--capture", nargs="+", default=[CAPTURE_MODES[0]], choices=CAPTURE_MODES,
                   help="the step replayed as a CUDA graph where it can be (auto), or not")
    p.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on"])
    p.add_argument("--models", nargs="+", default=["planner", "dynamics"], choices=["planner", "dynamics"])
    p.add_argument("--recipe", default="default", choices=["default", "authors"])
    p.add_argument("--batches", nargs="+", default=["auto"], choices=BATCHES, help="where batches are drawn")
    p.add_argument("--architecture", default=None, choices=ARCHITECTURES, help="default: the recipe's")
    p.add_argument("--unet-dim", type=int, default=None)
    p.add_argument("--unet-mults", type=int, nargs="+", default=None)
    p.add_argument("--horizon", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--out", default=None)
    p.add_argument("--workdir", default="runs/bench/train", help="the runs' loss logs")
    a = p.parse_args()
    chosen = recipe(a.recipe)
    batch = a.batch_size or chosen.train.batch_size
    data = load_dataset(a.data)
    sizes = {k: v for k, v in (("architecture", a.architecture), ("unet_dim", a.unet_dim), ("horizon", a.horizon),
                               ("unet_mults", tuple(a.unet_mults) if a.unet_mults else None)) if v is not None}
    spec = BundleSpec.fit(data, [data], ModelConfig.sized_for(data.state_dim, data.action_dim,
                                                              **(dict(chosen.model) | sizes)))
    rows = []
    base = from_environment(a.device)
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for precision in a.precision:
        for compiled in a.compile:
            for batches, capture in [(b, c) for b in a.batches for c in a.capture]:
                runtime = from_environment(a.device, precision=precision, compile=compiled == "on", tensorboard=False,
                                           batches=batches, capture=capture)
                for name in a.models:
                    rate, stderr = measure(spec, data, name, runtime, batch, a.steps, a.warmup, workdir)
                    captured = capture_refusal(runtime, runtime.device_batches) is None
                    rows.append({"model": name, "precision": precision, "compile": compiled == "on",
                                 "batches": "device" if runtime.device_batches else "host", "captured": captured,
                                 "steps_per_s": rate, "steps_per_s_stderr": stderr, "samples_per_s": rate * batch})
                    if base.is_main:
                        print(f"{name:8s} {precision} compile={compiled:3s} batches={rows[-1]['batches']:6s} "
                              f"captured={captured!s:5s}: {rate:8.1f} +- {stderr:4.1f} steps/s "
                              f"({rate * batch:,.0f} windows/s)", flush=True)
    if base.is_main and a.out:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        device = (torch.cuda.get_device_name(base.torch_device) if base.torch_device.type == "cuda"
                  else platform.processor() or platform.machine())
        out = {"data": a.data, "recipe": a.recipe, "batch_size": batch, "device": base.device, "device_name": device,
               "threads": torch.get_num_threads(), "world_size": base.world_size, "torch": torch.__version__,
               "commit": commit, "steps": a.steps, "warmup": a.warmup, "model": spec.to_dict()["model"], "rows": rows}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=1))
        print(f"wrote {a.out}")
    if base.distributed:
        leave_process_group()


if __name__ == "__main__":
    main()
