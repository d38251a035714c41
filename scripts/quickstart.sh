#!/usr/bin/env bash
# The main job on CPU, on the committed tiny base model (models/tiny-base):
#   1. inspect it and let it answer a pass-key and an arithmetic prompt;
#   2. calibrate PrefixKV's per-layer KV budgets for it (kvforge train, about a second), run a short RLKV
#      training of its KV-head gates (10 GRPO steps on arithmetic, about 20 s), train CSKV's low-rank K/V
#      factors at half the channels (60 steps, about 6 s), KV Prediction's auxiliary (every 2nd layer) and
#      predictors (60 steps, about 18 s) and Lizard's linearized attention (60 transfer + 60 LoRA steps, about
#      20 s), each into an artifact;
#   3. evaluate it under the full cache, StreamingLLM and SnapKV at 25% and 50% of the prompt's KV, the
#      PrefixKV artifact at 50%, the RLKV heads at sparsity 0.5, the CSKV cache, the predicted prefill and the
#      linearized model, on
#      identical passkey and arithmetic samples, and write the report (markdown, JSON, SVG plots).
# --pretrain first trains a fresh tiny model from scratch (recipes/tiny-base-cpu.yaml, ~4 minutes on 2 cores)
# and runs the same steps on it.
set -euo pipefail
cd "$(dirname "$0")/.."
model=models/tiny-base
if [ "${1:-}" = "--pretrain" ]; then
  ./build/kvforge pretrain recipes/tiny-base-cpu.yaml out=runs/quickstart-pretrain
  model=runs/quickstart-pretrain/model
fi
./build/kvforge inspect "$model" | sed -n '1,10p'  # the config summary (sed reads all: no SIGPIPE)
./build/kvforge generate --model "$model" --device cpu --max-new-tokens 40 \
  --prompt "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you about the important information there.
The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.
The pass key is 80417. Remember it. 80417 is the pass key.
The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.
What is the pass key? The pass key is" \
  --prompt "Compute (14 + 6) * 3. Think step by step, then give the final line as 'Answer: <number>'."$'\n'
./build/kvforge train recipes/prefixkv-tiny-cpu.yaml model="$model" out=runs/quickstart-prefixkv
./build/kvforge train recipes/tiny-rlkv.yaml model="$model" train.steps=10 out=runs/quickstart-rlkv
./build/kvforge train recipes/cskv-tiny-cpu.yaml model="$model" out=runs/quickstart-cskv
./build/kvforge train recipes/kvpred-tiny-cpu.yaml model="$model" out=runs/quickstart-kvpred
./build/kvforge train recipes/lizard-tiny-cpu.yaml model="$model" out=runs/quickstart-lizard
./build/kvforge eval --model "$model" --device cpu \
  --policy streaming:budget=0.25 --policy streaming:budget=0.5 --policy snapkv:budget=0.25 --policy snapkv:budget=0.5 \
  --artifact runs/quickstart-prefixkv/prefixkv.safetensors:budget=0.5 \
  --artifact runs/quickstart-rlkv/rlkv.safetensors:sparsity=0.5 \
  --artifact runs/quickstart-cskv/cskv.safetensors \
  --artifact runs/quickstart-kvpred/kvpred.safetensors:alone=0 \
  --artifact runs/quickstart-lizard/lizard.safetensors \
  --tasks passkey,arithmetic --lengths 256,512 --samples 50 --out runs/quickstart-eval
