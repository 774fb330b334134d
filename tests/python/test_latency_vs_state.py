"""benchmarks/latency_vs_state.py on a tiny budget: a row per robot size and family, the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_the_latency_table_covers_every_size_and_family(tmp_path, repo_root):
    out = tmp_path / "lvs.json"
    done = subprocess.run([sys.executable, str(repo_root / "benchmarks" / "latency_vs_state.py"), "--plans", "1",
                           "--out", str(out)], capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"},
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(r["state_dim"], r["architecture"], r["weights"]) for r in rows} == {
        (d, a, w) for d in (11, 17, 27, 31, 348) for a in ("mlp", "unet") for w in ("float32", "bf16")}
    humanoid = {(r["architecture"], r["weights"]): r for r in rows if r["state_dim"] == 348}
    assert humanoid["mlp", "float32"]["width"] == 512
    assert humanoid["mlp", "float32"]["file_mb"] > 3 * humanoid["unet", "float32"]["file_mb"]
    assert humanoid["mlp", "bf16"]["file_mb"] < 0.55 * humanoid["mlp", "float32"]["file_mb"]
    assert all(r["cold"]["p50_ms"] > 0 and r["warm"]["p50_ms"] > 0 for r in rows)
    assert all(("cold_fast" in r) == (r["weights"] == "bf16") for r in rows)  # bf16 files in the fast mode too
    assert done.stdout.count("\n| ") >= 20
