#!/usr/bin/env bash
# Runs on the GPU machine over binaries carried in .carry/ (see device_check.sh): the GPU tests of the decode paths
# this bench exercises, then `kvforge bench generate` on random weights of Llama-3.1-8B's shape for each policy given,
# and transformers on the same shapes (bench/hf_generate.py), merged into OUT_DIR/generate-h200.json with the card,
# driver and command lines.
# Usage on the device: scripts/device_generate.sh OUT_DIR BATCHES LENGTHS NEW_TOKENS [policy spec ...]
set -uo pipefail
out=${1:?usage: device_generate.sh OUT_DIR BATCHES LENGTHS NEW_TOKENS [policy ...]}
batches=${2:?} lengths=${3:?} new_tokens=${4:?}
shift 4
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
export KVFORGE_FIXTURES=$PWD/tests/fixtures KVFORGE_BINARY=$PWD/.carry/kvforge PYTHONUNBUFFERED=1
mkdir -p "$out"
card=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)
echo "$card"
if [ -n "${GENERATE_TESTS:-}" ]; then
  .carry/kvforge_tests --gtest_filter="$GENERATE_TESTS" 2>&1 | tee "$out/tests.log" | grep -E "^\[  (FAILED|PASSED) |tests ran|Failure" | head -30
fi
python3 scripts/make_random_checkpoint.py /tmp/llama-3.1-8b-config --config-only || exit 1
config=/tmp/llama-3.1-8b-config/config.json
policies=()
for policy in "$@"; do policies+=(--policy "$policy"); done
python3 bench/hf_generate.py "$config" --batch "$batches" --lengths "$lengths" --new-tokens "$new_tokens" \
  --out "$out/generate-transformers.json" 2>"$out/transformers.log" || tail -5 "$out/transformers.log"
.carry/kvforge bench generate --config "$config" --batch "$batches" --lengths "$lengths" --new-tokens "$new_tokens" \
  "${policies[@]}" --out "$out/generate-kvforge.json" 2>&1 | tee "$out/kvforge.log"
python3 - "$out" "$card" "$batches" "$lengths" "$new_tokens" "$*" <<'PY'
import json, os, sys
out, card, batches, lengths, new_tokens, policies = sys.argv[1:]
merged = {"card": card, "script": f"scripts/device_generate.sh OUT {batches} {lengths} {new_tokens} {policies}"}
for name in ("kvforge", "transformers"):
    path = os.path.join(out, f"generate-{name}.json")
    merged[name] = json.load(open(path)) if os.path.exists(path) else None
json.dump(merged, open(os.path.join(out, "generate-h200.json"), "w"), indent=1)
PY
