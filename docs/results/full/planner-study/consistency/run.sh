#!/bin/bash
# Plan consistency of the three-seed models (width 512 with u_0 weight 10, and width 256 with u_0 weight 10),
# driven at lambda 0 for 300 steps; about 40 s per model on one core.
out=docs/results/full/planner-study/consistency
for s in 0 1 2; do d=$([ $s = 2 ] && echo runs/hopper-w512a10-s2 || echo runs/hopper-w512a10-s01)
  echo "== w512a10 s$s"; OMP_NUM_THREADS=1 .venv/bin/mpdiffuser consistency $d/models/hopper-medium/s$s/model.safetensors \
    --threads 1 --episodes 1 --max-steps 300 --lambdas 0 1 --json $out/w512a10-s$s.json
done
for s in 0 1 2; do
  echo "== aw10 s$s"; OMP_NUM_THREADS=1 .venv/bin/mpdiffuser consistency runs/hopper-aw10/models/hopper-medium/s$s/model.safetensors \
    --threads 1 --episodes 1 --max-steps 300 --lambdas 0 1 --json $out/aw10-s$s.json
done
