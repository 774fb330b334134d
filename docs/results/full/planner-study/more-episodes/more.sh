#!/bin/bash
# 20 more episodes per seed and lambda (start states from seed 1000), 512 x 3 + u_0 weight 10 models
for s in 0 1 2; do d=$([ $s = 2 ] && echo runs/hopper-w512a10-s2 || echo runs/hopper-w512a10-s01)
  for lam in 0 0.5 1; do
    echo "s$s lambda=$lam: $(OMP_NUM_THREADS=1 .venv/bin/mpdiffuser eval --model-file $d/models/hopper-medium/s$s/model.safetensors --backend cpu --env Hopper-v5 --episodes 20 --seed 1000 --candidates 1 --lambda $lam --json docs/results/full/planner-study/more-episodes/eval20-s$s-l$lam.json 2>/dev/null | tail -1)"
  done
done
