"""mpdiffuser plot: one PNG per model of a bundle from its loss logs, validation panels included."""

from __future__ import annotations

import csv

from mpdiffuser import cli


def test_plot_writes_one_png_per_model_log(toy_bundle, tmp_path, capsys):
    directory, _ = toy_bundle
    out = tmp_path / "plots"
    assert cli.main(["plot", str(directory), "--out", str(out)]) == 0
    logs = sorted(p.stem for p in (directory / "logs").glob("*.csv"))
    assert logs and sorted(p.stem for p in out.glob("*.png")) == logs
    assert all(p.stat().st_size > 5000 for p in out.glob("*.png"))
    assert capsys.readouterr().out.count("wrote ") == len(logs)


def test_plot_draws_validation_when_the_run_validated(tmp_path):
    from mpdiffuser.training.plot import plot_training

    logs = tmp_path / "bundle" / "logs"
    logs.mkdir(parents=True)
    with open(logs / "planner.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "first_action_loss", "val_loss", "steps_per_s"])
        for step in range(50, 501, 50):
            writer.writerow([step, 1.0 / step, 2.0 / step, "" if step % 100 else 1.5 / step, 200])
    (png,) = plot_training(tmp_path / "bundle")
    assert png == tmp_path / "bundle" / "plots" / "planner.png" and png.stat().st_size > 5000


def test_plot_of_a_directory_without_logs_is_one_line(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "has no training logs" in err and err.count("\n") == 1
