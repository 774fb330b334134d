#!/usr/bin/env bash
# Makes the Hopper data suite that docs/results.md and the README's experiment commands use, with
# this project's own generate-data, into data/ (or the folder given):
#
#   bash scripts/make_suite.sh            # data/hopper-{medium,medium-replay,random}-s0.hdf5
#   bash scripts/make_suite.sh --all      # also Hopper medium-expert, Walker2d and HalfCheetah (hours)
#   bash scripts/make_suite.sh --all runs/suite
#
# Run time on a 2-core machine, one thread: about 75 min for the Hopper files (74 of them training
# the 200k-step SAC policy, which medium-replay then reuses from the cache), plus about 3 h with
# --all (each robot's 200k-step policy 47-58 min, each medium-expert 16-29 min).
set -euo pipefail
cd "$(dirname "$0")/.."
all=0
out=data
for arg in "$@"; do
  case "$arg" in
    --all) all=1 ;;
    -*) echo "usage: bash scripts/make_suite.sh [--all] [FOLDER]" >&2; exit 2 ;;
    *) out=$arg ;;
  esac
done
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # SAC on one thread: torch's threads fighting run 30-100x slower
mpd=(.venv/bin/mpdiffuser)
[ -x "${mpd[0]}" ] || mpd=(mpdiffuser)
py=.venv/bin/python
[ -x "$py" ] || py=python3
# The data depend on the simulator and the SAC implementation: name the versions that differ from
# those docs/results.md was measured with (scripts/constraints.txt).
"$py" - scripts/constraints.txt <<'PY'
import sys
from importlib import metadata
differ = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if "==" not in line:
        continue
    name, wanted = line.split("==")
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = "not installed"
    if have.split("+")[0] != wanted:
        differ.append(f"{name} {have} (results: {wanted})")
if differ:
    print("note: these versions differ from those docs/results.md was measured with, so the data (and scores) "
          "will differ from its numbers: " + ", ".join(differ) + "; scripts/constraints.txt says how to install them",
          file=sys.stderr)
PY
"${mpd[@]}" generate-data --env Hopper-v5 --kind medium --policy-steps 200000 --transitions 100000 --out "$out"
"${mpd[@]}" generate-data --env Hopper-v5 --kind medium-replay --policy-steps 200000 --out "$out"
"${mpd[@]}" generate-data --env Hopper-v5 --kind random --transitions 20000 --out "$out"
if [ "$all" = 1 ]; then
  "${mpd[@]}" generate-data --env Hopper-v5 --kind medium-expert --policy-steps 60000 --expert-steps 200000 --out "$out"
  for env in Walker2d-v5 HalfCheetah-v5; do
    "${mpd[@]}" generate-data --env "$env" --kind medium --policy-steps 200000 --transitions 100000 --out "$out"
    "${mpd[@]}" generate-data --env "$env" --kind medium-replay --policy-steps 200000 --out "$out"
    "${mpd[@]}" generate-data --env "$env" --kind medium-expert --policy-steps 60000 --expert-steps 200000 --out "$out"
  done
fi
echo "made the suite in $out"
