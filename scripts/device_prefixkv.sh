#!/usr/bin/env bash
# PrefixKV on the GPU machine with the carried binary (see device_check.sh): calibrates the GPU base model
# (recipes/prefixkv-small-gpu.yaml) and evaluates its budgets against uniform budgets and PyramidKV at 20%, 30%
# and 50% retained, on retrieval and reasoning, leaving the artifact and the report under OUT_DIR.
# Usage on the device: scripts/device_prefixkv.sh OUT_DIR [extra kvforge eval arguments ...]
set -uo pipefail
out=${1:?usage: device_prefixkv.sh OUT_DIR [eval arguments ...]}
shift
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
mkdir -p "$out"
nvidia-smi --query-gpu=name --format=csv,noheader
/usr/bin/time -f "calibration wall %e s, peak RSS %M KB" .carry/kvforge train recipes/prefixkv-small-gpu.yaml \
  out="$out/prefixkv" 2>"$out/calibration.log" | tail -12
tail -1 "$out/calibration.log"
artifact="$out/prefixkv/prefixkv.safetensors"
# PrefixKV and uniform share the eviction, so their difference is the per-layer allocation alone. The main
# comparison uses the defaults; the ablation (half the samples) swaps one choice at a time: the paper's scores
# from every prompt query (window=0), each KV head choosing its own tokens (per_head=1), and SnapKV's decode
# rule of keeping every generated token (decode=0).
main=() ablation=()
for budget in 0.2 0.3 0.5; do
  main+=(--artifact "$artifact:budget=$budget" --policy "uniform:budget=$budget" --policy "pyramidkv:budget=$budget")
  for change in window=0 per_head=1; do
    ablation+=(--artifact "$artifact:budget=$budget,$change" --policy "uniform:budget=$budget,$change")
  done
  ablation+=(--artifact "$artifact:budget=$budget,decode=0")
done
common=(--device cuda --model models/small-base-gpu --tasks passkey,niah_single,niah_multikey,arithmetic --lengths 1024)
.carry/kvforge eval "${common[@]}" --out "$out/eval" "${main[@]}" --samples 200 --batch-size 50 "$@" \
  2>"$out/eval-progress.log"
echo "kvforge eval exit $?"
.carry/kvforge eval "${common[@]}" --out "$out/ablation" "${ablation[@]}" --samples 100 --batch-size 50 "$@" \
  2>"$out/ablation-progress.log"
echo "kvforge eval exit $?"
