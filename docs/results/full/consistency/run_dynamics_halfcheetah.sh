#!/bin/bash
# plan consistency on HalfCheetah's changed robots: original models vs fine-tuned dynamics (runs/dynamics-halfcheetah)
d=runs/dynamics-halfcheetah/models
run() {  # $1 physics, $2 tag (model dir), $3 robot tag
  OMP_NUM_THREADS=1 .venv/bin/mpdiffuser consistency $d/$2/model.safetensors --env HalfCheetah-v5 ${1:+--physics $1} \
    --threads 1 --episodes 1 --max-steps 300 --json runs/consistency/hc-dyn-$3-$2.json 2>/dev/null | grep -v wrote
}
run "" nominal nominal
for shift in mass=1.5:mass1.5 friction=0.4:friction0.4 gear=0.6:gear0.6; do
  p=${shift%%:*}; tag=${shift##*:}
  run $p nominal $tag
  run $p $tag $tag
done
