#!/usr/bin/env bash
# Everything the CUDA backend needs checked on a GPU, in one call (the device tool's lease is
# short): build the Python module and the C++ tests/benchmarks for this GPU, run the CUDA tests
# (each kernel variant), then the latency benchmarks and a short Nsight Compute profile; the
# `train` step checks GPU training (tests, then steps/s at fp32, bf16, fp16, compiled or not).
#
#   bash benchmarks/gpu_runbook.sh            # logs and JSON under $OUT (default runs/gpu)
#   STEPS="tests bench" bash benchmarks/gpu_runbook.sh
#   STEPS="build train" bash benchmarks/gpu_runbook.sh      # GPU training alone (issue 32), on a fresh machine
#   STEPS="build tests bench profile" bash benchmarks/gpu_runbook.sh   # the CUDA plans, both families (issue 34)
#   BASELINE=old/sampler.cu bash benchmarks/gpu_runbook.sh   # also time another csrc/cuda/sampler.cu
#   STEPS="install" PYTHON=.venv-offline/bin/python bash benchmarks/gpu_runbook.sh   # the offline install alone
#
# Offline: the GPU machine has a CUDA torch, nvcc, cmake and Python and no package index; the
# install step takes every other package from the wheels in .whl/ (scripts/gpu_wheelhouse.sh makes
# them where pip reaches an index; carry .whl with the call). Every step appends its name, exit
# code and seconds to $OUT/steps.jsonl as it ends, so a later failure loses nothing written before.
#
# One call: the whole run stops within BUDGET_S seconds (default 470, inside 8 minutes): each
# step's limit is cut to the time left, and a step that would start with under 15 s left is
# recorded as skipped. PACK=FILE.tar.gz writes $OUT as one archive at the end, whatever failed
# (the `device` tool returns at most 8 files; its $OUT is expanded before OUT is set):
#
#   PACK=$OUT/gpu.tar.gz OUT=runs/gpu bash benchmarks/gpu_runbook.sh
#
# Results: $OUT/log.txt (every step's output), gpu_latency.json (PyTorch reference vs ours),
# bench_cuda_mlp.json / bench_cuda_unet.json / bench_cuda_unet_authors.json / bench_cuda_unet_fast.json /
# bench_cuda_unet_humanoid_fast.json (`mpdiffuser bench
# --backend cuda`: the MLP, the default U-Net and the authors' size),
# cuda_cxx_h16.json / cuda_cxx_h32.json (mpd_bench_cuda), group_sync.json (one barrier across a
# candidate's blocks), unet_group{1,2,4,8}.json, unet_group8_grid.json, unet_fast.json,
# unet_group1_global.json / unet_fast_global.json / unet_group8_own.json (MPD_CUDA_UNET_SCRATCH),
# unet_group8_unsplit.json (MPD_CUDA_UNET_SPLIT=off), unet_authors_fast.json, unet_authors_group{1,8}.json and
# mlp_group{2,4,8}.json (blocks per candidate), unet_sm16.json / unet_fast_sm16.json / mlp_sm16.json
# (a 16-SM green context as an Orin stand-in), sweep.jsonl (candidates per block),
# baseline.jsonl (mpd_bench_cuda built with $BASELINE instead of csrc/cuda/sampler.cu),
# train_gpu.json (benchmarks/train_throughput.py on $TRAIN_DATA, default the shipped demo data: the
# MLPs with host and device batches), train_gpu_unet.json and train_gpu_unet_authors.json (the
# default U-Net and the authors' size, dim 128, mults 1-4-8, H 32, batch 64).
set -uo pipefail
OUT=${OUT:-runs/gpu}
STEPS=${STEPS:-"install build tests bench pytest sanitize sweep baseline profile train"}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
ARCH=${ARCH:-90}
BUDGET_S=${BUDGET_S:-470}
DEADLINE=$(($(date +%s) + BUDGET_S))
mkdir -p "$OUT"
LOG="$OUT/log.txt"
[ -n "${PACK:-}" ] && trap 'tar czf "$PACK" --exclude="$(basename "$PACK")" -C "$OUT" . && echo "packed: $PACK"' EXIT
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
BENCH=build/gpu/benchmarks/mpd_bench_cuda
CMAKE_BUILD="cmake -S . -B build/gpu -G Ninja -DMPD_BUILD_PYTHON=OFF -DMPD_BUILD_BENCHMARKS=ON -DMPD_ENABLE_CUDA=ON \
  -DMPD_CUDA_ARCHITECTURES=$ARCH >/dev/null && cmake --build build/gpu"

# step NAME LIMIT_S CMD...: run with a time limit (cut to what is left of BUDGET_S), the whole
# output to the log, its tail here.
step() {
  local name=$1 limit=$2 t0 rc left
  shift 2
  t0=$(date +%s)
  left=$((DEADLINE - t0))
  if [ "$left" -lt 15 ]; then
    echo "===== $name: skipped, ${left} s of BUDGET_S left" | tee -a "$LOG"
    printf '{"step": "%s", "rc": null, "skipped": "budget"}\n' "$name" >>"$OUT/steps.jsonl"
    return 124
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "===== $name" >>"$LOG"
  timeout "$limit" "$@" >"$OUT/step.log" 2>&1
  rc=$?
  cat "$OUT/step.log" >>"$LOG"
  echo "===== $name: rc=$rc in $(($(date +%s) - t0)) s" | tee -a "$LOG"
  printf '{"step": "%s", "rc": %d, "seconds": %d}\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$OUT/steps.jsonl"
  tail -n "${TAIL:-12}" "$OUT/step.log"
  rm -f "$OUT/step.log"
  return $rc
}
want() { [[ " $STEPS " == *" $1 "* ]]; }

step machine 30 bash -c 'nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv;
  nvcc --version | tail -2; "${PYTHON:-python3}" -c "import torch; print(torch.__version__)"'

if want install; then
  # Build tools first (the package builds without isolation), then the package with its test and
  # environment dependencies; from $WHEELS alone when it exists (no index there).
  offline=()
  [ -d "$WHEELS" ] && offline=(--no-index --find-links "$WHEELS")
  step install-tools 300 "$PYTHON" -m pip install --disable-pip-version-check "${offline[@]}" \
    "scikit-build-core>=0.10" "pybind11>=2.12" "ninja>=1.11" || exit 1
  # The C++ tests and benchmarks build beside the module (both compile the CUDA code; the cores allow it).
  if want build; then
    rm -f "$OUT/cmake.rc"
    (bash -c "$CMAKE_BUILD" >"$OUT/cmake.log" 2>&1; echo $? >"$OUT/cmake.rc") &
    cmake_background=1
  fi
  step install 600 "$PYTHON" -m pip install --disable-pip-version-check "${offline[@]}" --no-build-isolation \
    --config-settings=cmake.define.MPD_CUDA_ARCHITECTURES="$ARCH" ".[dev]" || exit 1
  step install-check 60 "$PYTHON" -c 'import gymnasium, mujoco, h5py, safetensors, pytest, tqdm, mpdiffuser
print("installed mpdiffuser", mpdiffuser.__version__, mpdiffuser.build_info())' || exit 1
fi

if want build; then
  want install || step pip 300 python3 -m pip install --no-build-isolation --no-deps \
    --config-settings=cmake.define.MPD_CUDA_ARCHITECTURES="$ARCH" . || exit 1
  if [ -n "${cmake_background:-}" ]; then  # started with the install: its end
    step cmake 300 bash -c "while [ ! -f '$OUT/cmake.rc' ]; do sleep 1; done; cat '$OUT/cmake.log';
      exit \$(cat '$OUT/cmake.rc')" || exit 1
  else
    step cmake 300 bash -c "$CMAKE_BUILD" || exit 1
  fi
  step import 30 "$PYTHON" -c 'import mpdiffuser, mpdiffuser._core as c; i = mpdiffuser.build_info(); print(i);
assert i["cuda_compiled"] and c.cuda_device_available(), "CUDA backend not compiled or no device"' || exit 1
fi

if want tests; then
  step ctest 240 ctest --test-dir build/gpu --output-on-failure
  for cpb in 2 4; do
    MPD_CUDA_CANDIDATES_PER_BLOCK=$cpb step "ctest-cuda-cpb$cpb" 120 ctest --test-dir build/gpu -R cuda --output-on-failure
  done
  # Blocks per candidate set (1: no barrier at all; 8 also for the mlp family, which keeps 1 by default).
  for g in 1 2 8; do
    MPD_CUDA_BLOCKS_PER_CANDIDATE=$g step "ctest-cuda-group$g" 120 ctest --test-dir build/gpu -R cuda_plan \
      --output-on-failure
  done
  # The grid barrier where the cluster's is the default (sm_90).
  MPD_CUDA_GROUP_BARRIER=grid step ctest-cuda-unet-grid-barrier 120 ctest --test-dir build/gpu -R cuda_plan \
    --output-on-failure
  # The unet family's scratch placed otherwise (layout.h): all global, or no replicas in clusters;
  # and no convolution split into input-channel slices.
  for scratch in global own; do
    MPD_CUDA_UNET_SCRATCH=$scratch step "ctest-cuda-unet-scratch-$scratch" 120 ctest --test-dir build/gpu \
      -R cuda_plan --output-on-failure
  done
  MPD_CUDA_UNET_SPLIT=off step ctest-cuda-unet-unsplit 120 ctest --test-dir build/gpu -R cuda_plan --output-on-failure
fi

if want bench; then
  # Every synthetic model file first (random weights; speed does not depend on them): the MLPs at
  # H = 16 and 32, the default U-Net in both numeric modes (the fast one with bf16 weights), the
  # authors' size (dim 128, mults 1-4-8, H 32) and a Humanoid-size fast U-Net (348 + 17 channels).
  step bench-files 120 python3 -c "from mpdiffuser.bench import synthetic_model_file as f
from mpdiffuser.config import ModelConfig as M, SamplerOptions
fast = SamplerOptions(fast_numerics=1)
for h in (16, 32): f(f'runs/bench/synthetic-hopper-h{h}.safetensors', model=M(horizon=h))
f('runs/bench/synthetic-hopper-unet.safetensors', model=M(architecture='unet'))
f('runs/bench/synthetic-hopper-unet-fast.safetensors', model=M(architecture='unet'), weights='bf16', options=fast)
authors = M(architecture='unet', horizon=32, unet_dim=128, unet_mults=(1, 4, 8), unet_embed_dim=128)
f('runs/bench/synthetic-hopper-unet-authors.safetensors', model=authors)
f('runs/bench/synthetic-hopper-unet-authors-fast.safetensors', model=authors, weights='bf16', options=fast)
f('runs/bench/synthetic-humanoid-unet-fast.safetensors', 348, 17, model=M(architecture='unet'), weights='bf16', options=fast)" || exit 1
  # The unet family's blocks per candidate (issue 44): first the cost of one barrier across them
  # (grid and cluster barriers), then plans with the launch's choice capped at g (the FiLM kernel,
  # then one barrier per convolution): the default size at N = 1 and 64 with either barrier, the
  # authors' size at N = 1.
  step bench-group-sync 60 build/gpu/benchmarks/mpd_bench_group_sync --json "$OUT/group_sync.json"
  for g in 1 2 4 8; do
    MPD_CUDA_BLOCKS_PER_CANDIDATE=$g step "bench-unet-group$g" 120 "$BENCH" runs/bench/synthetic-hopper-unet.safetensors \
      --candidates 1,64 --iters 50 --json "$OUT/unet_group$g.json"
  done
  MPD_CUDA_GROUP_BARRIER=grid MPD_CUDA_BLOCKS_PER_CANDIDATE=8 step bench-unet-group8-grid 120 "$BENCH" \
    runs/bench/synthetic-hopper-unet.safetensors --candidates 1,64 --iters 50 --json "$OUT/unet_group8_grid.json"
  step bench-unet-fast 120 "$BENCH" runs/bench/synthetic-hopper-unet-fast.safetensors --candidates 1,64 --iters 50 \
    --json "$OUT/unet_fast.json"
  # The scratch in global memory instead of shared (layout.h, UnetPlacement): a group of one
  # (exact mode: its activations), a cluster of 8 without replicas (its activations global, read
  # by every member through L2, against the replicas' distributed shared memory of unet_group8.json),
  # and the fast mode's default groups (their tensor-core buffers too).
  MPD_CUDA_UNET_SCRATCH=global MPD_CUDA_BLOCKS_PER_CANDIDATE=1 step bench-unet-group1-global 120 "$BENCH" \
    runs/bench/synthetic-hopper-unet.safetensors --candidates 1,64 --iters 50 --json "$OUT/unet_group1_global.json"
  MPD_CUDA_UNET_SCRATCH=own MPD_CUDA_BLOCKS_PER_CANDIDATE=8 step bench-unet-group8-own 120 "$BENCH" \
    runs/bench/synthetic-hopper-unet.safetensors --candidates 1,64 --iters 50 --json "$OUT/unet_group8_own.json"
  # No convolution split into input-channel slices (layout.h, unet_slices): each output's whole
  # sum one thread's chain of multiply-adds, as before the split.
  MPD_CUDA_UNET_SPLIT=off MPD_CUDA_BLOCKS_PER_CANDIDATE=8 step bench-unet-group8-unsplit 120 "$BENCH" \
    runs/bench/synthetic-hopper-unet.safetensors --candidates 1,64 --iters 50 --json "$OUT/unet_group8_unsplit.json"
  MPD_CUDA_UNET_SCRATCH=global step bench-unet-fast-global 120 "$BENCH" runs/bench/synthetic-hopper-unet-fast.safetensors \
    --candidates 1,64 --iters 50 --json "$OUT/unet_fast_global.json"
  # The authors' size at N = 1: the fast mode (its target), the exact mode (8 blocks).
  step bench-unet-authors-fast 120 "$BENCH" runs/bench/synthetic-hopper-unet-authors-fast.safetensors \
    --candidates 1 --warmup 2 --iters 5 --json "$OUT/unet_authors_fast.json"
  MPD_CUDA_BLOCKS_PER_CANDIDATE=8 step bench-unet-authors-group8 120 "$BENCH" \
    runs/bench/synthetic-hopper-unet-authors.safetensors --candidates 1 --warmup 1 --iters 3 \
    --json "$OUT/unet_authors_group8.json"
  # The 16-SM stand-in for an Orin-class GPU: a green context of 16 SMs (mpd_bench_cuda --sms), the
  # default U-Net in both numeric modes and the demo's MLP size, N = 1 and 64.
  step bench-unet-sm16 120 "$BENCH" runs/bench/synthetic-hopper-unet.safetensors --sms 16 --candidates 1,64 \
    --iters 30 --json "$OUT/unet_sm16.json"
  step bench-unet-fast-sm16 120 "$BENCH" runs/bench/synthetic-hopper-unet-fast.safetensors --sms 16 \
    --candidates 1,64 --iters 30 --json "$OUT/unet_fast_sm16.json"
  step bench-mlp-sm16 60 "$BENCH" runs/bench/synthetic-hopper-h16.safetensors --sms 16 --candidates 1,64 \
    --iters 100 --json "$OUT/mlp_sm16.json"
  # The mlp family: its plans as before, then its dense layers shared by 2-8 blocks per candidate
  # (one barrier per layer), which it does not do by default: the default size at N = 1 and 16.
  for h in 16 32; do
    step "bench-cxx-h$h" 120 "$BENCH" "runs/bench/synthetic-hopper-h$h.safetensors" --iters 100 --json "$OUT/cuda_cxx_h$h.json"
  done
  for g in 2 4 8; do
    MPD_CUDA_BLOCKS_PER_CANDIDATE=$g step "bench-mlp-group$g" 120 "$BENCH" runs/bench/synthetic-hopper-h16.safetensors \
      --candidates 1,16 --iters 100 --json "$OUT/mlp_group$g.json"
  done
  # The old design's authors' size (one block per candidate, by the performance model 1.5-3 s a plan).
  MPD_CUDA_BLOCKS_PER_CANDIDATE=1 MPD_CUDA_UNET_SCRATCH=global step bench-unet-authors-group1 120 "$BENCH" \
    runs/bench/synthetic-hopper-unet-authors.safetensors --candidates 1 --warmup 1 --iters 2 \
    --json "$OUT/unet_authors_group1.json"
  # Against the PyTorch reference on the same GPU (eager and graph-replayed), from Python.
  step gpu-reference 300 python3 benchmarks/gpu_reference_latency.py --iters "${ITERS:-50}" --out "$OUT/gpu_latency.json"
  # What users run (issue 34): mpdiffuser bench --backend cuda, both families (cold and warm-started),
  # the authors' size and the fast mode, N = 1 and 64.
  step bench-cli-cuda 240 bash -c "python3 -m mpdiffuser bench --backend cuda --candidates 1 16 64 256 \
    --warm-start-level 5 --out $OUT/bench_cuda_mlp.json && python3 -m mpdiffuser bench --backend cuda \
    --architecture unet --candidates 1 64 --iters 20 --warm-start-level 5 --out $OUT/bench_cuda_unet.json"
  step bench-cli-cuda-unet-authors 240 python3 -m mpdiffuser bench --backend cuda \
    --model-file runs/bench/synthetic-hopper-unet-authors-fast.safetensors --candidates 1 --iters 5 \
    --out "$OUT/bench_cuda_unet_authors.json"
  step bench-cli-cuda-fast 240 bash -c "python3 -m mpdiffuser bench --backend cuda \
    --model-file runs/bench/synthetic-hopper-unet-fast.safetensors --candidates 1 64 --iters 20 \
    --out $OUT/bench_cuda_unet_fast.json && python3 -m mpdiffuser bench --backend cuda \
    --model-file runs/bench/synthetic-humanoid-unet-fast.safetensors --candidates 1 64 --iters 10 \
    --out $OUT/bench_cuda_unet_humanoid_fast.json"
fi

if want pytest; then
  # The Python module's CUDA paths (after the benchmarks: the C++ tests above checked the plans).
  step pytest-cuda 300 python3 -m pytest -q tests/python/sampling/test_sampler.py tests/python/test_noise.py \
    tests/python/test_cli_pipeline.py -k cuda
  MPD_CUDA_CANDIDATES_PER_BLOCK=4 step pytest-cuda-cpb4 240 python3 -m pytest -q \
    tests/python/sampling/test_sampler.py -k "cuda_matches and not hopper"
fi

if want sanitize; then
  # Races in shared memory and barriers used wrongly, over every CUDA plan test
  for tool in racecheck synccheck; do
    step "sanitizer-$tool" 300 compute-sanitizer --tool "$tool" --error-exitcode 1 build/gpu/tests/cpp/cuda_plan_test
  done
fi

if want sweep; then
  for cpb in 1 2 4; do
    for h in ${SWEEP_H:-32}; do
      MPD_CUDA_CANDIDATES_PER_BLOCK=$cpb step "sweep-cpb$cpb-h$h" 120 "$BENCH" "runs/bench/synthetic-hopper-h$h.safetensors" \
        --candidates 16,64,256,1024 --iters 20 --json "$OUT/sweep.json" && cat "$OUT/sweep.json" >>"$OUT/sweep.jsonl"
      rm -f "$OUT/sweep.json"
    done
  done
fi

if want baseline && [ -n "${BASELINE:-}" ]; then
  base=/tmp/mpd-baseline
  rm -rf "$base" && mkdir -p "$base" && cp -r CMakeLists.txt cmake csrc benchmarks tests examples "$base"/ &&
    cp "$BASELINE" "$base/csrc/cuda/sampler.cu"
  step baseline-build 300 bash -c "cmake -S $base -B $base/build -G Ninja -DMPD_BUILD_PYTHON=OFF -DMPD_BUILD_TESTS=OFF \
    -DMPD_BUILD_EXAMPLES=OFF -DMPD_BUILD_BENCHMARKS=ON -DMPD_ENABLE_CUDA=ON -DMPD_CUDA_ARCHITECTURES=$ARCH >/dev/null &&
    cmake --build $base/build --target mpd_bench_cuda"
  for h in 16 32; do
    step "baseline-h$h" 120 "$base/build/benchmarks/mpd_bench_cuda" "runs/bench/synthetic-hopper-h$h.safetensors" \
      --iters 100 --json "$OUT/base.json" && cat "$OUT/base.json" >>"$OUT/baseline.jsonl"
    rm -f "$OUT/base.json"
  done
fi

if want profile && ! command -v ncu >/dev/null; then
  echo "ncu not found: the profile step is skipped" | tee -a "$LOG"
  printf '{"step": "profile", "rc": null, "skipped": "ncu not found"}\n' >>"$OUT/steps.jsonl"
elif want profile; then
  # The unet kernel (one candidate per block): where its time goes, for the fusion the targets need.
  step ncu-unet 180 ncu --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section WarpStateStats --section Occupancy -k regex:plan_kernel -c 1 "$BENCH" \
    runs/bench/synthetic-hopper-unet.safetensors --candidates 64 --iters 1
  for n in 64 1024; do
    step "ncu-n$n" 180 ncu --clock-control none --section SpeedOfLight --section ComputeWorkloadAnalysis \
      --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats \
      -k regex:plan_kernel -c 1 "$BENCH" runs/bench/synthetic-hopper-h32.safetensors --candidates $n --iters 1
  done
fi
if want train; then
  step pytest-train-gpu 300 python3 -m pytest -q tests/python/training -k "cuda or device or precision or compile"
  # The command end to end on the GPU: models at once, steps captured; then two seeds at once.
  step train-cli-gpu 180 bash -c "rm -rf $OUT/cli && python3 -m mpdiffuser train --bundle $OUT/cli/bundle \
    --data python/mpdiffuser/data/demo/hopper-medium-200k-20k.hdf5 --steps 600 --device cuda &&
    python3 -m mpdiffuser train --bundle $OUT/cli/seeds --data python/mpdiffuser/data/demo/hopper-medium-200k-20k.hdf5 \
    --steps 600 --device cuda --seeds 0 1 --model planner"
  data=${TRAIN_DATA:-python/mpdiffuser/data/demo/hopper-medium-200k-20k.hdf5}
  # The MLPs: today's path (batches on the host, eager) against batches on the device, eager and
  # with the step captured as a CUDA graph, in fp32, tf32 and bf16.
  step train-throughput-host 120 python3 benchmarks/train_throughput.py --data "$data" --device cuda \
    --precision fp32 --batches host --steps "${TRAIN_STEPS:-2000}" --warmup 200 --out "$OUT/train_gpu_host.json"
  step train-throughput 300 python3 benchmarks/train_throughput.py --data "$data" --device cuda \
    --precision fp32 tf32 bf16 --batches device --capture auto off --steps "${TRAIN_STEPS:-2000}" --warmup 200 \
    --out "$OUT/train_gpu.json"
  # The U-Nets, batches on the device: the default size at the default batch, the authors' at theirs.
  step train-throughput-unet 240 python3 benchmarks/train_throughput.py --data "$data" --device cuda \
    --architecture unet --models planner --precision fp32 tf32 bf16 --batches device --steps 300 --warmup 50 \
    --out "$OUT/train_gpu_unet.json"
  step train-throughput-unet-authors 240 python3 benchmarks/train_throughput.py --data "$data" --device cuda \
    --architecture unet --unet-dim 128 --unet-mults 1 4 8 --horizon 32 --batch-size 64 --models planner \
    --precision tf32 bf16 --batches device --steps 300 --warmup 50 --out "$OUT/train_gpu_unet_authors.json"
fi
echo "done: $LOG"
