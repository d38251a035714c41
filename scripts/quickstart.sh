#!/usr/bin/env bash
# The main job on CPU, on the committed tiny base model (models/tiny-base), in eight labelled steps, each timed:
#   1. inspect it;  2. let it answer a pass-key and an arithmetic prompt;
#   3-7. calibrate PrefixKV's per-layer KV budgets, train RLKV's KV-head gates (10 GRPO steps on arithmetic), CSKV's
#      low-rank K/V factors at half the channels (60 steps), KV Prediction's auxiliary (every 2nd layer) and
#      predictors (60 steps) and Lizard's linearized attention (60 transfer + 60 LoRA steps), each into an artifact;
#   8. evaluate it under the full cache, StreamingLLM and SnapKV at 25% and 50% of the prompt's KV, the PrefixKV
#      artifact at 50%, the RLKV heads at sparsity 0.5, the CSKV cache, the predicted prefill and the linearized
#      model, on identical passkey and arithmetic samples, and write the report (markdown, JSON, SVG plots).
# The README's "CLI" section gives each step's measured time. --pretrain first trains a fresh tiny model from
# scratch (recipes/tiny-base-cpu.yaml, about 4 minutes on 2 cores) and runs the same steps on it.
set -euo pipefail
cd "$(dirname "$0")/.."
model=models/tiny-base
steps=8
step=0
step_started=$SECONDS
# "title" command...: a banner, the command, then how long it took.
run_step() {
  local title=$1
  shift
  step=$((step + 1))
  printf '\n== step %d/%d: %s ==\n' "$step" "$steps" "$title"
  step_started=$SECONDS
  "$@"
  printf -- '-- step %d took %d s\n' "$step" "$((SECONDS - step_started))"
}
if [ "${1:-}" = "--pretrain" ]; then
  steps=9
  run_step "pretrain a fresh tiny model" ./build/kvforge pretrain recipes/tiny-base-cpu.yaml out=runs/quickstart-pretrain
  model=runs/quickstart-pretrain/model
fi
inspect_summary() { ./build/kvforge inspect "$model" | sed -n '1,10p'; }  # sed reads all: no SIGPIPE
run_step "inspect $model" inspect_summary
run_step "generate: a pass key and a sum" ./build/kvforge generate --model "$model" --device cpu --max-new-tokens 40 \
  --prompt "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you about the important information there.
The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.
The pass key is 80417. Remember it. 80417 is the pass key.
The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.
What is the pass key? The pass key is" \
  --prompt "Compute (14 + 6) * 3. Think step by step, then give the final line as 'Answer: <number>'."$'\n'
run_step "PrefixKV: calibrate per-layer KV budgets" \
  ./build/kvforge train recipes/prefixkv-tiny-cpu.yaml model="$model" out=runs/quickstart-prefixkv
run_step "RLKV: 10 GRPO steps of KV-head gates" \
  ./build/kvforge train recipes/tiny-rlkv.yaml model="$model" train.steps=10 out=runs/quickstart-rlkv
run_step "CSKV: low-rank K/V factors" ./build/kvforge train recipes/cskv-tiny-cpu.yaml model="$model" out=runs/quickstart-cskv
run_step "KV Prediction: auxiliary model and predictors" \
  ./build/kvforge train recipes/kvpred-tiny-cpu.yaml model="$model" out=runs/quickstart-kvpred
run_step "Lizard: linearized attention (transfer, then LoRA)" \
  ./build/kvforge train recipes/lizard-tiny-cpu.yaml model="$model" out=runs/quickstart-lizard
run_step "eval: every policy on the same 50 passkey and arithmetic prompts per length" \
  ./build/kvforge eval --model "$model" --device cpu \
  --policy streaming:budget=0.25 --policy streaming:budget=0.5 --policy snapkv:budget=0.25 --policy snapkv:budget=0.5 \
  --artifact runs/quickstart-prefixkv/prefixkv.safetensors:budget=0.5 \
  --artifact runs/quickstart-rlkv/rlkv.safetensors:sparsity=0.5 \
  --artifact runs/quickstart-cskv/cskv.safetensors \
  --artifact runs/quickstart-kvpred/kvpred.safetensors:alone=0 \
  --artifact runs/quickstart-lizard/lizard.safetensors \
  --tasks passkey,arithmetic --lengths 256,512 --samples 50 --out runs/quickstart-eval
cat <<'EOF'

Reading the numbers above:
- rlkv: 10 steps only show the pipeline; the gates have barely moved, and the tiny model's arithmetic breaks when
  any half of its KV heads streams (README, "RLKV", for what training buys on the GPU model).
- lizard near 0%: 120 steps linearize the tiny model too little to answer (README, "Lizard": 97% passkey on the
  GPU model after 1,800 steps). Its "KV" is its decoding state: per layer and head a fixed-size linear-attention
  state plus a window of recent keys and values. That costs the same at any length, so at 256 tokens it can weigh
  more than the whole full cache (over 100%), and less as prompts grow.
- kvpred at 100% KV: KV Prediction buys time to first token (its TTFT column), not bytes; the base then decodes
  from a full cache.
- rlkv:sparsity=0.5 and cskv above 50%: streaming heads keep their sink + recent window, and CSKV an exact recent
  window beside its latents; at prompts of a few hundred tokens those windows are a large share.
- KV kept is measured bytes against the full cache's on the same prompts, which also reserve room for the answer.
- peak MiB is read on CUDA only; "–" on this CPU run.
EOF
printf '\nquickstart: %d steps in %d s\n' "$steps" "$SECONDS"
