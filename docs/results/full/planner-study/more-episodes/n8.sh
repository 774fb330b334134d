#!/bin/bash
# The width-512, u_0 weight 10 models with ranking: N = 8, 10 episodes per seed from the seed-1000 start states
for s in 0 1 2; do d=$([ $s = 2 ] && echo runs/hopper-w512a10-s2 || echo runs/hopper-w512a10-s01)
  for lam in 1 0; do
    echo "s$s N=8 lambda=$lam: $(OMP_NUM_THREADS=1 .venv/bin/mpdiffuser eval --model-file $d/models/hopper-medium/s$s/model.safetensors --backend cpu --env Hopper-v5 --episodes 10 --seed 1000 --candidates 8 --lambda $lam --json docs/results/full/planner-study/more-episodes/n8-s$s-l$lam.json 2>/dev/null | tail -1)"
  done
done
