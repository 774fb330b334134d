"""mpd.fit in a script (no terminal, no progress bar): progress, resume notices, final losses and
data warnings through logging; errors name Python parameters, not flags."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_fit_outside_a_terminal_logs_progress_resumes_and_warnings(tmp_path):
    script = textwrap.dedent(f"""
        import numpy as np
        import mpdiffuser as mpd
        from tests.python.conftest import make_toy_dataset
        data = make_toy_dataset(seed=5)
        for e in data.episodes:
            e.observations[:, 1] = 0.5  # a dimension that never changes: a data warning
        tiny = dict(horizon=4, diffusion_steps=3, width=16, layers=1, batch_size=8)
        mpd.fit(data, r"{tmp_path / 'b'}", device="cpu", steps=20, checkpoint_every=10, **tiny)
        mpd.fit(data, r"{tmp_path / 'b'}", device="cpu", steps=40, checkpoint_every=10, **tiny)
        try:
            mpd.fit(data, r"{tmp_path / 'b'}", device="cpu", steps=10, checkpoint_every=10, **tiny)
        except ValueError as exc:
            print("ERROR:", exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stderr
    assert "mpdiffuser: created bundle" in log
    assert "1 observation dimension(s) never change (1 = 0.5)" in log  # the data warning, as the CLI prints it
    assert "planner: step 10/20, loss" in log and "planner: step 30/40, loss" in log  # progress per checkpoint
    assert "planner: resuming from step 20 of 40" in log  # the second call continues the first
    assert "final loss" in log
    assert "past steps=10: give at least 40 steps to continue it, or force=True to start over" in done.stdout
    assert "--force" not in done.stdout and "--steps" not in done.stdout


def test_messages_name_settings_as_the_caller_gave_them():
    from mpdiffuser.logs import python_api, setting

    assert setting("steps", 1000) == "--steps 1000" and setting("force", True) == "--force"
    assert setting("checkpoint_every") == "--checkpoint-every"
    with python_api():
        assert setting("steps", 1000) == "steps=1000" and setting("force", True) == "force=True"
    assert setting("steps", 5) == "--steps 5"  # the context ends with the call
