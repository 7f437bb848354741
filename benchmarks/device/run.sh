#!/usr/bin/env bash
# The GPU rows of `tgir bench`, in one command, on a CUDA machine that has PyTorch with CUDA but
# may lack TensorRT, onnxruntime-gpu, the C runtime's build tools and network access.
#
#   bash benchmarks/device/run.sh [OUT_DIR]          # OUT_DIR default: $OUT, else ./bench-gpu
#
# Steps (each checked; a step that cannot run here turns its target into a 'skipped' row with the
# reason instead of stopping the run):
#   1. pip install --no-deps --no-build-isolation -e .   (keeps this machine's torch/CUDA)
#   2. a small CSS-2D split (scale 0.02: 380 test images, 360 queries) for inputs and recall
#   3. the shipped AMC as an fp32 ONNX Runtime bundle (tgir-export build-engine)
#   4. optional: AOTInductor CUDA packages of it (tgir-export aoti --device cuda) and libtgir
#      (CMake), for the C runtime on the GPU; TensorRT FP16/INT8 bundles when TensorRT imports
#   5. tgir bench: PyTorch eager on CPU (the baseline) and CUDA, torch.compile CUDA, ONNX Runtime
#      CPU and CUDA EP, the C runtime on CUDA (AOTInductor), TensorRT; search scaling 10K/100K/1M
# Writes bench_gpu.json, bench_gpu.md (paste into benchmarks/RESULTS.md), bench_gpu.log,
# and bench_gpu.png when matplotlib is installed, into OUT_DIR.
#
# Knobs (environment): BATCHES (1,8,32), ITERS (50), WARMUP (10), SEARCH_SIZES (10K,100K,1M),
# WORK (scratch folder; default: a fresh temporary one), TARGET_TIMEOUT (s per target, 900).
set -euo pipefail

OUT_DIR=${1:-${OUT:-bench-gpu}}
BATCHES=${BATCHES:-1,8,32}
ITERS=${ITERS:-50}
WARMUP=${WARMUP:-10}
SEARCH_SIZES=${SEARCH_SIZES:-10K,100K,1M}
TARGET_TIMEOUT=${TARGET_TIMEOUT:-900}
WORK=${WORK:-$(mktemp -d -t tgir-bench-XXXXXX)}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mkdir -p "$OUT_DIR" "$WORK"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG="$OUT_DIR/bench_gpu.log"
cd "$ROOT"

log() { echo "[run.sh $(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }

log "1/5 install tgir (no dependencies)"
pip install --no-deps --no-build-isolation -q -e . >>"$LOG" 2>&1
python - <<'EOF' 2>&1 | tee -a "$LOG"
import sys
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")
if not torch.cuda.is_available():
    sys.exit("run.sh: PyTorch sees no CUDA device; this script produces the GPU rows and needs one")
print(f"GPU 0: {torch.cuda.get_device_name(0)}")
EOF
nvidia-smi >>"$LOG" 2>&1 || log "nvidia-smi not available (GPU memory of non-PyTorch targets is then not reported)"

log "2/5 CSS-2D test data (scale 0.02)"
[ -f "$WORK/css2d/css2d.json" ] || tgir data css2d --out "$WORK/css2d" --scale 0.02 >>"$LOG" 2>&1

log "3/5 fp32 bundle of the shipped AMC (ONNX Runtime)"
tgir-export build-engine --precision fp32 --backend onnxruntime --out "$WORK/fp32" >>"$LOG" 2>&1
FP32="$WORK/fp32"

log "4/5 optional: AOTInductor CUDA packages + libtgir, TensorRT bundles"
if tgir-export aoti --bundle "$FP32" --device cuda >>"$LOG" 2>&1; then
  log "    AOTInductor CUDA packages compiled"
else
  log "    AOTInductor CUDA compile failed (see $LOG); the C runtime target reports why it is skipped"
fi
if python -c "from tgir.runtime.clib import build_library as b; import os; \
print(b(tests=False, jobs=os.cpu_count() or 2, extra=['-DTGIR_BUILD_EXAMPLES=OFF']))" >>"$LOG" 2>&1; then
  log "    libtgir built (runtime/build/libtgir.so)"
else
  log "    libtgir did not build here (cmake, nlohmann-json or OpenSSL headers missing? see $LOG)"
fi
targets=(
  --target "eager-cpu=torch:$FP32"
  --target "eager-cuda=torch,device=cuda:$FP32"
  --target "compile-cuda=torch-compile,device=cuda:$FP32"
  --target "ort-cpu=onnxruntime:$FP32"
  --target "ort-cuda=onnxruntime,provider=cuda:$FP32"
  --target "aoti-c-cuda=c,device=cuda:$FP32"
)
if python -c "import tensorrt" >/dev/null 2>&1; then
  for precision in fp16 int8; do
    if tgir-export build-engine --precision "$precision" --backend tensorrt --calib-data "$WORK/css2d" \
        --out "$WORK/trt_$precision" >>"$LOG" 2>&1; then
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

log "5/5 tgir bench (batches $BATCHES, $ITERS timed runs after $WARMUP warm-up runs)"
plot=()
if python -c "import matplotlib" >/dev/null 2>&1; then
  plot=(--plot "$OUT_DIR/bench_gpu.png")
fi
tgir bench "${targets[@]}" --baseline eager-cpu --batch "$BATCHES" --iters "$ITERS" --warmup "$WARMUP" \
  --data "$WORK/css2d" --search-sizes "$SEARCH_SIZES" --timeout "$TARGET_TIMEOUT" \
  --json "$OUT_DIR/bench_gpu.json" --markdown "$OUT_DIR/bench_gpu.md" "${plot[@]}" 2> >(tee -a "$LOG" >&2)
log "done: $OUT_DIR/bench_gpu.json, $OUT_DIR/bench_gpu.md${plot:+, $OUT_DIR/bench_gpu.png}"
