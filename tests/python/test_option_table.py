"""Adding a sampler option is one line in csrc/include/mpdiffuser/options.def: this test adds a dummy
option to a copy of the table, builds the native core and the Python module from the copy, and
shows the option reaching every layer: the C struct and its checks, the model file's writer and
both readers, the binding, SamplerOptions with its default and range, and the command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DUMMY = ('MPD_OPTION_REAL(dummy_deadline_ms, 7.5, 0.0, 100.0, MPD_BOUND_NONE, 2, "0",\n'
         '                "--dummy-deadline-ms", "d, a test option")\n')

CHECKS = r'''
import numpy as np
from mpdiffuser import _core
from mpdiffuser.bench import synthetic_model_file
from mpdiffuser.config import ModelConfig, SamplerOptions
from mpdiffuser.sampling.sampler import Sampler

assert SamplerOptions().dummy_deadline_ms == 7.5                       # Python's default
assert _core.Options().dummy_deadline_ms == 7.5                        # the C table's default
try:
    SamplerOptions(dummy_deadline_ms=100.5)
    raise AssertionError("out of range accepted")
except ValueError as exc:
    assert str(exc) == _core.option_range_message("dummy_deadline_ms", 100.5, 8, 4), exc
path = synthetic_model_file("m.safetensors", model=ModelConfig(horizon=8, num_steps=4, width=16),
                            options=SamplerOptions(dummy_deadline_ms=12.25))
assert "default.dummy_deadline_ms" in _core.model_file_keys(str(path))  # the C reader reads it
assert _core.Model(str(path)).default_options().dummy_deadline_ms == 12.25
sampler = Sampler(path, "cpu", threads=1)
assert sampler.defaults.dummy_deadline_ms == 12.25                     # the Python reader too
raw = sampler._native_options(sampler.defaults)
raw.dummy_deadline_ms = 101.0
try:
    sampler._workspace.plan_batch(np.asarray(sampler.spec.states.low, np.float32)[None], np.zeros(1, np.uint64), raw)
    raise AssertionError("the C checks accepted it")
except ValueError as exc:
    assert "dummy_deadline_ms must be a finite number in [0, 100], got 101" in str(exc), exc
print("reached every layer")
'''


@pytest.fixture(scope="module")
def dummy_build(tmp_path_factory, repo_root: Path) -> Path:
    """A copy of the sources with the dummy option, its Python module built: the package dir."""
    root = tmp_path_factory.mktemp("dummy_option")
    for name in ("csrc", "cmake", "python"):
        shutil.copytree(repo_root / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(repo_root / "CMakeLists.txt", root / "CMakeLists.txt")
    table = root / "csrc" / "include" / "mpdiffuser" / "options.def"
    text = table.read_text()
    at = text.index("#undef MPD_OPTION_COUNT")
    table.write_text(text[:at] + DUMMY + "\n" + text[at:])
    bin_dir = Path(sys.executable).parent
    cmake, ninja = bin_dir / "cmake", bin_dir / "ninja"
    if not cmake.exists() or not ninja.exists():
        pytest.skip("cmake and ninja are installed beside the Python that runs the tests (pip install cmake ninja)")
    import pybind11

    build = root / "build"
    for args in ([str(cmake), "-S", str(root), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
                  "-DMPD_BUILD_PYTHON=ON", "-DMPD_ENABLE_CUDA=OFF", "-DMPD_BUILD_TESTS=OFF", "-DMPD_BUILD_EXAMPLES=OFF",
                  f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}"],
                 [str(cmake), "--build", str(build), "--target", "_core"]):
        done = subprocess.run(args, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (module,) = build.glob("_core*.so")
    shutil.copy(module, root / "python" / "mpdiffuser" / module.name)
    return root / "python"


def _run(package: Path, *args: str, cwd: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(package), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_a_dummy_option_reaches_every_layer(dummy_build, tmp_path):
    assert "reached every layer" in _run(dummy_build, "-c", CHECKS, cwd=tmp_path)


def test_a_dummy_option_gets_its_command_line_flag(dummy_build, tmp_path):
    for command in ("export", "eval", "tune"):
        help_text = _run(dummy_build, "-m", "mpdiffuser", command, "--help", cwd=tmp_path)
        assert "--dummy-deadline-ms" in help_text and "d, a test option" in help_text, command


def test_the_option_table_in_the_design_document_is_the_tables(repo_root):
    """docs/design.md section 3.3 shows exactly the table of options.def (names, flags, help)."""
    from mpdiffuser.config import OPTION_SPECS
    from mpdiffuser.option_table import markdown

    assert markdown(OPTION_SPECS) in (repo_root / "docs" / "design.md").read_text()
