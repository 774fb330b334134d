#!/bin/bash
# plan consistency of the commit-9f9809a locomotion models (Walker2d, HalfCheetah), every task and seed
for env in walker2d halfcheetah; do
  E=$([ $env = walker2d ] && echo Walker2d-v5 || echo HalfCheetah-v5)
  for kind in medium medium-replay medium-expert; do
    for s in 0 1 2; do
      f=runs/locomotion-$env/models/$env-$kind/s$s/model.safetensors
      OMP_NUM_THREADS=1 .venv/bin/mpdiffuser consistency $f --env $E --threads 1 --episodes 1 --max-steps 300 \
        --json runs/consistency/$env-$kind-s$s.json 2>/dev/null | grep -v wrote
    done
  done
done
