#!/bin/bash
# hopper-medium (SAC 200k data), seed 0: planner trained 5000 (experiment default) vs 30000 steps; N and lambda
for m in runs/locomotion-hopper-strong/models/hopper-medium/s0 runs/hs30k/b; do
  for N in 1 8; do for lam in 1 0; do
    echo "$m N=$N lambda=$lam: $(OMP_NUM_THREADS=1 .venv/bin/mpdiffuser eval --model-file $m/model.safetensors --backend cpu --env Hopper-v5 --episodes 5 --seed 1000 --candidates $N --lambda $lam --json runs/hs30k/eval-$(basename $(dirname $m))-$(basename $m)-N$N-l$lam.json 2>/dev/null | tail -1)"
  done; done
done
