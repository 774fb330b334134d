#!/usr/bin/env bash
# Installs mpdiffuser and everything it needs into ./.venv on a fresh machine.
# Needs: Python >= 3.10 with venv, a C++17 compiler. CMake and Ninja come from pip; nvcc is
# optional (when found, the CUDA backend is compiled too). PyTorch is the CPU build 2.13.0.
#
#   bash scripts/install.sh              # the package, its tests' tools
#   bash scripts/install.sh --baselines  # also d3rlpy (IQL, TD3+BC) for `experiment locomotion --baselines`
#   bash scripts/install.sh --ray        # also Ray, for `experiment scarce --ray auto|ADDRESS` (the grid on a cluster)
#   bash scripts/install.sh --fetch      # also .venv-fetch: the same install with gymnasium-robotics 1.4.2 on
#                                        # MuJoCo 3.2.7 for the Fetch robots (they fail on MuJoCo 3.3 and newer;
#                                        # .venv keeps the MuJoCo the locomotion results were measured with)
set -euo pipefail
cd "$(dirname "$0")/.."

baselines=0
ray=0
fetch=0
for arg in "$@"; do
  case "$arg" in
    --baselines) baselines=1 ;;
    --ray) ray=1 ;;
    --fetch) fetch=1 ;;
    *) echo "usage: bash scripts/install.sh [--baselines] [--ray] [--fetch]" >&2; exit 2 ;;
  esac
done

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
if [ "$baselines" = 1 ]; then
  # d3rlpy 2.8.1 pins gymnasium 1.0.0 and pulls the old gym; it fits and predicts with our gymnasium
  # and NumPy 2, so it goes in without its dependencies and these are named here. A failure here
  # leaves the main install as it was. gym's gym-notices is left out on purpose: gym only uses it
  # to print a deprecation notice on every import, which stable-baselines3 triggers in every command.
  echo "installing the offline RL baselines; pip reports d3rlpy's gymnasium==1.0.0 pin as a conflict: expected"
  if "${pip[@]}" install --quiet --no-deps d3rlpy==2.8.1 gym==0.26.2 &&
     "${pip[@]}" install --quiet structlog colorama dataclasses-json click scikit-learn cloudpickle &&
     .venv/bin/python -c "import mpdiffuser.control.baselines as b; b.require_d3rlpy()" 2>/dev/null; then
    echo "installed the offline RL baselines (d3rlpy 2.8.1)"
  else
    echo "warning: the offline RL baselines (d3rlpy) did not install; everything else is installed" >&2
  fi
fi
if [ "$ray" = 1 ]; then
  "${pip[@]}" install --quiet "ray>=2.9"
  .venv/bin/python -c "import ray; print('installed ray', ray.__version__, 'for experiment grids on a cluster')"
fi
if [ "$fetch" = 1 ]; then
  # Its own environment: the package as above, then the fetch extra's pins (pyproject.toml), which
  # move MuJoCo back to 3.2.7 there and nowhere else.
  if [ ! -x .venv-fetch/bin/python ]; then
    "$python" -m venv .venv-fetch
  fi
  fpip=(.venv-fetch/bin/python -m pip --disable-pip-version-check)
  "${fpip[@]}" install --quiet --upgrade pip
  "${fpip[@]}" install --quiet torch==2.13.0
  "${fpip[@]}" install --quiet "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.24" "ninja>=1.11"
  "${fpip[@]}" install --quiet --no-build-isolation ".[dev,fetch]"
  .venv-fetch/bin/python -c "import gymnasium_robotics, mujoco; print('installed .venv-fetch: gymnasium-robotics', gymnasium_robotics.__version__, 'mujoco', mujoco.__version__)" 2>/dev/null
fi
