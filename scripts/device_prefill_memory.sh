#!/usr/bin/env bash
# Runs on the GPU machine over binaries carried in .carry/ (see device_check.sh): writes a random-weight checkpoint
# of Llama-3.1-8B's shape, then `kvforge eval` at long prompts with the full cache and the scored selective layouts,
# so each cell's peak device memory shows whether a prefill scales: OUT_DIR/report-LENGTHxBATCH.json and the progress
# log beside it (the rest of each report stays in /tmp/prefill-memory/).
# Usage on the device: scripts/device_prefill_memory.sh OUT_DIR "LENGTH:BATCH ..." [policy spec ...]
set -uo pipefail
out=${1:?usage: device_prefill_memory.sh OUT_DIR "LENGTH:BATCH ..." [policy ...]}
cells=${2:?usage: device_prefill_memory.sh OUT_DIR "LENGTH:BATCH ..." [policy ...]}
shift 2
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
model=/tmp/llama-3.1-8b-random
[ -f "$model/config.json" ] || python3 scripts/make_random_checkpoint.py "$model" || exit 1
policies=()
for policy in "$@"; do policies+=(--policy "$policy"); done
for cell in $cells; do
  length=${cell%:*} batch=${cell#*:}
  echo "== $length tokens x batch $batch"
  .carry/kvforge eval --model "$model" --device cuda --tasks passkey --lengths "$length" --samples "$batch" \
    --batch-size "$batch" "${policies[@]}" answer_perplexity=false --out "/tmp/prefill-memory/${length}x${batch}" \
    2>"$out/${length}x${batch}.log" | sed -n '/^speed and memory/,/^report:/p'
  echo "kvforge eval exit ${PIPESTATUS[0]}"
  tail -2 "$out/${length}x${batch}.log"
  cp "/tmp/prefill-memory/${length}x${batch}/report.json" "$out/report-${length}x${batch}.json" 2>/dev/null
done
