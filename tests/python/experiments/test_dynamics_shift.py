"""The novel-dynamics experiment end to end on tiny settings (seconds; --quick takes minutes)."""

from __future__ import annotations

from mpdiffuser.data.dataset import load_dataset
from mpdiffuser.experiments.dynamics_shift import heldout_dynamics_loss
from mpdiffuser.envs import PhysicsChange
from tests.python.experiments.tiny import TINY


def test_dynamics_tiny_end_to_end_keeps_planner_and_ranker_byte_identical(tmp_path):
    from mpdiffuser.experiments.common import sha256
    from mpdiffuser.experiments.dynamics_shift import METHODS, DynamicsShiftConfig, run_dynamics_shift

    tiny = {k: v for k, v in TINY.items()}
    config = DynamicsShiftConfig.quick(shifts=(PhysicsChange(mass=1.5), PhysicsChange(gear=0.6)),
                                       out_dir=str(tmp_path / "out"), policy_dir=str(tmp_path / "policies"),
                                       shift_transitions=300, shift_random_transitions=200, finetune_steps=30, candidates=3,
                                       **tiny)
    report = run_dynamics_shift(config, progress=False)
    assert set(report["byte_identical"]) == {"mass1.5", "gear0.6"}
    for checks in report["byte_identical"].values():
        assert all(checks.values()) and checks["dynamics.pt changed"]
    models = tmp_path / "out" / "models"
    for name in ("planner.pt", "reward.pt"):
        assert sha256(models / "nominal" / name) == sha256(models / "mass1.5" / name)
    assert sha256(models / "nominal" / "dynamics.pt") != sha256(models / "mass1.5" / "dynamics.pt")
    robots = {(e["robot"], e["method"]) for e in report["summary"]}
    assert robots == {("nominal", METHODS[0]), ("nominal", METHODS[2])} | {(r, m) for r in ("mass1.5", "gear0.6")
                                                                          for m in METHODS}
    assert (tmp_path / "out" / "dynamics.png").stat().st_size > 5000
    from mpdiffuser.sampling.sampler import Sampler  # original and fine-tuned files plan with the experiment's N

    for robot in ("nominal", "mass1.5", "gear0.6"):
        assert Sampler(models / robot / "model.safetensors").defaults.num_candidates == 3
    heldout = load_dataset(tmp_path / "out" / "data" / "hopper-random-mass1.5-s1.hdf5")
    loss = heldout_dynamics_loss(models / "mass1.5", heldout)
    assert loss == heldout_dynamics_loss(models / "mass1.5", heldout) == report["heldout_dynamics_loss"]["mass1.5"]["fine-tuned"]
    for loss in report["heldout_dynamics_loss"].values():  # paired draws: two different models, finite losses
        assert 0 < loss["original"] < 10 and 0 < loss["fine-tuned"] < 10 and loss["original"] != loss["fine-tuned"]
    # The changed robots' data were generated under the changed physics, on the nominal policy.
    assert (tmp_path / "out" / "data" / "hopper-medium-mass1.5-s0.hdf5").exists()
    assert load_dataset(tmp_path / "out" / "data" / "hopper-medium-gear0.6-s0.hdf5").metadata["recipe"]["physics"]["gear"] == 0.6
