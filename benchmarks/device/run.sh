#!/usr/bin/env bash
# The GPU rows of `tgir bench`, in one command, on a CUDA machine that has PyTorch with CUDA but
# may lack TensorRT, onnxruntime-gpu, the C runtime's build dependencies and network access.
#
#   bash benchmarks/device/run.sh [OUT_DIR]          # OUT_DIR default: $OUT, else ./bench-gpu
#
# Steps (each checked and time-boxed; a step that cannot run here turns its target into a 'skipped'
# row with the reason instead of stopping the run):
#   1. pip install --no-deps --no-build-isolation -e .   (keeps this machine's torch/CUDA)
#   2. a small CSS-2D split (scale 0.02: 380 test images, 360 queries) for inputs and recall
#   3. the shipped AMC as an fp32 ONNX Runtime bundle (tgir-export build-engine)
#   4. optional: AOTInductor CUDA packages of it (tgir-export aoti --device cuda), libtgir (CMake)
#      for the C runtime on the GPU, TensorRT FP16/INT8 bundles when TensorRT imports
#   5. tgir bench: PyTorch eager on CPU (the baseline) and CUDA, ONNX Runtime CPU and CUDA EP,
#      TensorRT, AOTInductor CUDA (from Python), torch.compile CUDA, the C runtime on CUDA; then
#      search scaling 10K/100K/1M. The bench rewrites its JSON and Markdown after every target and
#      stops at the deadline, so a run cut short still returns what it measured.
# Writes bench_gpu.json, bench_gpu.md (paste into benchmarks/RESULTS.md), bench_gpu.log,
# and bench_gpu.png when matplotlib is installed, into OUT_DIR.
#
# Knobs (environment): DEADLINE (seconds for the whole script, 520: a lent machine's command may
# run 600 s), BATCHES (1,8,32), ITERS (50), WARMUP (10), SEARCH_SIZES (10K,100K,1M), AOTI (1:
# compile the AOTInductor CUDA packages; 0: skip them and their two targets), TARGET_TIMEOUT (s per
# target, 240), WORK (scratch folder; default: a fresh temporary one), REHEARSE (1: run on a machine
# without CUDA, where every GPU target becomes a skipped row: proves the script, measures no GPU),
# INSTALL (1; 0 uses the tgir already installed, as the tests do), PYTHON (default: python3).
#
# The C runtime needs nlohmann-json's and OpenSSL's headers. Where the machine lacks them and has
# no network, run `bash benchmarks/device/fetch-deps.sh` beforehand on a machine with apt: it puts
# their Debian packages into .devdeps/ (ignored by git; carry it), which this script unpacks.
set -euo pipefail

OUT_DIR=${1:-${OUT:-bench-gpu}}
DEADLINE=${DEADLINE:-520}
BATCHES=${BATCHES:-1,8,32}
ITERS=${ITERS:-50}
WARMUP=${WARMUP:-10}
SEARCH_SIZES=${SEARCH_SIZES:-10K,100K,1M}
AOTI=${AOTI:-1}
TARGET_TIMEOUT=${TARGET_TIMEOUT:-240}
REHEARSE=${REHEARSE:-0}
INSTALL=${INSTALL:-1}
WORK=${WORK:-$(mktemp -d -t tgir-bench-XXXXXX)}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# One thread for numpy's BLAS (the exact search every target's end-to-end stage runs on the host): a
# second spinning pool beside PyTorch's OpenMP workers on the same cores stalls both until the
# scheduler steps in (python -m tgir.benchmarks.thread_contention on 2 cores: a 2.5 ms conv then a
# 0.18 ms search took 8.0 ms, 3.2 ms with this), which would inflate the eager CPU baseline. The same for every target; recorded in the JSON.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
# The interpreter that holds PyTorch (on the lent GPU machines that is python3; `python` may not exist),
# and tgir's commands through it, so that a console-script folder missing from PATH does not matter.
PY=${PYTHON:-$(command -v python3 || command -v python)}
TGIR=("$PY" -m tgir)
TGIR_EXPORT=("$PY" -m tgir.export)
mkdir -p "$OUT_DIR" "$WORK"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG="$OUT_DIR/bench_gpu.log"
cd "$ROOT"

log() { echo "[run.sh $(date +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG" >&2; }
left() { echo $((DEADLINE - SECONDS)); }
# A step that stops the script says where, and shows the end of the log (often all a caller sees).
trap 'code=$?; log "FAILED (exit $code) at line $LINENO: $BASH_COMMAND"; tail -n 40 "$LOG" >&2; exit $code' ERR
# Seconds a step may take: its own cap, but never past the deadline less what the bench needs.
budget() { local cap=$1 reserve=$2 rest; rest=$(($(left) - reserve)); echo $((rest < cap ? (rest > 1 ? rest : 1) : cap)); }

if [ "$INSTALL" = 1 ]; then
  log "1/5 install tgir (no dependencies)"
  # --no-build-isolation: no network for a build environment; it needs setuptools >= 70.1 (or wheel) here
  "$PY" -m pip install --no-deps --no-build-isolation -q -e . >>"$LOG" 2>&1
else
  log "1/5 INSTALL=0: using the tgir installed here"
fi
REHEARSE=$REHEARSE "$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import os
import sys

import torch

print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")
if not torch.cuda.is_available():
    if os.environ["REHEARSE"] != "1":
        sys.exit("run.sh: PyTorch sees no CUDA device; this script produces the GPU rows and needs one "
                 "(REHEARSE=1 runs it anyway, every GPU target skipped)")
    print("REHEARSE=1: no CUDA device; the GPU targets will be reported as skipped")
else:
    print(f"GPU 0: {torch.cuda.get_device_name(0)}")
EOF
nvidia-smi >>"$LOG" 2>&1 || log "nvidia-smi not available (GPU memory of non-PyTorch targets is then not reported)"

log "2/5 CSS-2D test data (scale 0.02)"
[ -f "$WORK/css2d/css2d.json" ] || "${TGIR[@]}" data css2d --out "$WORK/css2d" --scale 0.02 >>"$LOG" 2>&1

log "3/5 fp32 bundle of the shipped AMC (ONNX Runtime)"
FP32="$WORK/fp32"
timeout "$(budget 180 120)" "${TGIR_EXPORT[@]}" build-engine --precision fp32 --backend onnxruntime --out "$FP32" >>"$LOG" 2>&1

log "4/5 optional: AOTInductor CUDA packages, libtgir, TensorRT bundles"
if [ "$AOTI" = 1 ]; then
  if timeout "$(budget 200 200)" "${TGIR_EXPORT[@]}" aoti --bundle "$FP32" --device cuda >>"$LOG" 2>&1; then
    log "    AOTInductor CUDA packages compiled"
  else
    log "    AOTInductor CUDA packages not compiled (exit $?; see $LOG): their targets report why"
  fi
  cmake_args=(-DTGIR_BUILD_EXAMPLES=OFF)
  source "$ROOT/benchmarks/device/devdeps.sh"
  if devdeps_cmake_args "$ROOT/.devdeps" "$WORK/sysroot" >>"$LOG" 2>&1; then
    cmake_args+=("${DEVDEPS_CMAKE_ARGS[@]}")
  fi
  if timeout "$(budget 150 180)" env CXXFLAGS="${DEVDEPS_CXXFLAGS:-}" "$PY" -c "import os, sys; \
from tgir.runtime.clib import build_library as b; \
print(b(tests=False, jobs=os.cpu_count() or 2, extra=sys.argv[1:]))" "${cmake_args[@]}" >>"$LOG" 2>&1; then
    log "    libtgir built (runtime/build/libtgir.so)"
  else
    log "    libtgir did not build here (see $LOG): the C runtime target reports why it is skipped"
  fi
fi
# Most wanted first: if the deadline comes, the targets left are the slow-to-compile ones.
targets=(
  --target "eager-cpu=torch:$FP32"
  --target "eager-cuda=torch,device=cuda:$FP32"
  --target "ort-cpu=onnxruntime:$FP32"
  --target "ort-cuda=onnxruntime,provider=cuda:$FP32"
)
if "$PY" -c "import tensorrt" >/dev/null 2>&1; then
  for precision in fp16 int8; do
    if timeout "$(budget 240 200)" "${TGIR_EXPORT[@]}" build-engine --precision "$precision" --backend tensorrt \
        --calib-data "$WORK/css2d" --out "$WORK/trt_$precision" >>"$LOG" 2>&1; then
      targets+=(--target "trt-$precision=tensorrt,device=cuda:$WORK/trt_$precision")
    else
      log "    TensorRT $precision build failed (see $LOG)"
      targets+=(--target "trt-$precision=tensorrt,device=cuda:$FP32")
    fi
  done
else
  log "    TensorRT is not installed: its targets are reported as skipped"
  targets+=(--target "trt=tensorrt,device=cuda:$FP32")
fi
if [ "$AOTI" = 1 ]; then
  targets+=(--target "aoti-cuda=aoti,device=cuda:$FP32")
fi
targets+=(--target "compile-cuda=torch-compile,device=cuda:$FP32")
if [ "$AOTI" = 1 ]; then
  targets+=(--target "aoti-c-cuda=c,device=cuda:$FP32")
fi

log "5/5 tgir bench (batches $BATCHES, $ITERS timed runs after $WARMUP warm-up runs, $(left) s left)"
plot=()
if "$PY" -c "import matplotlib" >/dev/null 2>&1; then
  plot=(--plot "$OUT_DIR/bench_gpu.png")
fi
"${TGIR[@]}" bench "${targets[@]}" --baseline eager-cpu --batch "$BATCHES" --iters "$ITERS" --warmup "$WARMUP" \
  --data "$WORK/css2d" --search-sizes "$SEARCH_SIZES" --timeout "$TARGET_TIMEOUT" --deadline "$(budget 100000 15)" \
  --json "$OUT_DIR/bench_gpu.json" --markdown "$OUT_DIR/bench_gpu.md" "${plot[@]}" 2> >(tee -a "$LOG" >&2) >/dev/null
log "done: $OUT_DIR/bench_gpu.json, $OUT_DIR/bench_gpu.md${plot:+, $OUT_DIR/bench_gpu.png}"
