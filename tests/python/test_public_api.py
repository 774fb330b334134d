"""The documented surface: public names, and the README's commands matching CI's."""

from __future__ import annotations

import re
import subprocess
import sys

import mpdiffuser


def test_public_names_resolve():
    for name in mpdiffuser.__all__:
        assert getattr(mpdiffuser, name) is not None, name
    assert mpdiffuser.SamplerOptions().dynamics_weight == 1.0
    listed = dir(mpdiffuser)
    assert all(name in listed for name in mpdiffuser.__all__) and "Sampler" in listed


def test_import_does_not_load_torch():
    code = "import sys, mpdiffuser; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_readme_set_up_commands_match_ci(repo_root):
    readme = (repo_root / "README.md").read_text()
    block = re.search(r"## Set-up on a fresh machine.*?```bash\n(.*?)```", readme, re.S).group(1)
    install_and_demo, test_command = [line for line in block.strip().splitlines() if line.strip()]
    assert install_and_demo == "bash scripts/install.sh && .venv/bin/mpdiffuser demo"
    ci_commands = [line for line in (repo_root / ".ci" / "run").read_text().splitlines()
                   if line.strip() and not line.startswith("#")]
    assert ci_commands[-1] == test_command  # CI runs exactly the README's test command, last
    # CI installs with the README's script (plus its optional --baselines and --ray, so their tests run)
    installs = [c.split("#")[0].split() for c in ci_commands if c.startswith("bash scripts/install.sh")]
    assert installs and set(installs[0][2:]) <= {"--baselines", "--ray"}



def test_load_plans_from_a_model_file_or_a_bundle(tmp_path):
    import numpy as np
    import pytest

    import mpdiffuser as mpd
    from tests.python.conftest import TINY_MODEL, make_toy_dataset

    data = make_toy_dataset(seed=11)
    bundle = tmp_path / "bundle"
    mpd.BundleSpec.fit(data, [data], TINY_MODEL).save(bundle)
    for name in ("planner", "dynamics", "reward"):
        mpd.train_model(bundle, name, [data], mpd.TrainConfig(steps=5, batch_size=16, checkpoint_every=5),
                        progress=False)
    state = np.zeros(data.state_dim, np.float32)
    reference = mpd.load(bundle, "torch")
    native = mpd.load(bundle, "cpu", threads=1)  # exports BUNDLE/model.safetensors first
    assert isinstance(reference, mpd.ReferenceSampler) and isinstance(native, mpd.Sampler)
    assert native.model_file == bundle / "model.safetensors"
    a, b = native.plan(state, 0), reference.plan(state, 0)
    assert a.index == b.index and np.allclose(a.actions, b.actions, atol=1e-4)
    assert isinstance(mpd.load(native.model_file, "torch"), mpd.Sampler)
    with pytest.raises(FileNotFoundError, match="not a trained bundle"):
        mpd.load(tmp_path)
    with pytest.raises(ValueError, match="backend must be one of torch, cpu, cuda"):
        mpd.load(bundle, "gpu")
