"""Training under torchrun with DistributedDataParallel, on the CPU (gloo, 2 processes): the ranks
stay in sync, the loss falls as in one process, an interrupted run resumes to the uninterrupted
result, and the CLI runs as `torchrun -m mpdiffuser train`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.python.conftest import make_toy_dataset

WORKER = Path(__file__).with_name("ddp_worker.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = pytest.mark.skipif(not TORCHRUN.exists() or not torch.distributed.is_gloo_available(),
                                reason="torchrun or gloo missing")


def _torchrun(nproc: int, *args, check: bool = True) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[3])}
    done = subprocess.run([str(TORCHRUN), "--standalone", f"--nproc_per_node={nproc}", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _ranks(out: Path, world: int) -> list[dict]:
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(world)]


def test_two_ranks_stay_in_sync_and_learn_like_one(tmp_path):
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    _torchrun(2, WORKER, tmp_path / "two", 100, "-")
    _torchrun(1, WORKER, tmp_path / "one", 100, "-")
    two, one = _ranks(tmp_path / "two", 2), _ranks(tmp_path / "one", 1)[0]
    assert int(two[0]["world"]) == 2
    # DDP averages the gradients: both ranks hold the same weights, bit for bit, and one history
    # (the loss averaged over the ranks).
    np.testing.assert_array_equal(two[0]["weight"], two[1]["weight"])
    np.testing.assert_array_equal(two[0]["ema"], two[1]["ema"])
    np.testing.assert_array_equal(two[0]["history"], two[1]["history"])
    h2, h1 = two[0]["history"], one["history"]
    assert h2.mean(where=np.arange(100) >= 90) < 0.05 * h2[:5].mean()  # the loss falls by 20x and more
    # The same global batch (32 = 2 x 16) and learning rate: the curves agree to the data's noise.
    assert abs(h2[-10:].mean() - h1[-10:].mean()) < 0.02
    np.testing.assert_allclose(two[0]["weight"], [[2.0, -1.0, 0.5]], atol=0.1)


def test_leaving_the_process_group_joins_gloos_threads(tmp_path):
    # A group still alive at interpreter exit aborted ranks by chance (a gloo thread releasing the
    # last collective's tensors asks for the GIL during finalization; SIGABRT, 'terminate called
    # without an active exception'). After leave_process_group no gloo thread may be left, even
    # though DistributedDataParallel imported torch.distributed.nn, whose defaults used to pin it.
    _torchrun(2, WORKER, tmp_path, 20, "-")
    for r, rank in enumerate(_ranks(tmp_path, 2)):
        threads = [str(t) for t in rank["threads"]]
        assert not [t for t in threads if "gloo" in t], f"rank {r} still runs {threads}"


def test_interrupted_two_rank_run_resumes_to_the_uninterrupted_result(tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    full.mkdir()
    resumed.mkdir()
    _torchrun(2, WORKER, full, 40, tmp_path / "full.ckpt")
    crashed = _torchrun(2, WORKER, resumed, 40, tmp_path / "run.ckpt", 25, check=False)
    assert crashed.returncode != 0 and torch.load(tmp_path / "run.ckpt", weights_only=True)["step"] == 20
    _torchrun(2, WORKER, resumed, 40, tmp_path / "run.ckpt")
    a, b = _ranks(full, 2), _ranks(resumed, 2)
    for r in range(2):
        np.testing.assert_array_equal(a[r]["weight"], b[r]["weight"])
        np.testing.assert_array_equal(a[r]["history"], b[r]["history"])
    alone = _torchrun(1, WORKER, resumed, 60, tmp_path / "run.ckpt", check=False)
    assert alone.returncode != 0
    assert "made by 2 process(es), this run has 1" in alone.stderr + alone.stdout


def test_torchrun_cli_trains_a_bundle_and_checks_the_batch(tmp_path):
    data = tmp_path / "toy.hdf5"
    make_toy_dataset(seed=1, env_id="Hopper-v5", state_dim=11, action_dim=3).save_hdf5(data)
    bundle = tmp_path / "bundle"
    common = ["-m", "mpdiffuser", "train", "--bundle", bundle, "--data", data, "--model", "planner", "--device",
              "cpu", "--horizon", "4", "--diffusion-steps", "3", "--width", "32", "--layers", "2", "--log-every", "5"]
    bad = _torchrun(2, *common, "--steps", "10", "--batch-size", "15", check=False)
    assert bad.returncode != 0
    assert ("mpdiffuser train: error: the batch size 15 is not divisible by the world size 2"
            in bad.stderr)
    done = _torchrun(2, *common, "--steps", "20", "--batch-size", "16")
    assert "training on cpu x 2 process(es)" in done.stdout and done.stdout.count("planner: 20 steps") == 1
    assert (bundle / "planner.pt").exists()
    rows = (bundle / "logs" / "planner.csv").read_text().splitlines()
    assert rows[0] == "step,loss,first_action_loss,steps_per_s" and len(rows) == 1 + 4
    again = _torchrun(2, *common, "--steps", "20", "--batch-size", "16")
    assert "planner: already trained for 20 steps" in again.stdout and "nothing to do" in again.stdout
