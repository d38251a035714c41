#!/usr/bin/env bash
# RLKV on the GPU machine with the carried binary (see device_check.sh): trains head gates on the GPU base model
# with GRPO (recipes/small-base-gpu-rlkv.yaml) and with DuoAttention's distillation, then evaluates both
# against random heads and a per-layer split at sparsity 0.25, 0.5 and 0.75 on the reasoning and retrieval
# tasks, leaving the artifacts, training logs and the report under OUT_DIR.
# Usage on the device: scripts/device_rlkv.sh OUT_DIR [extra kvforge eval arguments ...]
set -uo pipefail
out=${1:?usage: device_rlkv.sh OUT_DIR [eval arguments ...]}
shift
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
mkdir -p "$out"
nvidia-smi --query-gpu=name --format=csv,noheader
/usr/bin/time -f "grpo wall %e s" .carry/kvforge train recipes/small-base-gpu-rlkv.yaml out="$out/rlkv" \
  >"$out/rlkv.log" 2>&1
tail -22 "$out/rlkv.log"
/usr/bin/time -f "distill wall %e s" .carry/kvforge train recipes/small-base-gpu-rlkv.yaml objective=distill \
  distill.tasks=[niah_multikey,passkey] distill.batch_size=8 train.lr=2e-2 train.weight_decay=0 train.steps=300 \
  out="$out/duo" >"$out/duo.log" 2>&1
tail -14 "$out/duo.log"
policies=(--artifact "$out/rlkv/rlkv.safetensors" --artifact "$out/duo/duo.safetensors")
for sparsity in 0.25 0.5 0.75; do
  policies+=(--policy "heads:sparsity=$sparsity" --policy "heads:sparsity=$sparsity,per_layer=1")
done
.carry/kvforge eval --device cuda --model models/small-base-gpu --out "$out/eval" "${policies[@]}" \
  --tasks arithmetic,passkey,niah_single --lengths 1024 --samples 200 --batch-size 50 "$@" \
  2>"$out/eval-progress.log"
echo "kvforge eval exit $?"
