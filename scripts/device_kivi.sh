#!/usr/bin/env bash
# KIVI's quantized decode kernel on the GPU machine with the carried binaries (see device_check.sh): its GPU tests and
# the model-level decode test, compute-sanitizer on a few shapes, `kvforge bench decode` with the KIVI rows, and an
# eval of the GPU base model under 4- and 2-bit KIVI against full. Usage on the device: scripts/device_kivi.sh
set -uo pipefail
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
export KVFORGE_FIXTURES=$PWD/tests/fixtures KVFORGE_BINARY=$PWD/.carry/kvforge
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 .carry/kvforge_tests \
  --gtest_filter='*QuantizedDecode*:DecodeAttentionInTheModel.*:Shapes/DecodeAttentionGpu.*:Kivi*:FusedAdamW.*' 2>&1 |
  grep -E "OK|FAIL|Failure|error|Expected|Which" | head -60
shapes=$(printf 'Shapes/QuantizedDecodeGpu.MatchesFloat64Reference/%s:' 0 2 4)
timeout 120 compute-sanitizer --tool memcheck .carry/kvforge_tests --gtest_filter="${shapes}Shapes/DecodeAttentionGpu.*/1" \
  2>&1 | grep -E "ERROR SUMMARY|PASSED|FAILED" | head
timeout 150 .carry/kvforge bench decode --batch 1,8 --lengths 4096,32768 --low-rank 0 --iterations 30 2>&1 | tail -16
timeout 120 .carry/kvforge eval --model models/small-base-gpu --policy kivi:bits=4 --policy kivi:bits=2 \
  --tasks passkey,arithmetic --lengths 1024 --samples 48 --batch-size 16 --out /tmp/kivi-eval 2>&1 | tail -22
