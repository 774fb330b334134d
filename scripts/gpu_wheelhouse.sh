#!/usr/bin/env bash
# Wheels that install mpdiffuser, its tests and its environments on a machine with no package index
# (the GPU machines this project is measured on: a CUDA build of torch, nvcc, cmake and Python),
# made here, where pip reaches one. torch is left out: the target's own build satisfies the
# package's range, and a CUDA build would not fit. stable-baselines3 comes without its
# dependencies (they are torch's and the other wheels').
#
#   bash scripts/gpu_wheelhouse.sh                                  # .whl/ for CPython 3.12, x86-64 Linux
#   PYTHON_VERSION=3.11 IMAGE_HAS= bash scripts/gpu_wheelhouse.sh runs/wheels  # everything, for a bare venv
#
# IMAGE_HAS: packages the GPU machines' image already holds (device tool's package list), left out
# so the wheels fit the 64 MiB a call may carry (about 35 MB then, 120 MB with them).
#
# There (benchmarks/gpu_runbook.sh's install step does this):
#   python3 -m pip install --no-index --find-links .whl --no-build-isolation '.[dev]'
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.whl}
version=${PYTHON_VERSION:-3.12}
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && python=.venv/bin/python
target=(--only-binary=:all: --python-version "$version" --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform manylinux1_x86_64)
# The package's requirements and its dev extra, from pyproject.toml (their one home), less torch
# and stable-baselines3 (which would pull torch).
mapfile -t requirements < <("$python" - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for r in project["dependencies"] + project["optional-dependencies"]["dev"]:
    if not r.startswith(("torch", "stable-baselines3")):
        print(r)
PY
)
mkdir -p "$out"
"$python" -m pip download --quiet --disable-pip-version-check "${target[@]}" -d "$out" "${requirements[@]}"
sb3=$("$python" - <<'PY'
import tomllib
print(next(r for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] if r.startswith("stable")))
PY
)
"$python" -m pip download --quiet --disable-pip-version-check --no-deps "${target[@]}" -d "$out" "$sb3"
for name in ${IMAGE_HAS-cmake numpy matplotlib contourpy fonttools kiwisolver pillow cycler pyparsing python_dateutil
                   tensorboard tensorboard_data_server grpcio protobuf markdown werkzeug pyyaml packaging setuptools}; do
  rm -f "$out/$name"-[0-9]*.whl
done
echo "$(ls "$out" | wc -l) wheels, $(du -sh "$out" | cut -f1), in $out (CPython $version)"
