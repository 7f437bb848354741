#!/usr/bin/env bash
# Builds the bundles behind the precision table of benchmarks/RESULTS.md (FP32 vs INT8 per observer
# and flavour vs FP16, CSS-2D test through ONNX Runtime CPU), then measures them with
# `python -m tgir.benchmarks.precision`.
#   usage: [TRT_METHODS="max percentile entropy"] [CPU_METHODS="..."] \
#          benchmarks/precision_css2d.sh DATA_DIR OUT_DIR [MODEL ...]   (models: amc amc_dense itma tirg)
# Every command's exit code is checked (set -e); a finished bundle is not rebuilt.
set -euo pipefail
data=${1:?dataset root (tgir data css2d --out DIR)}; out=${2:?output folder}; shift 2
models=("${@:-amc amc_dense itma tirg}")
read -r -a models <<< "${models[*]}"
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
for m in "${models[@]}"; do
  ckpt="$here/trained/${m}_css2d.pt"
  [ -f "$out/$m/fp32/manifest.json" ] || tgir-export onnx --checkpoint "$ckpt" --out "$out/$m/fp32" \
      --data "$data" --overwrite --json
  [ -f "$out/$m/fp16/manifest.json" ] || tgir-export fp16 --bundle "$out/$m/fp32" --out "$out/$m/fp16" \
      --overwrite --json || echo "fp16 conversion failed for $m" >&2
  for flavour in tensorrt cpu; do
    if [ "$flavour" = tensorrt ]; then methods=${TRT_METHODS:-max percentile entropy}
    else methods=${CPU_METHODS:-max percentile entropy}; fi
    for method in $methods; do
      b="$out/$m/int8_${flavour}_${method}"
      [ -f "$b/manifest.json" ] || tgir-export calibrate --bundle "$out/$m/fp32" --data "$data" \
          --method "$method" --flavour "$flavour" --samples 512 --out "$b" --overwrite --json
    done
  done
done
