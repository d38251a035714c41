#!/usr/bin/env bash
# The decode kernels on the GPU machine with the carried binaries (see device_check.sh): their GPU tests and the
# model-level decode test, compute-sanitizer on a few shapes of each, `kvforge bench decode` (full cache against SDPA
# and, in a build with KVFORGE_FLASHINFER_DATA, FlashInfer; KIVI's and the mixed-head layouts), and an eval of the
# GPU base model under KIVI and mixed heads against full for decode tokens/s. Usage on the device:
#   scripts/device_decode.sh [bench lengths, default 4096,16384,32768]
set -uo pipefail
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
export KVFORGE_FIXTURES=$PWD/tests/fixtures KVFORGE_BINARY=$PWD/.carry/kvforge
lengths=${1:-4096,16384,32768}
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 300 .carry/kvforge_tests --gtest_filter='*DecodeAttention*:*DecodeByHead*:*QuantizedDecode*:MixedHead*:Banded*' \
  2>&1 | grep -E "OK|FAIL|Failure|error|Expected|Which|PASSED" | head -80
sanitized='Shapes/DecodeByHeadGpu.*/0:Shapes/DecodeByHeadGpu.*/3:Shapes/DecodeAttentionGpu.*/1'
sanitized+=$(printf ':Shapes/QuantizedDecodeGpu.*/%s' 0 1 2 4 10 11)
timeout 200 compute-sanitizer --tool memcheck .carry/kvforge_tests --gtest_filter="$sanitized" 2>&1 |
  grep -E "ERROR SUMMARY|PASSED|FAILED" | head
timeout 300 .carry/kvforge bench decode --batch 1,8 --lengths "$lengths" --low-rank 0 --iterations 10 2>&1 | tail -40
timeout 200 .carry/kvforge eval --model models/small-base-gpu --policy full --policy kivi:bits=4 --policy kivi:bits=2 \
  --policy heads:sparsity=0.5 --tasks passkey,arithmetic --lengths 1024 --samples 48 --batch-size 16 \
  --out /tmp/decode-eval 2>&1 | tail -24
