"""The CLI pipeline as a user runs it: generate-data, train, eval, on a tiny Hopper setting."""

from __future__ import annotations

import json

import pytest
import torch

from mpdiffuser import cli


@pytest.mark.parametrize("command", ["generate-data", "train", "eval", "export", "bench", "demo", "info"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: mpdiffuser {command}" in capsys.readouterr().out


def test_generate_train_eval(tmp_path, capsys):
    data_dir, bundle = tmp_path / "data", tmp_path / "bundle"
    assert cli.main(["generate-data", "--env", "Hopper-v5", "--kind", "random", "--transitions", "800",
                     "--out", str(data_dir)]) == 0
    path = data_dir / "hopper-random-s0.hdf5"
    assert path.exists() and "800 transitions" in capsys.readouterr().out
    assert cli.main(["train", "--bundle", str(bundle), "--data", str(path), "--steps", "20", "--batch-size", "32",
                     "--horizon", "4", "--diffusion-steps", "3", "--width", "32", "--layers", "2",
                     "--action-weight", "10"]) == 0
    out = capsys.readouterr().out
    for name in ("planner", "dynamics", "reward"):
        assert f"{name}: 20 steps" in out and (bundle / f"{name}.pt").exists()
    info = torch.load(bundle / "planner.pt", weights_only=False)["info"]
    assert info["train_config"]["action_weight"] == 10.0
    report_path = tmp_path / "eval.json"
    assert cli.main(["eval", "--bundle", str(bundle), "--env", "Hopper-v5", "--episodes", "1", "--max-steps", "5",
                     "--candidates", "4", "--lambda", "0.5", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["env_id"] == "Hopper-v5" and 1 <= report["episodes"][0]["length"] <= 5
    assert report["latency"]["plans"] == report["episodes"][0]["length"]
    assert cli.main(["eval", "--bundle", str(bundle), "--env", "Walker2d-v5", "--episodes", "1"]) == 2
    assert "mpdiffuser eval: error:" in capsys.readouterr().err

    # Export, then control with the native CPU backend: the same episode as the reference within
    # float tolerance, so the same length and nearly the same return over 5 steps.
    model_file = tmp_path / "model.safetensors"
    assert cli.main(["export", "--bundle", str(bundle), "--out", str(model_file), "--candidates", "4"]) == 0
    assert model_file.exists() and "wrote" in capsys.readouterr().out
    native_path = tmp_path / "eval-native.json"
    assert cli.main(["eval", "--model-file", str(model_file), "--backend", "cpu", "--env", "Hopper-v5", "--episodes",
                     "1", "--max-steps", "5", "--candidates", "4", "--lambda", "0.5", "--json", str(native_path)]) == 0
    native = json.loads(native_path.read_text())
    assert native["backend"] == "cpu"
    assert native["episodes"][0]["length"] == report["episodes"][0]["length"]
    assert native["return_mean"] == pytest.approx(report["return_mean"], rel=1e-3, abs=1e-3)
    assert cli.main(["eval", "--bundle", str(bundle), "--model-file", str(model_file)]) == 2
    assert "exactly one of --bundle and --model-file" in capsys.readouterr().err
    assert cli.main(["eval", "--model-file", str(model_file), "--backend", "cpu", "--env", "Walker2d-v5"]) == 2
    assert "not Walker2d-v5" in capsys.readouterr().err

    # Plan consistency of the same file: one row per lambda, as many plans as the robot took steps.
    consistency_path = tmp_path / "consistency.json"
    assert cli.main(["consistency", str(model_file), "--max-steps", "6", "--lambdas", "1", "0", "0.5",
                     "--threads", "1", "--json", str(consistency_path)]) == 0
    consistency = json.loads(consistency_path.read_text())
    assert consistency["env_id"] == "Hopper-v5" and list(consistency["lambdas"]) == ["1", "0", "0.5"]
    assert all(m["plans"] == consistency["states"] == sum(consistency["steps"]) for m in consistency["lambdas"].values())
    assert "x_1 error" in capsys.readouterr().out
    assert cli.main(["consistency", "--model-file", str(model_file), "--max-steps", "2", "--lambdas", "1",
                     "--threads", "1"]) == 0  # --model-file, like the other commands
    assert cli.main(["consistency"]) == 2
    assert "give the model file once" in capsys.readouterr().err
    assert cli.main(["consistency", str(model_file), "--lambdas", "1.5"]) == 2
    assert "lambdas" in capsys.readouterr().err
    assert cli.main(["consistency", str(model_file), "--physics", "mass=heavy"]) == 2
    assert "not a number" in capsys.readouterr().err
    assert cli.main(["consistency", str(model_file), "--max-steps", "2", "--physics", "gear=0.5", "--threads", "1",
                     "--json", str(consistency_path)]) == 0
    assert json.loads(consistency_path.read_text())["physics"] == "gear0.5"


def test_bench_writes_a_ratio_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--candidates", "1", "4", "--iters", "3", "--threads", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [r["num_candidates"] for r in result["rows"]] == [1, 4]
    for row in result["rows"]:
        assert row["cpu_ms_p50"] > 0 and row["torch_ms_p50"] > 0
        assert row["speedup"] == pytest.approx(row["torch_ms_p50"] / row["cpu_ms_p50"])
        assert row["gflop_per_plan"] > 0
    assert result["matmul_gflops"] > 1 and result["machine"]["cores"] >= 1
    assert "speedup" in text and "matmul rate" in text
    assert cli.main(["bench", "--candidates", "1", "--iters", "3", "--threads", "1", "--warm-start-level", "5",
                     "--out", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert 0 < row["cpu_warm_ms_p50"] < row["cpu_ms_p50"]  # 5 of the 20 steps
    assert "warm k_w=5" in capsys.readouterr().out


def test_bench_times_the_unet_family(tmp_path, capsys, monkeypatch):
    """Without --model-file, --architecture unet benchmarks a default-size random-weight U-Net."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--architecture", "unet", "--candidates", "1", "--iters", "2", "--threads", "1",
                     "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["model"]["architecture"] == "unet" and result["model"]["unet_dim"] == 32
    assert result["rows"][0]["cpu_ms_p50"] > 0 and result["rows"][0]["gflop_per_plan"] > 0.1  # 20x the mlp's
    assert "unet family" in capsys.readouterr().out


def test_bench_cuda_says_what_is_missing_without_a_gpu(tmp_path, capsys, monkeypatch):
    """bench --backend cuda on a machine without a visible GPU: one line, exit 2, nothing written."""
    import torch

    from mpdiffuser import _core

    if torch.cuda.is_available() and _core.cuda_device_available():
        pytest.skip("a CUDA device is visible: test_bench_cuda_times_both_families runs instead")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--backend", "cuda", "--candidates", "1", "--iters", "2", "--out", str(out)]) == 2
    assert "bench --backend cuda needs a CUDA device" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("architecture", ["mlp", "unet"])
def test_bench_cuda_times_both_families(tmp_path, capsys, architecture):
    """On a GPU: the CUDA backend against the reference eager and as a CUDA graph, cold and
    warm-started, for both families; the windows of one seed within float32 rounding of the
    reference's."""
    import torch

    from mpdiffuser import _core
    from mpdiffuser.bench import synthetic_model_file
    from mpdiffuser.config import ModelConfig

    if not (torch.cuda.is_available() and _core.cuda_device_available()):
        pytest.skip("no CUDA device")
    model = ModelConfig(architecture=architecture, horizon=8, num_steps=5, width=64, unet_dim=8, unet_mults=(1, 2),
                        unet_embed_dim=8)
    path = synthetic_model_file(tmp_path / "m.safetensors", model=model)
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--backend", "cuda", "--model-file", str(path), "--candidates", "1", "16",
                     "--iters", "5", "--warm-start-level", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["num_candidates"] for r in result["rows"]] == [1, 16]
    for row in result["rows"]:
        assert row["torch_eager_ms_p50"] > 0 and row["torch_graph_ms_p50"] > 0
        assert row["cuda_ms_p50"] > 0 and row["cuda_warm_ms_p50"] > 0
        assert row["max_abs_window_diff_vs_reference"] < 1e-3  # float32 rounding (tests/cpp/cuda_plan_test.cpp)
    assert result["native"] == "cuda"
    assert "torch graph" in capsys.readouterr().out


def test_train_sizes_new_bundles_by_the_window(tmp_path, capsys):
    """Without --width a Walker2d bundle (window 16 x 23 = 368) gets 512-wide networks; --width wins."""
    data_dir = tmp_path / "data"
    assert cli.main(["generate-data", "--env", "Walker2d-v5", "--kind", "random", "--transitions", "300",
                     "--out", str(data_dir)]) == 0
    path = str(data_dir / "walker2d-random-s0.hdf5")
    for extra, width in (([], 512), (["--horizon", "8"], 256), (["--width", "64"], 64)):
        bundle = tmp_path / f"bundle-{width}"
        assert cli.main(["train", "--bundle", str(bundle), "--data", path, "--model", "reward", "--steps", "1",
                         "--batch-size", "8", *extra]) == 0
        assert json.loads((bundle / "bundle.json").read_text())["model"]["width"] == width
    capsys.readouterr()


def test_recipes_and_file_defaults_reach_the_controller(tmp_path, capsys):
    """`train --recipe authors` stores the authors' model config and sampler defaults; export and
    `eval --model-file` use the file's defaults unless a flag is given, and the JSON says which."""
    data_dir = tmp_path / "data"
    assert cli.main(["generate-data", "--env", "Hopper-v5", "--kind", "random", "--transitions", "400",
                     "--out", str(data_dir)]) == 0
    path = str(data_dir / "hopper-random-s0.hdf5")
    bundle = tmp_path / "authors"
    assert cli.main(["train", "--bundle", str(bundle), "--data", path, "--recipe", "authors", "--steps", "3",
                     "--batch-size", "8", "--horizon", "4", "--diffusion-steps", "6", "--width", "16",
                     "--layers", "1"]) == 0
    stored = json.loads((bundle / "bundle.json").read_text())
    assert stored["model"]["prediction"] == "epsilon" and stored["model"]["normalizer"] == "cdf"
    assert stored["model"]["num_steps"] == 6 and stored["states"]["kind"] == "cdf"  # the flag beat the recipe's 100
    assert stored["sampler_defaults"]["temperature"] == 1e-3 and stored["sampler_defaults"]["guidance"] == 2.0
    info = torch.load(bundle / "planner.pt", weights_only=True)["info"]["train_config"]
    assert (info["batch_size"], info["learning_rate"], info["ema_every"], info["action_weight"]) == (8, 2e-4, 10, 10.0)
    model_file = tmp_path / "authors.safetensors"
    assert cli.main(["export", "--bundle", str(bundle), "--out", str(model_file)]) == 0
    report_path = tmp_path / "eval.json"
    assert cli.main(["eval", "--model-file", str(model_file), "--backend", "cpu", "--episodes", "1",
                     "--max-steps", "3", "--warm-start-level", "2", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    options = report["options"]
    assert options["num_candidates"] == 1 and options["temperature"] == 1e-3 and options["return_target"] == 1.1
    assert options["warm_start_level"] == 2 and report["model_file"] == str(model_file) and report["seed"] == 0
    default = tmp_path / "default"
    assert cli.main(["train", "--bundle", str(default), "--data", path, "--model", "planner", "--steps", "2",
                     "--batch-size", "8", "--horizon", "4", "--width", "16", "--layers", "1"]) == 0
    stored = json.loads((default / "bundle.json").read_text())["model"]
    assert (stored["prediction"], stored["return_condition"], stored["normalizer"]) == ("sample", "authors", "minmax")
    capsys.readouterr()


def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    """No traceback for a user's mistake: `mpdiffuser <command>: error: ...` naming what is wrong."""
    text = tmp_path / "notes.hdf5"
    text.write_text("not hdf5")
    assert cli.main(["train", "--bundle", str(tmp_path / "b"), "--data", str(text)]) == 2
    assert f"mpdiffuser train: error: {text} is not a readable HDF5 file" in capsys.readouterr().err
    assert cli.main(["train", "--bundle", str(tmp_path / "b2"), "--data", str(text), "--steps", "-1"]) == 2
    assert "steps must be an integer >= 1, got -1" in capsys.readouterr().err
    assert not (tmp_path / "b2").exists()  # nothing written before the check
    assert cli.main(["eval", "--model-file", str(tmp_path / "none.safetensors"), "--backend", "cpu"]) == 2
    assert "no model file at" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        cli.main(["--debug", "eval", "--model-file", str(tmp_path / "none.safetensors"), "--backend", "cpu"])
    with pytest.raises(SystemExit) as version:
        cli.main(["--version"])
    assert version.value.code == 0 and "mpdiffuser " in capsys.readouterr().out


def test_train_continues_forces_and_checks_its_options(tmp_path, capsys):
    """Re-running train: nothing to do says so, more --steps continue, --force starts over, model
    flags that contradict an existing bundle fail, a missing GPU is one line with exit code 2."""
    from tests.python.conftest import make_toy_dataset

    data = tmp_path / "toy.hdf5"
    make_toy_dataset(seed=1, env_id="Hopper-v5", state_dim=11, action_dim=3).save_hdf5(data)
    bundle = tmp_path / "b"
    base = ["train", "--bundle", str(bundle), "--data", str(data), "--model", "reward", "--horizon", "4",
            "--diffusion-steps", "3", "--width", "32", "--layers", "2", "--device", "cpu", "--batch-size", "16"]
    assert cli.main(base + ["--steps", "10"]) == 0
    assert "reward: 10 steps" in capsys.readouterr().out
    assert cli.main(base + ["--steps", "10"]) == 0
    assert "reward: already trained for 10 steps" in capsys.readouterr().out
    assert cli.main(base + ["--steps", "20"]) == 0
    out = capsys.readouterr().out
    assert "reward: 20 steps" in out and str(bundle / "logs" / "reward.csv") in out
    assert cli.main(base + ["--steps", "10"]) == 2
    assert "at step 20, past --steps 10" in capsys.readouterr().err
    assert cli.main(base + ["--steps", "10", "--force"]) == 0
    assert "reward: 10 steps" in capsys.readouterr().out
    assert cli.main(base[:-4] + ["--horizon", "8", "--steps", "10"]) == 2
    assert "exists with other model settings (horizon 4 != 8)" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli.main(base + ["--steps", "10", "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert "mpdiffuser train: error: --device cuda: torch" in err and "sees no CUDA device" in err
    assert cli.main(["train", "--bundle", str(bundle), "--data", str(data), "--log-every", "0"]) == 2
    assert "log_every must be >= 1" in capsys.readouterr().err


def test_train_exports_snapshots_that_equal_shorter_runs(tmp_path, capsys):
    """--export-at writes one model file per length, with planner and dynamics at that many steps:
    the same weights as a bundle trained to that length alone; the final models reach --steps."""
    from safetensors.numpy import load_file

    data_dir = tmp_path / "data"
    assert cli.main(["generate-data", "--kind", "random", "--transitions", "600", "--out", str(data_dir)]) == 0
    path = str(data_dir / "hopper-random-s0.hdf5")
    tiny = ["--data", path, "--batch-size", "16", "--horizon", "4", "--diffusion-steps", "3", "--width", "16",
            "--layers", "1", "--no-tensorboard"]
    assert cli.main(["train", "--bundle", str(tmp_path / "b"), "--steps", "30", "--export-at", "20", "10", *tiny]) == 0
    printed = capsys.readouterr().out
    assert "planner and dynamics at 10 steps" in printed and "planner and dynamics at 20 steps" in printed
    assert cli.main(["train", "--bundle", str(tmp_path / "b20"), "--steps", "20", *tiny]) == 0
    assert cli.main(["export", "--bundle", str(tmp_path / "b20"), "--out", str(tmp_path / "b20.safetensors")]) == 0
    snapshot, alone = load_file(str(tmp_path / "b" / "model-20.safetensors")), load_file(str(tmp_path / "b20.safetensors"))
    diffusion = [k for k in alone if k.startswith(("planner", "dynamics"))]
    assert diffusion and all((snapshot[k] == alone[k]).all() for k in diffusion)
    ranker = [k for k in alone if k.startswith("reward")]  # trained the full 30 steps in the snapshot
    assert ranker and not all((snapshot[k] == alone[k]).all() for k in ranker)
    final = torch.load(tmp_path / "b" / "checkpoints" / "planner.train.ckpt", weights_only=True)
    assert final["step"] == 30
    assert cli.main(["train", "--bundle", str(tmp_path / "c"), "--steps", "30", "--export-at", "40", *tiny]) == 2
    assert "within 1..30" in capsys.readouterr().err
    assert cli.main(["train", "--bundle", str(tmp_path / "b"), "--model", "planner", "--export-at", "10", *tiny]) == 2
    assert "needs --model all" in capsys.readouterr().err
