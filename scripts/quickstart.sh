#!/usr/bin/env bash
# The main job on CPU:
#   1. inspect the committed GPU base model and let it find a pass key in a 700-token haystack;
#   2. pretrain the tiny base model briefly (recipes/tiny-base.yaml, ~1 minute on 2 cores; pass
#      --full for the whole recipe) and generate from the Hugging Face checkpoint it writes.
# The eval step (policies side by side, reports) arrives with the eval issue.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="train.steps=60 train.warmup_steps=5"
[ "${1:-}" = "--full" ] && steps=""
./build/kvforge inspect models/small-base-gpu | sed -n '1,12p'  # the config summary (sed reads all: no SIGPIPE)
./build/kvforge generate recipes/generate-passkey.yaml device=cpu
# shellcheck disable=SC2086
./build/kvforge pretrain recipes/tiny-base.yaml out=runs/quickstart-tiny $steps eval.lengths=[256] eval.samples=8
./build/kvforge generate --model runs/quickstart-tiny/model --device cpu --max-new-tokens 48 \
  --prompt "Compute 7 + 5. Think step by step, then give the final line as 'Answer: <number>'."$'\n'
echo "quickstart done: model, metrics.jsonl and accuracy.md are in runs/quickstart-tiny/"
