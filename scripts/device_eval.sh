#!/usr/bin/env bash
# Runs `kvforge eval` on the GPU machine with the carried binary (see device_check.sh) and leaves the
# report (report.md, report.json, SVG plots) in OUT_DIR/eval.
# Usage on the device: scripts/device_eval.sh OUT_DIR [kvforge eval arguments ...]
set -uo pipefail
out=${1:?usage: device_eval.sh OUT_DIR [eval arguments ...]}
shift
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
mkdir -p "$out"
nvidia-smi --query-gpu=name --format=csv,noheader
.carry/kvforge eval --device cuda --out "$out/eval" "$@" 2>"$out/eval-progress.log"
echo "kvforge eval exit $?"
