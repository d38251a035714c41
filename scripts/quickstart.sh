#!/usr/bin/env bash
# The main job on CPU. Until the built-in tiny model lands (pretrain issue), it runs on the Llama
# parity fixture (random weights, byte-level tokenizer): the text is noise, the path is real —
# load, tokenize, prefill, decode with a KV cache, report time to first token and tokens/s.
set -euo pipefail
cd "$(dirname "$0")/.."
./build/kvforge inspect tests/fixtures/llama
./build/kvforge generate --model tests/fixtures/llama --device cpu --max-new-tokens 32 \
  --prompt "The pass key is 71432. " --prompt "Remember it: " sampling.temperature=0.8 sampling.seed=1
