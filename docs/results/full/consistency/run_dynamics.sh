#!/bin/bash
# plan consistency on the changed robots: original models vs fine-tuned dynamics (runs/dynamics-hopper-strong)
d=runs/dynamics-hopper-strong/models
for shift in mass=1.5:mass1.5 friction=0.4:friction0.4 gear=0.6:gear0.6; do
  p=${shift%%:*}; tag=${shift##*:}
  for m in nominal $tag; do
    OMP_NUM_THREADS=1 .venv/bin/mpdiffuser consistency $d/$m/model.safetensors --physics $p --threads 1 --episodes 3 \
      --json runs/consistency/dyn-$tag-$m.json 2>/dev/null | grep -v wrote
  done
done
