#!/usr/bin/env bash
# GPU check: isobench's cuda paths end to end on one GPU, in at most 9.5 minutes (the step limits).
#
#     OUT=some/folder bash benchmarks/gpu_check.sh
#
# Runs from a source checkout with whatever frameworks the machine has (PYTHONPATH=src, no install): the
# environment record, parity on the GPU (fp32 with TF32 off, and bf16) against the float64 reference, a
# measured comparison on cuda stored in $OUT/gpu.db, and the HTML and Markdown reports of it. Every step has
# its own time limit and its own log, so a step that fails or overruns leaves the others' results; all of it
# ends up in $OUT/gpu-check.tgz (logs, database, JSON, reports) with the HTML report beside it.
set -u
OUT=${OUT:-gpu-check-out}
W="$OUT/gpu-check"  # everything is written here, then packed into $OUT/gpu-check.tgz
mkdir -p "$W"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 ISOBENCH_DB="$W/gpu.db"
PY=${PYTHON:-python3}
FW=${FRAMEWORKS:-torch,jax}
RUN_WORKLOADS=${RUN_WORKLOADS:-seed-mlp resnet-mini gpt-tiny}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu: a dry run of this script on a machine without a GPU
GPUS=(); [ "$DEVICE" = cuda ] && GPUS=(--gpus 0)
step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, report the exit status
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${limit} s): $*"
  timeout -k 10 "$limit" "$@" > "$W/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-25}" "$W/$name.log"
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
}

step gpu 30 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
  $PY -c 'import sys, torch, jax; print(sys.version.split()[0], \"torch\", torch.__version__, torch.version.cuda, \
torch.cuda.is_available(), \"jax\", jax.__version__, jax.devices())'"
step env 30 $PY -m isobench env
step list 30 $PY -m isobench list
# parity on the GPU (default modes), fp32 with TF32 off and bf16, against the float64 reference
step parity-seed 90 $PY -m isobench parity seed-mlp --frameworks "$FW" --precision fp32,bf16 --device "$DEVICE"
step parity-resnet 90 $PY -m isobench parity resnet-mini --frameworks "$FW" --precision fp32,bf16 --device "$DEVICE"
# a measured comparison (one process per cell), stored in the database, then reported
step run 170 $PY -m isobench run $RUN_WORKLOADS --frameworks "$FW" --precision fp32,bf16 --scale "${SCALE:-4}" \
  --device "$DEVICE" "${GPUS[@]}" --repeats 1 --no-parity --json "$W/gpu.json"
# torch.compile on the device (Inductor: Triton kernels on a GPU), appended as a second session
step compile 90 $PY -m isobench run seed-mlp --frameworks torch --modes compile --device "$DEVICE" "${GPUS[@]}" \
  --repeats 1 --no-parity
mkdir -p "$W/md"
step report 30 $PY -m isobench report 1 --html "$W/gpu.html" --markdown "$W/md/gpu.md"
tar czf "$OUT/gpu-check.tgz" -C "$OUT" gpu-check && cp "$W/gpu.html" "$OUT/" && rm -rf "$W"
ls -la "$OUT"
