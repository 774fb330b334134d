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
    # CI installs with the README's script (plus its optional --baselines, so their tests run)
    installs = [c.split("#")[0].split() for c in ci_commands if c.startswith("bash scripts/install.sh")]
    assert installs and set(installs[0][2:]) <= {"--baselines"}
