#!/bin/bash
# The strong-data Hopper models of the four locomotion runs, re-evaluated with one candidate (N = 1,
# no ranking), lambda 1 and 0, on the experiment's own start states (seed 10000 * (s + 1), 5 episodes).
mkdir -p runs/hopper-strong-n1
for run in locomotion-hopper-strong locomotion-hopper-strong-30k locomotion-hopper-strong-me locomotion-hopper-strong-me-30k; do
  for task in hopper-medium hopper-medium-expert; do
    for s in 0 1 2; do
      m=runs/$run/models/$task/s$s/model.safetensors
      [ -f $m ] || continue
      for lam in 1 0; do
        out=runs/hopper-strong-n1/$run-$task-s$s-l$lam.json
        OMP_NUM_THREADS=1 .venv/bin/mpdiffuser eval --model-file $m --backend cpu --env Hopper-v5 --episodes 5 \
          --seed $((10000 * (s + 1))) --candidates 1 --lambda $lam --json $out > /dev/null 2>&1
        echo "$run $task s$s lambda=$lam: $(python3 -c "import json; d=json.load(open('$out')); print(round(d['score_mean'], 1))")"
      done
    done
  done
done
