"""The README demo's pipeline on a tiny budget: the shipped dataset, training, export, both
controllers, the latency comparison and the results JSON."""

from __future__ import annotations

import json

from mpdiffuser.demo import DEMO_DATA, DemoConfig, run_demo


def test_demo_runs_end_to_end_on_the_shipped_data(tmp_path, capsys):
    assert DEMO_DATA.exists()  # packaged with mpdiffuser (data/demo/README.md says how it was made)
    config = DemoConfig(out_dir=str(tmp_path), random_transitions=300, train_steps=20, ranker_steps=10, episodes=1,
                        max_steps=5)
    report = run_demo(config, progress=False)
    out = capsys.readouterr().out
    assert "behaviour data" in out and "MPDiffuser (lambda=1)" in out and "planner only (lambda=0)" in out
    assert abs(report["data_score"] - 47.5) < 0.1
    assert report["options"]["num_candidates"] == 1 and report["options"]["temperature"] == 1e-3
    assert report["latency"]["threads"] >= 1 and report["latency"]["speedup"] > 0
    for result in report["results"].values():
        assert result["episodes"][0]["length"] == 5
    assert json.loads((tmp_path / "demo_results.json").read_text())["data_score"] == report["data_score"]
