#!/usr/bin/env bash
# Runs on the GPU machine over binaries built here (carried in .carry/): regenerates the parity
# fixtures with transformers, runs every test (GPU cases included), compute-sanitizer on the kernel
# tests, and a CUDA generation. Usage on the device: scripts/device_check.sh OUT_DIR
set -uo pipefail
out=${1:?usage: device_check.sh OUT_DIR}
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 scripts/make_parity_fixtures.py "$out" >"$out/fixtures.log" 2>&1 || { tail -20 "$out/fixtures.log"; exit 1; }
rm -rf tests/fixtures && mkdir -p tests/fixtures && tar xzf "$out/fixtures.tar.gz" -C tests/fixtures
export KVFORGE_FIXTURES=$PWD/tests/fixtures KVFORGE_BINARY=$PWD/.carry/kvforge
ldd .carry/kvforge_tests | grep "not found"
.carry/kvforge_tests >"$out/tests.log" 2>&1; echo "kvforge_tests exit $?"
grep -E "\[ parity \]|FAILED|PASSED|SKIPPED \] [0-9]" "$out/tests.log"
compute-sanitizer --tool memcheck .carry/kvforge_tests --gtest_filter='*RmsNormGpu*:*Bfloat16OnGpu*' 2>&1 | tail -2
.carry/kvforge generate --model tests/fixtures/llama --device cuda --max-new-tokens 64 --prompt "The pass key" --prompt "hi"
