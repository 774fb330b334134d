"""One rank of the DDP tests, launched by torchrun: trains a linear regression with the shared
loop and writes its weights and loss history to OUT/rank<r>.npz, with the names of the threads left after it leaves the process group.

usage: torchrun --nproc_per_node N ddp_worker.py OUT STEPS CHECKPOINT [CRASH_AT]
"""

import os
import sys

import numpy as np
import torch

from mpdiffuser.config import TrainConfig
from mpdiffuser.training.loop import train_loop
from mpdiffuser.training.runtime import from_environment, leave_process_group

W_TRUE = np.array([[2.0, -1.0, 0.5]], np.float32)


def main() -> None:
    out, steps, checkpoint = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    crash_at = int(sys.argv[4]) if len(sys.argv) > 4 else None
    torch.set_num_threads(1)
    runtime = from_environment("cpu")
    calls = {"n": 0}

    def sample(rng, batch):
        calls["n"] += 1
        if calls["n"] == crash_at:
            sys.exit(3)  # every rank dies at the same step, between checkpoints
        x = rng.normal(size=(batch, 3)).astype(np.float32)
        return {"x": x, "y": (x @ W_TRUE.T + 0.1 * rng.normal(size=(batch, 1))).astype(np.float32)}

    def loss(model, batch, gen):
        return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    config = TrainConfig(steps=steps, batch_size=32, learning_rate=0.1, weight_decay=0.0, checkpoint_every=10)
    ema, history = train_loop(model, loss, sample, config, checkpoint=checkpoint if checkpoint != "-" else None,
                              progress=False, runtime=runtime)
    leave_process_group()
    np.savez(f"{out}/rank{runtime.rank}.npz", history=np.array(history), weight=model.weight.detach().numpy(),
             ema=ema.weight.detach().numpy(), world=runtime.world_size, threads=np.array(_threads()))


def _threads() -> list[str]:
    """The names of this process's threads (gloo's are gloo_tcp_loop and pt_gloo_runloop)."""
    return sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))


if __name__ == "__main__":
    main()
