#!/usr/bin/env bash
# Runs on the GPU machine over binaries built here with TORCH_CUDA_ARCH_LIST=9.0a and carried in
# .carry/ (kvforge, kvforge_tests, and lib/ with the non-torch shared libraries): every test (GPU
# cases included), compute-sanitizer on the GPU tests, a CUDA generation, and a short GPU pretrain
# whose exported checkpoint is checked against transformers.
# Usage on the device: scripts/device_check.sh OUT_DIR [--fixtures] [--probe-steps N]
set -uo pipefail
out=${1:?usage: device_check.sh OUT_DIR [--fixtures] [--probe-steps N]}
shift
fixtures=0; probe_steps=0
while [ $# -gt 0 ]; do
  case "$1" in
    --fixtures) fixtures=1 ;;
    --probe-steps) probe_steps=$2; shift ;;
  esac
  shift
done
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
export KVFORGE_FIXTURES=$PWD/tests/fixtures KVFORGE_BINARY=$PWD/.carry/kvforge
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if [ "$fixtures" = 1 ]; then
  python3 scripts/make_parity_fixtures.py "$out" >"$out/fixtures.log" 2>&1 || { tail -20 "$out/fixtures.log"; exit 1; }
  rm -rf tests/fixtures && mkdir -p tests/fixtures && tar xzf "$out/fixtures.tar.gz" -C tests/fixtures
fi
ldd .carry/kvforge_tests | grep "not found"
if [ "$probe_steps" -gt 0 ]; then
  .carry/kvforge pretrain recipes/small-base-gpu.yaml train.steps="$probe_steps" train.log_every=10 \
    train.checkpoint_every=20 out=/tmp/probe eval.samples=4 eval.lengths=[1024] 2>&1 | tail -8
  python3 scripts/reference_logits.py /tmp/probe/model 2>&1 | tail -1
  export KVFORGE_EXTRA_PARITY=/tmp/probe/model
fi
.carry/kvforge_tests >"$out/tests.log" 2>&1; echo "kvforge_tests exit $?"
grep -E "\[ parity \]|FAILED|PASSED|SKIPPED \] [0-9]" "$out/tests.log"
compute-sanitizer --tool memcheck .carry/kvforge_tests --gtest_filter='*RmsNormGpu*:*Bfloat16OnGpu*:*CausalPrefix*:*PoliciesOnCuda*' 2>&1 | tail -2
.carry/kvforge generate --model tests/fixtures/llama --device cuda --max-new-tokens 64 --prompt "The pass key" --prompt "hi" | tail -1
# torchrun's environment (agent-hosted store, RANK/WORLD_SIZE/...) reaches the binary intact.
if command -v torchrun >/dev/null; then
  torchrun --no-python --nproc-per-node 1 .carry/kvforge pretrain recipes/tiny-base.yaml device=cuda train.steps=20 \
    train.log_every=10 eval.tasks=[] out=/tmp/torchrun-check 2>&1 | grep -E "pretraining|trained|error"
fi
