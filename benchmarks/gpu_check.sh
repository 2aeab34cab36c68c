#!/usr/bin/env bash
# GPU check: TensorFlow's cuda path and the compute-bound workloads on one GPU, in at most ~9.6 minutes (the sum of
# the step limits, 585 s).
#
#     OUT=some/folder bash benchmarks/gpu_check.sh
#
# Runs from a source checkout with whatever frameworks the machine has (PYTHONPATH=src, no install). Steps: the
# GPU and the frameworks that see it; the environment record; TensorFlow's cuda path (parity of seed-mlp on the
# GPU, fp32 with TF32 off and bf16, against the float64 reference) when TensorFlow is installed; parity of
# gpt2-small at its parity scale on the GPU in every framework; the measured peaks (fp32, TF32, bf16, fp16
# matmul TFLOP/s); then the compute-bound workloads at full scale in every framework, fp32 (TF32 off), tf32 and
# bf16, one process per cell, stored in $OUT/gpu.db with their JSON; the table of achieved TFLOP/s, MFU, energy
# per sample and device memory peak (benchmarks/gpu_table.py); the HTML report. Every step has its own time limit
# and log, so a step that fails or overruns leaves the others' results (a run step's finished cells stay in the
# database and its JSON); all of it ends up in $OUT/gpu-check.tgz with the table and the HTML report beside it.
#
# Knobs: FRAMEWORKS (default: those of torch, tensorflow, jax that import), COMPUTE_WORKLOADS (default
# "gpt2-small resnet18"; bert-base needs about 150 s more), PRECISIONS (default fp32,tf32,bf16), PYTHON,
# DEVICE=cpu: a dry run on a machine without a GPU (tf32 dropped, as it is cuda only; the compute-bound
# workloads at SCALE, default 0.0625 there, so that the CPU finishes, without % of peak). DEPLOY=1 adds a step
# (limit 240 s; 45 s in the CPU dry run) that serves seed-mlp along the frameworks' own paths on the device
# (isobench deploy --device cuda: torch eager/compile, tf.function, XLA, jax.jit; fp32, batch 1 and 32, 2
# processes each), never run on a GPU yet; with it the limits add up to 825 s, over a 600 s device command, so
# give it its own call (DEPLOY=only: that step alone).
set -u
OUT=${OUT:-gpu-check-out}
W="$OUT/gpu-check"  # everything is written here, then packed into $OUT/gpu-check.tgz
mkdir -p "$W"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 ISOBENCH_DB="$W/gpu.db"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
GPUS=(); [ "$DEVICE" = cuda ] && GPUS=(--gpus 0)
COMPUTE_WORKLOADS=${COMPUTE_WORKLOADS:-gpt2-small resnet18}
if [ "$DEVICE" = cuda ]; then
  PRECISIONS=${PRECISIONS:-fp32,tf32,bf16}; SCALE_ARGS=()
else  # the dry run: no tf32 on a CPU, small models, and the runs skip the peak (its own step measures it)
  PRECISIONS=${PRECISIONS:-fp32,bf16}; SCALE_ARGS=(--scale "${SCALE:-0.0625}" --no-peak)
fi
if [ -z "${FRAMEWORKS:-}" ]; then  # the frameworks this Python can import, in the default order
  FRAMEWORKS=$($PY -c 'import importlib.util as u
print(",".join(f for f in ("torch", "tensorflow", "jax") if u.find_spec(f)))')
fi
FW=$FRAMEWORKS
step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $W/NAME.log, report the exit status
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${limit} s): $*"
  timeout -k 10 "$limit" "$@" > "$W/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-25}" "$W/$name.log"
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
}

echo "frameworks: $FW; device: $DEVICE; compute-bound: $COMPUTE_WORKLOADS in $PRECISIONS"
deploy_step() {  # the frameworks' own serving paths on the device, checked against the float64 reference
  step deploy 240 $PY -m isobench deploy seed-mlp --frameworks "$FW" --device "$DEVICE" "${GPUS[@]}" \
    --paths torch/eager,torch/compile,tensorflow/function,tensorflow/xla,jax/jit --quantize none \
    --batch-sizes 1,32 --repeats 2 --json "$W/deploy.json"
}
if [ "${DEPLOY:-0}" = only ]; then
  deploy_step
  tar czf "$OUT/gpu-check.tgz" -C "$OUT" gpu-check && rm -rf "$W" && ls -la "$OUT"
  exit 0
fi
step gpu 40 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv; \
  $PY -c 'import sys, importlib.util as u
print(sys.version.split()[0])
if u.find_spec(\"torch\"):
    import torch; print(\"torch\", torch.__version__, torch.version.cuda, torch.cuda.is_available())
if u.find_spec(\"jax\"):
    import jax; print(\"jax\", jax.__version__, jax.devices())
if u.find_spec(\"tensorflow\"):
    import tensorflow as tf; print(\"tensorflow\", tf.__version__, tf.config.list_physical_devices(\"GPU\"))
else:
    print(\"tensorflow not installed: its cuda path stays unchecked\")'"
step env 15 $PY -m isobench env
# TensorFlow's cuda path: parity on the GPU against the float64 reference, fp32 (TF32 off) and bf16
case ",$FW," in
  *,tensorflow,*) step tf-cuda 60 $PY -m isobench parity seed-mlp --frameworks tensorflow --precision fp32,bf16 \
                    --device "$DEVICE" ;;
  *) echo "=== tf-cuda: skipped, tensorflow is not installed here" ;;
esac
# the compute-bound workloads' parity on the GPU, at their parity scale (the float64 reference runs on the CPU)
step parity-gpt2 60 $PY -m isobench parity gpt2-small --frameworks "$FW" --device "$DEVICE"
# the peaks MFU is measured against, stored in $ISOBENCH_DB and reused by the runs below
step peak 75 $PY -m isobench peak --frameworks "$FW" --device "$DEVICE"
# full scale, one process per cell (the parity above covers them), stored and written as JSON
for wl in $COMPUTE_WORKLOADS; do
  limit=130; [ "$wl" = gpt2-small ] && limit=170
  step "run-$wl" "$limit" $PY -m isobench run "$wl" --frameworks "$FW" --precision "$PRECISIONS" \
    "${SCALE_ARGS[@]}" --device "$DEVICE" "${GPUS[@]}" --repeats 1 --no-parity --warmup 0 --json "$W/$wl.json"
done
[ "${DEPLOY:-0}" = 1 ] && deploy_step
step table 10 bash -c "$PY benchmarks/gpu_table.py $W/*.json | tee $W/table.md"
step report 25 $PY -m isobench report --html "$W/gpu.html"
tar czf "$OUT/gpu-check.tgz" -C "$OUT" gpu-check && cp "$W/table.md" "$W/gpu.html" "$OUT/" 2>/dev/null
rm -rf "$W"
ls -la "$OUT"
