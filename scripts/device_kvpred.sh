#!/usr/bin/env bash
# KV Prediction on the GPU machine with the carried binaries (see device_check.sh). Phases, one device call each:
#   train: the KV Prediction tests (GPU cases included) and both GPU recipes (the base with every 2nd layer as the
#          auxiliary, and the tiny model as a separate auxiliary); artifacts under OUT_DIR/runs.
#   eval:  accuracy and time to first token at 1024 tokens for the base, each predictor, each auxiliary alone (trained)
#          and each untrained auxiliary alone (the layer-pruned copy and the tiny model as they are), then time to
#          first token alone at 2k-8k tokens; reads runs/kvpred-device (the train phase's runs, carried back), plus the
#          artifacts KVPRED_EXTRA names under it.
# Usage on the device: scripts/device_kvpred.sh OUT_DIR train|eval [key=value ...]
set -uo pipefail
out=${1:?usage: device_kvpred.sh OUT_DIR train|eval}
phase=${2:?usage: device_kvpred.sh OUT_DIR train|eval}
shift 2  # the rest: recipe overrides for the train phase
runs=$PWD/runs/kvpred-device
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
export KVFORGE_FIXTURES=$PWD/tests/fixtures KVFORGE_BINARY=$PWD/.carry/kvforge
mkdir -p "$out"
nvidia-smi --query-gpu=name --format=csv,noheader

train() {  # name, recipe, overrides...
  local name=$1 recipe=$2; shift 2
  /usr/bin/time -f "$name: wall %e s, peak RSS %M KB" timeout 280 .carry/kvforge train "$recipe" out="$runs/$name" "$@" \
    >"$out/$name.log" 2>&1
  tail -1 "$out/$name.log"; grep -E "^step .*/(100|1000|2000) " "$out/$name.log"
  cat "$runs/$name/losses.md" "$runs/$name/flops.md"
  rm -rf "$runs/$name/checkpoints"
}
if [ "$phase" = train ]; then
  [ "${KVPRED_TESTS:-1}" = 1 ] && timeout 120 .carry/kvforge_tests --gtest_filter='KvPred*:Cli.TrainKv*:*Parity*:*Gpu*:*Cuda*:*Generat*:*Eval*' >"$out/tests.log" 2>&1
  echo "kvforge_tests exit $?"
  grep -E "FAILED|PASSED|SKIPPED \] [0-9]|Failure" "$out/tests.log" | head -20
  rm -rf "$runs"
  train pruned recipes/kvpred-small-gpu.yaml "$@"
  train tiny-aux recipes/kvpred-small-gpu-tiny-aux.yaml "$@"
  for name in pruned tiny-aux; do  # flat: the device hands back files a few folders deep only
    for file in kvpred.safetensors kvpred-init.safetensors metrics.jsonl losses.md flops.md; do
      cp "$runs/$name/$file" "$out/$name-$file"
    done
  done
fi

if [ "$phase" = eval ]; then
  artifacts=(--artifact "$runs/pruned/kvpred.safetensors" --artifact "$runs/pruned/kvpred-init.safetensors:alone=1"
             --artifact "$runs/tiny-aux/kvpred.safetensors" --artifact "$runs/tiny-aux/kvpred-init.safetensors:alone=1")
  for extra in ${KVPRED_EXTRA:-}; do artifacts+=(--artifact "$runs/$extra"); done  # e.g. pruned-l01/kvpred.safetensors
  timeout 330 .carry/kvforge eval --device cuda --model models/small-base-gpu \
    --tasks "${KVPRED_TASKS:-passkey,niah_single,niah_multikey,arithmetic}" --lengths 1024 \
    --samples "${KVPRED_SAMPLES:-100}" --batch-size 50 "${artifacts[@]}" --out "$out/eval" 2>"$out/eval-progress.log"
  echo "kvforge eval exit $?"
  timeout 150 .carry/kvforge eval --device cuda --model models/small-base-gpu --tasks passkey --lengths 2048,4096,8000 \
    --samples 32 --batch-size 16 answer_perplexity=false "${artifacts[@]}" --out "$out/ttft" 2>"$out/ttft-progress.log"
  echo "kvforge eval (ttft) exit $?"
fi
