#!/usr/bin/env bash
# Lizard on the GPU machine with the carried binaries (see device_check.sh). Phases, in the order given:
#   tests: the Lizard tests, CUDA cases included.
#   train: the GPU recipe as Lizard, the LoLCATs-style baseline and the ungated baseline, side by side on the one GPU;
#          artifacts flat in OUT_DIR and in LIZARD_RUNS.
#   bench: kvforge bench gla against flash-linear-attention (the wheels carried in .whl) on the same shapes.
#   eval:  the teacher against the three at 1024 tokens (accuracy with n, answer perplexity);
#   long:  decode memory and tokens/s at 4k, 16k and 64k tokens (past the model's context: speed, not accuracy).
#   Both read the artifacts from LIZARD_RUNS (the train phase's, carried back).
# Usage on the device: scripts/device_lizard.sh OUT_DIR PHASE...
set -uo pipefail
out=${1:?usage: device_lizard.sh OUT_DIR PHASE...}
shift
phases=" $* "
runs=${LIZARD_RUNS:-$PWD/runs/lizard-device}
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
export KVFORGE_FIXTURES=$PWD/tests/fixtures KVFORGE_BINARY=$PWD/.carry/kvforge
mkdir -p "$out" "$runs"
nvidia-smi --query-gpu=name --format=csv,noheader
variants=(lizard lolcats ungated)
overrides() {
  case $1 in
    lizard) ;;
    lolcats) echo "attention.kind=lolcats" ;;
    ungated) echo "attention.gates=false" ;;
  esac
}

if [[ $phases == *" tests "* ]]; then
  timeout 120 .carry/kvforge_tests --gtest_filter='Lizard*:Cli.TrainLizard*' >"$out/tests.log" 2>&1
  echo "kvforge_tests exit $?"
  grep -E "FAILED|PASSED|SKIPPED \] [0-9]|Failure|OK \] LizardGpu" "$out/tests.log" | head -20
fi

if [[ $phases == *" train "* ]]; then
  for name in "${variants[@]}"; do
    /usr/bin/time -f "$name: wall %e s" timeout 400 .carry/kvforge train recipes/lizard-small-gpu.yaml \
      out="$runs/$name" $(overrides "$name") ${LIZARD_OVERRIDES:-} >"$out/$name.log" 2>&1 &
  done
  wait
  for name in "${variants[@]}"; do
    grep -vE "^step" "$out/$name.log" | tail -4
    cp "$runs/$name/lizard.safetensors" "$out/$name.safetensors"
    cp "$runs/$name/lizard.safetensors" "$runs/$name.safetensors"
  done
fi

if [[ $phases == *" bench "* ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl &&
    export PYTHONPATH=/tmp/site
  shapes=(--batch 4 --lengths 2048,8192 --heads 32 --features 128 --value-dim 128)
  small=(--batch 16 --lengths 1024 --heads 6 --features 128 --value-dim 64)
  timeout 100 .carry/kvforge bench gla "${shapes[@]}"
  timeout 60 .carry/kvforge bench gla "${small[@]}"
  # fla's Triton kernels autotune on first use: minutes.
  for set in shapes small; do
    declare -n args=$set
    timeout 240 python3 bench/fla_gla.py "${args[@]}" --time-refused-backward 2>&1 | grep -vi warn
  done
fi

artifacts=()
for name in "${variants[@]}"; do artifacts+=(--artifact "$runs/$name.safetensors"); done
if [[ $phases == *" eval "* ]]; then
  timeout 300 .carry/kvforge eval --device cuda --model models/small-base-gpu \
    --tasks "${LIZARD_TASKS:-passkey,niah_single,niah_multikey,arithmetic}" --lengths 1024 \
    --samples "${LIZARD_SAMPLES:-100}" --batch-size 50 "${artifacts[@]}" --out "$out/eval" 2>"$out/eval-progress.log"
  echo "kvforge eval exit $?"
  tar -C "$out" -czf "$out/eval.tgz" eval && rm -r "$out/eval"
fi

if [[ $phases == *" long "* ]]; then
  # Past the model's 8k context (RoPE extrapolates): speed and memory, not accuracy.
  timeout 300 .carry/kvforge eval --device cuda --model models/small-base-gpu --tasks passkey \
    --lengths 4096,16384,65536 --samples 2 --batch-size 1 answer_perplexity=false beyond_context=true \
    "${artifacts[@]}" --out "$out/long" 2>"$out/long-progress.log"
  echo "kvforge eval (long) exit $?"
  tar -C "$out" -czf "$out/long.tgz" long && rm -r "$out/long"
fi
