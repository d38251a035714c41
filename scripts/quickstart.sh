#!/usr/bin/env bash
# The main job on CPU: train → export → generate on the built-in tiny architecture.
#   1. inspect and generate on the Llama parity fixture (random weights, byte tokenizer);
#   2. pretrain the tiny base model briefly (recipes/tiny-base.yaml, ~1 minute on 2 cores; pass
#      --full for the whole recipe) and generate from the Hugging Face checkpoint it writes.
# The committed base models and the eval step arrive with the pretrain and eval issues.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="train.steps=60 train.warmup_steps=5"
[ "${1:-}" = "--full" ] && steps=""
./build/kvforge inspect tests/fixtures/llama
./build/kvforge generate --model tests/fixtures/llama --device cpu --max-new-tokens 32 \
  --prompt "The pass key is 71432. " --prompt "Remember it: " sampling.temperature=0.8 sampling.seed=1
# shellcheck disable=SC2086
./build/kvforge pretrain recipes/tiny-base.yaml out=runs/quickstart-tiny $steps eval.lengths=[256] eval.samples=8
./build/kvforge generate --model runs/quickstart-tiny/model --device cpu --max-new-tokens 48 \
  --prompt "Compute 7 + 5. Think step by step, then give the final line as 'Answer: <number>'."$'\n'
echo "quickstart done: model, metrics.jsonl and accuracy.md are in runs/quickstart-tiny/"
