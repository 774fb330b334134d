"""The core as a plain CMake project with no Python: build, ctest, install, find_package.

This is the firmware path: `cmake -S . -B build -DMPD_BUILD_PYTHON=OFF`, the C/C++ tests under
ctest, then a separate project that links the installed library through find_package(mpdiffuser).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _tool(name: str) -> str:
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found next to {sys.executable} or on PATH")
    return found


def _run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{output[-6000:]}"
    return output


@pytest.fixture(scope="module")
def standalone(repo_root: Path) -> dict:
    build = repo_root / "build" / "standalone"
    prefix = repo_root / "build" / "standalone-install"
    cmake, ninja = _tool("cmake"), _tool("ninja")
    # The firmware example's ctest plans with a model file the test suite exports.
    from mpdiffuser.bench import synthetic_model_file

    model_file = synthetic_model_file(repo_root / "build" / "standalone-model" / "hopper.safetensors")
    configure = _run([cmake, "-S", str(repo_root), "-B", str(build), "-G", "Ninja",
                      f"-DCMAKE_MAKE_PROGRAM={ninja}", "-DMPD_BUILD_PYTHON=OFF",
                      "-DMPD_BUILD_TESTS=ON", "-DMPD_BUILD_EXAMPLES=ON", f"-DMPD_EXAMPLE_MODEL={model_file}",
                      "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"], repo_root)
    build_log = _run([cmake, "--build", str(build), "--verbose"], repo_root)
    ctest = _run([str(Path(cmake).parent / "ctest"), "--test-dir", str(build), "--output-on-failure"], repo_root)
    shutil.rmtree(prefix, ignore_errors=True)
    _run([cmake, "--install", str(build), "--prefix", str(prefix)], repo_root)
    return {"configure": configure, "build": build_log, "ctest": ctest, "prefix": prefix, "model_file": model_file,
            "cmake": cmake, "ninja": ninja, "build_dir": build}


def test_ctest_passes_and_runs_tests(standalone):
    # ctest 3.x: "100% tests passed, 0 tests failed out of 4"; ctest 4.x: "100% tests passed out of 4".
    summary = re.search(r"(\d+)% tests passed(?:, (\d+) tests failed)? out of (\d+)", standalone["ctest"])
    assert summary, standalone["ctest"]
    assert summary.group(1) == "100" and int(summary.group(3)) >= 9
    for name in ("philox_test", "schedule_test", "c_api_test", "json_test", "model_file_test", "cpu_dense_test",
                 "plan_test", "plan_noalloc_test", "firmware_example"):
        assert re.search(rf"{name} \.+\s+Passed", standalone["ctest"]), name


def test_cuda_sources_compiled_when_nvcc_present(standalone):
    if shutil.which("nvcc") is None and not os.environ.get("CUDACXX"):
        pytest.skip("no nvcc on this machine")
    assert "CUDA backend ON" in standalone["configure"]
    objects = list(standalone["build_dir"].rglob("noise_kernel.cu.o"))
    assert objects, "the CUDA translation unit was not compiled"
    # Each cubin embedded in the object's fatbin records the ptxas options it was built with.
    data = objects[0].read_bytes()
    assert b".nv_fatbin" in data
    for arch in (b"-arch sm_87", b"-arch sm_90"):
        assert arch in data, f"no {arch.decode()} cubin in {objects[0]}"


def test_c_header_compiles_as_c(standalone):
    # c_api_test.c is compiled by the C compiler as C99, not as C++.
    commands = json.loads((standalone["build_dir"] / "compile_commands.json").read_text())
    (entry,) = [c for c in commands if c["file"].endswith("c_api_test.c")]
    compiler = Path(entry["command"].split()[0]).name
    assert "++" not in compiler and "-std=c99" in entry["command"], entry["command"]


def test_installed_package_links_from_firmware_project(standalone, repo_root: Path, tmp_path: Path):
    prefix = standalone["prefix"]
    assert (prefix / "include" / "mpdiffuser" / "mpdiffuser.h").exists()
    assert (prefix / "include" / "mpdiffuser" / "version.h").exists()
    consumer_build = tmp_path / "consumer"
    _run([standalone["cmake"], "-S", str(repo_root / "tests" / "cpp" / "consumer"), "-B", str(consumer_build),
          "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={standalone['ninja']}", f"-DCMAKE_PREFIX_PATH={prefix}"], repo_root)
    _run([standalone["cmake"], "--build", str(consumer_build)], repo_root)
    out = subprocess.run([str(consumer_build / "consumer")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    from mpdiffuser import noise

    printed = [float(v) for v in out.stdout.split(":")[1].split()]
    # %.9g round-trips a float32 exactly.
    assert np.array_equal(np.array(printed, dtype=np.float32), noise.normal(7, 0, 1, 4))


def test_bad_cuda_option_is_rejected(repo_root: Path, tmp_path: Path):
    done = subprocess.run([_tool("cmake"), "-S", str(repo_root), "-B", str(tmp_path / "b"),
                           "-DMPD_ENABLE_CUDA=maybe", "-DMPD_BUILD_PYTHON=OFF"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "MPD_ENABLE_CUDA must be ON, OFF or AUTO" in done.stdout + done.stderr


def test_firmware_example_builds_from_the_installed_package(standalone, repo_root: Path, tmp_path: Path):
    prefix = standalone["prefix"]
    assert (prefix / "include" / "mpdiffuser" / "mpdiffuser.hpp").exists()
    build = tmp_path / "firmware"
    _run([standalone["cmake"], "-S", str(repo_root / "examples" / "firmware"), "-B", str(build), "-G", "Ninja",
          f"-DCMAKE_MAKE_PROGRAM={standalone['ninja']}", f"-DCMAKE_PREFIX_PATH={prefix}"], repo_root)
    _run([standalone["cmake"], "--build", str(build)], repo_root)
    out = subprocess.run([str(build / "mpd_firmware_example"), str(standalone["model_file"]), "--steps", "25",
                          "--rate", "50"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    match = re.search(r"latency_ms p50=([\d.]+) p90=([\d.]+) p99=([\d.]+) max=([\d.]+) missed_deadlines=(\d+)", out.stdout)
    assert match, out.stdout
    p50, p99 = float(match.group(1)), float(match.group(3))
    assert 0 < p50 <= p99 < 20.0, out.stdout  # the default model plans inside a 50 Hz step
    bad = subprocess.run([str(build / "mpd_firmware_example"), str(tmp_path / "missing.safetensors")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "cannot open" in bad.stderr
    warm = subprocess.run([str(build / "mpd_firmware_example"), str(standalone["model_file"]), "--steps", "10",
                           "--warm-start-level", "5"], capture_output=True, text=True, timeout=120)
    assert warm.returncode == 0 and "warm start level 5" in warm.stdout, warm.stdout + warm.stderr
    helped = subprocess.run([str(build / "mpd_firmware_example"), "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--warm-start-level" in helped.stdout
    for args, message in ((["--speed", "3"], "unknown argument '--speed'"), (["--rate"], "--rate needs a value"),
                          (["--rate", "fast"], "--rate needs an integer"), (["--rate", "0"], "--rate must be >= 1"),
                          (["--warm-start-level", "999"], "--warm-start-level must be in [0, ")):
        out = subprocess.run([str(build / "mpd_firmware_example"), str(standalone["model_file"]), *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
