#!/bin/bash
# usage: run.sh SEED -- Walker2d (SAC 200k data), the commit-9f87f32 bundle of that seed with its planner retrained at u_0 weight 10
s=$1; src=runs/locomotion-walker2d-strong-s$s/models/walker2d-medium/s$s; b=runs/w2d/aw10-s$s
export OMP_NUM_THREADS=1
rm -rf $b; cp -r $src $b; rm -rf $b/checkpoints
.venv/bin/mpdiffuser train --bundle $b --data runs/locomotion-walker2d-strong-s0/data/walker2d-medium-s0.hdf5 --model planner --steps 30000 --seed $s --action-weight 10
.venv/bin/mpdiffuser export --bundle $b --out $b/model.safetensors --candidates 1
for m in $src $b; do for lam in 1 0; do
  echo "$m lambda=$lam: $(.venv/bin/mpdiffuser eval --model-file $m/model.safetensors --backend cpu --env Walker2d-v5 --episodes 10 --seed 1000 --candidates 1 --lambda $lam --json runs/w2d/eval-$(basename $m)-s$s-l$lam.json 2>/dev/null | tail -1)"
done; done
