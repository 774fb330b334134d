#!/bin/bash
# Planner variants on near-expert Hopper data (SAC 200k, seed-0 data of runs/locomotion-hopper-strong).
# Every variant starts from a copy of runs/hs30k/b (the 30000-step planner of the strong-data section,
# its 5000-step dynamics model and 3000-step reward model); only what the name says changes.
# Each training runs on one core; two variants ran side by side. Times are in docs/results.md.
set -e
D=runs/locomotion-hopper-strong/data
T="--data $D/hopper-medium-s0.hdf5 --seed 0"
one() {  # name, then `mpdiffuser train` arguments for the planner
  name=$1; shift
  rm -rf runs/aw/$name; cp -r runs/hs30k/b runs/aw/$name; rm -rf runs/aw/$name/checkpoints
  OMP_NUM_THREADS=1 .venv/bin/mpdiffuser train --bundle runs/aw/$name $T --model planner "$@"
}
mkdir -p runs/aw
one w1 --steps 30000                        # the baseline, retrained with today's code
one w10 --steps 30000 --action-weight 10    # Diffuser's u_0 loss weight
one s90k --steps 90000                      # three times the training
# Width 512 and depth 6 need new bundles (the width is shared by planner and dynamics):
for v in "w512:--width 512" "l6:--layers 6"; do
  name=${v%%:*}; arch=${v#*:}; rm -rf runs/aw/$name
  OMP_NUM_THREADS=1 .venv/bin/mpdiffuser train --bundle runs/aw/$name $T --extra-data $D/hopper-random-s0.hdf5 --model planner --steps 30000 $arch
  OMP_NUM_THREADS=1 .venv/bin/mpdiffuser train --bundle runs/aw/$name $T --extra-data $D/hopper-random-s0.hdf5 --model dynamics --steps 5000
  cp runs/hs30k/b/reward.pt runs/aw/$name/   # the ranker's size does not depend on the width
done
rm -rf runs/aw/w512a10; cp -r runs/aw/w512 runs/aw/w512a10; rm -rf runs/aw/w512a10/checkpoints
OMP_NUM_THREADS=1 .venv/bin/mpdiffuser train --bundle runs/aw/w512a10 $T --model planner --steps 30000 --action-weight 10
for name in w1 w10 s90k w512 l6 w512a10; do
  m=runs/aw/$name
  .venv/bin/mpdiffuser export --bundle $m --out $m/model.safetensors
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diagnostics/planner_spread.py $m/model.safetensors $D/hopper-medium-s0.hdf5 --json runs/aw/spread-$name.json
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diagnostics/action_error.py $m/model.safetensors $D/hopper-medium-s0.hdf5 runs/policies/sac-Hopper-v5-200000-s0.zip
  for N in 1 8; do for lam in 1 0; do
    OMP_NUM_THREADS=1 .venv/bin/mpdiffuser eval --model-file $m/model.safetensors --backend cpu --env Hopper-v5 --episodes 10 --seed 1000 --candidates $N --lambda $lam --json runs/aw/eval-$name-N$N-l$lam.json
  done; done
done
