"""docs/tutorial.md runs: every Python block, in order, in one namespace, on a toy Hopper dataset
in the reader's place of their own file, with MPD_TUTORIAL_QUICK=1 (tiny models, few steps)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.python.conftest import make_toy_dataset


def test_the_tutorial_runs(tmp_path, monkeypatch, capsys):
    page = (Path(__file__).parents[2] / "docs" / "tutorial.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) == 4
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPD_TUTORIAL_QUICK", "1")
    make_toy_dataset(seed=12, episodes=16, env_id=None, state_dim=11, action_dim=3).save_hdf5("my_robot.hdf5")
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/tutorial.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "my_robot.hdf5: Hopper-v5, 16 episodes" in out and "D4RL score" in out
    assert "runs/my_robot/model.safetensors" in out and "return target" in out and "late ticks" in out
    assert (tmp_path / "runs" / "my_robot" / "model.safetensors").exists()
