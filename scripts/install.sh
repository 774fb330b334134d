#!/usr/bin/env bash
# Installs mpdiffuser and everything it needs into ./.venv on a fresh machine.
# Needs: Python >= 3.10 with venv, a C++17 compiler. CMake and Ninja come from pip; nvcc is
# optional (when found, the CUDA backend is compiled too). PyTorch is the CPU build 2.13.0.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip
# Torch first, pinned: the CPU build. An unpinned torch would pull a multi-GB CUDA build.
"${pip[@]}" install --quiet torch==2.13.0
# Build tools, then the package itself without build isolation so build/ is reused between installs.
"${pip[@]}" install --quiet "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.24" "ninja>=1.11"
"${pip[@]}" install --quiet --no-build-isolation ".[dev]"
.venv/bin/python -c "import mpdiffuser; print('installed mpdiffuser', mpdiffuser.__version__, mpdiffuser.build_info())"
