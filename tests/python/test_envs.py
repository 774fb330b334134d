"""Changed physics and the cost-penalty wrapper of mpdiffuser.envs."""

from __future__ import annotations

import numpy as np
import pytest

from mpdiffuser.envs import CostPenalty, PhysicsChange, make_env


def test_physics_change_scales_the_model():
    nominal = make_env("Hopper-v5").unwrapped.model
    changed = make_env("Hopper-v5", physics=PhysicsChange(mass=2.0, friction=0.5, gear=0.25)).unwrapped.model
    np.testing.assert_allclose(changed.body_mass, 2.0 * nominal.body_mass)
    np.testing.assert_allclose(changed.body_inertia, 2.0 * nominal.body_inertia)
    np.testing.assert_allclose(changed.geom_friction[:, 0], 0.5 * nominal.geom_friction[:, 0])
    np.testing.assert_allclose(changed.geom_friction[:, 1:], nominal.geom_friction[:, 1:])
    np.testing.assert_allclose(changed.actuator_gear[:, 0], 0.25 * nominal.actuator_gear[:, 0])
    assert PhysicsChange(mass=1.5, gear=0.7).tag == "mass1.5-gear0.7" and PhysicsChange().tag == "nominal"
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive finite"):
            PhysicsChange(friction=bad)


def test_changed_physics_changes_the_motion_and_the_nominal_env_is_untouched():
    def trajectory(physics):
        env = make_env("Hopper-v5", physics=physics)
        obs, _ = env.reset(seed=3)
        for _ in range(20):
            obs, *_ = env.step(np.full(3, 0.8, np.float32))
        return obs

    nominal = trajectory(None)
    assert not np.allclose(trajectory(PhysicsChange(gear=0.3)), nominal, atol=1e-3)
    np.testing.assert_array_equal(trajectory(None), nominal)  # changes never leak into a fresh env


def test_cost_penalty_subtracts_the_velocity_cost():
    plain, penalized = make_env("Hopper-v5", constrained=True), CostPenalty(make_env("Hopper-v5", constrained=True), 2.5)
    plain.reset(seed=0), penalized.reset(seed=0)
    costs = 0.0
    for _ in range(60):
        action = np.ones(3, np.float32)  # a full push: the hopper lunges forward faster than 0.74 m/s
        _, r, term, _, info = plain.step(action)
        _, r_pen, _, _, info_pen = penalized.step(action)
        assert info["cost"] == info_pen["cost"] and r_pen == pytest.approx(r - 2.5 * info["cost"])
        costs += info["cost"]
        if term:
            break
    assert costs > 0  # the test saw a penalty


def test_physics_change_parses_the_command_line_form():
    assert PhysicsChange.parse("mass=3") == PhysicsChange(mass=3.0)
    assert PhysicsChange.parse(" gear=0.4, friction=0.5 ") == PhysicsChange(friction=0.5, gear=0.4)
    for bad, why in (("weight=2", "name=value"), ("mass", "name=value"), ("mass=heavy", "not a number"),
                     ("", "names no factor"), ("gear=0", "positive finite")):
        with pytest.raises(ValueError, match=why):
            PhysicsChange.parse(bad)


def test_halfcheetah_builds_without_mujoco_printing_a_warning(capfd):
    """gymnasium's HalfCheetah file uses a compiler attribute MuJoCo 4 deprecates: make_env drops
    that one warning (it printed once per episode), keeps the robot as it was (total mass 14), hands
    any other MuJoCo warning to Python's warnings, and restores the previous handler afterwards."""
    import mujoco

    from mpdiffuser.envs import _quiet_known_mujoco_warnings, make_env

    before = mujoco.get_mju_user_warning()
    env = make_env("HalfCheetah-v5")
    env.reset(seed=0)
    assert env.unwrapped.model.body_mass.sum() == pytest.approx(14.0)
    env.close()
    out, err = capfd.readouterr()
    assert "settotalmass" not in out + err
    assert mujoco.get_mju_user_warning() is before
    with _quiet_known_mujoco_warnings():
        handler = mujoco.get_mju_user_warning()
        handler("compiler attribute 'settotalmass' is deprecated and will be removed")  # dropped
        with pytest.warns(RuntimeWarning, match="MuJoCo: something else"):
            handler("something else")


def test_a_constrained_env_takes_its_velocity_limit():
    from mpdiffuser.envs import VELOCITY_LIMITS, make_env

    assert make_env("Ant-v5", constrained=True).limit == VELOCITY_LIMITS["Ant-v5"]
    assert make_env("Ant-v5", constrained=True, limit=1.0).limit == 1.0
    with pytest.raises(ValueError, match="constrained environments only"):
        make_env("Ant-v5", limit=1.0)
    with pytest.raises(ValueError, match="positive speed"):
        make_env("Ant-v5", constrained=True, limit=-1.0)


def test_environment_options_travel_in_the_robot_id():
    """generate-data --env-option: the options live in the id (keys sorted, values JSON), so data,
    bundle, model file and evaluation all make the same robot; file names get a digest of them."""
    from mpdiffuser.envs import (env_file_id, env_slug, make_env, parse_env_option, registered, split_env_id,
                                 with_env_options)

    env_id = with_env_options("Hopper-v5", {"reset_noise_scale": 0.01, "exclude_current_positions_from_observation": False})
    assert env_id == "Hopper-v5[exclude_current_positions_from_observation=false,reset_noise_scale=0.01]"
    assert split_env_id(env_id) == ("Hopper-v5", {"exclude_current_positions_from_observation": False,
                                                  "reset_noise_scale": 0.01})
    assert with_env_options(env_id, {}) == env_id and with_env_options("Hopper-v5", {}) == "Hopper-v5"
    assert parse_env_option("name=text") == ("name", "text") and parse_env_option("x=true") == ("x", True)
    assert registered(env_id) and make_env(env_id).observation_space.shape == (12,)
    assert env_slug(env_id).startswith("hopper-o") and env_slug("Hopper-v5") == "hopper"
    assert env_file_id("Hopper-v5") == "Hopper-v5" and env_file_id(env_id) != env_file_id("Hopper-v5[reset_noise_scale=0.01]")
    for bad, message in (("Hopper-v5[bogus=1]", "bogus"), ("Hopper-v5[x=1]]", "trailing"), ("Hopper-v5[=1]", "KEY=VALUE")):
        with pytest.raises(ValueError, match=message):
            make_env(bad)


def test_generate_train_and_eval_a_robot_made_with_options(tmp_path, capsys):
    from mpdiffuser import cli

    data = tmp_path / "data"
    assert cli.main(["generate-data", "--env", "Hopper-v5", "--env-option",
                     "exclude_current_positions_from_observation=false", "--kind", "random", "--transitions", "300",
                     "--out", str(data)]) == 0
    (path,) = data.glob("hopper-o*-random-s0.hdf5")
    bundle = tmp_path / "b"
    assert cli.main(["train", "--bundle", str(bundle), "--data", str(path), "--steps", "3", "--horizon", "4",
                     "--diffusion-steps", "3", "--width", "16", "--layers", "2"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--bundle", str(bundle), "--backend", "cpu", "--episodes", "1", "--max-steps", "5"]) == 0
    assert "Hopper-v5[exclude_current_positions_from_observation=false]" in capsys.readouterr().out
    assert cli.main(["train", "--bundle", str(tmp_path / "plain"), "--data", str(path), "--env", "Hopper-v5",
                     "--steps", "1"]) == 2  # 12 observations are not Hopper-v5's 11
    assert cli.main(["generate-data", "--env-option", "no-equals-sign", "--out", str(data)]) == 2
