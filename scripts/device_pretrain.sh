#!/usr/bin/env bash
# Runs a pretrain recipe on the GPU machine with the carried kvforge binary, checks the exported
# checkpoint against transformers, and leaves the model and run files in OUT_DIR.
# Usage on the device: scripts/device_pretrain.sh OUT_DIR RECIPE [key=value ...]
set -uo pipefail
out=${1:?usage: device_pretrain.sh OUT_DIR RECIPE [key=value ...]}
recipe=${2:?usage: device_pretrain.sh OUT_DIR RECIPE [key=value ...]}
shift 2
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
export KVFORGE_FIXTURES=$PWD/tests/fixtures KVFORGE_BINARY=$PWD/.carry/kvforge
run=/tmp/device-pretrain
nvidia-smi --query-gpu=name --format=csv,noheader
/usr/bin/time -f "wall %e s, peak RSS %M KiB" .carry/kvforge pretrain "$recipe" out=$run "$@" 2>&1 | tail -25
python3 scripts/reference_logits.py $run/model 2>&1 | tail -1
KVFORGE_EXTRA_PARITY=$run/model .carry/kvforge_tests --gtest_filter='Checkpoints/Parity.*/model_*' 2>&1 | grep -E "parity|OK|FAILED"
mkdir -p "$out/model" && cp $run/model/* "$out/model/"
tar czf "$out/run.tar.gz" -C $run metrics.jsonl accuracy.md recipe.yaml
