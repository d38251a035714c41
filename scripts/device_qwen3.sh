#!/usr/bin/env bash
# Qwen3 on the GPU machine, over binaries carried in .carry/ (see device_check.sh):
#   1. the qwen3 parity fixture remade with transformers there (adds its bf16 CUDA logits; the fp32 reference must
#      equal the committed one), installed into tests/fixtures/qwen3 and left in OUT_DIR/qwen3-fixture.tar.gz;
#   2. the GPU tests that touch Qwen3 and the caches (parity, policies on CUDA, low-rank decode);
#   3. `kvforge eval` with every training-free policy on a random-weight Qwen3-8B-shaped checkpoint.
# Usage on the device: scripts/device_qwen3.sh OUT_DIR [LENGTHS] [SAMPLES]
set -uo pipefail
out=${1:?usage: device_qwen3.sh OUT_DIR [LENGTHS] [SAMPLES]}
lengths=${2:-4096}
samples=${3:-4}
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
export KVFORGE_FIXTURES=$PWD/tests/fixtures KVFORGE_BINARY=$PWD/.carry/kvforge
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

(cd scripts && python3 make_parity_fixtures.py "$out" qwen3) >"$out/fixture.log" 2>&1 || { tail -20 "$out/fixture.log"; exit 1; }
mv "$out/fixtures.tar.gz" "$out/qwen3-fixture.tar.gz"
rm -rf /tmp/qwen3-fixture && mkdir -p /tmp/qwen3-fixture && tar xzf "$out/qwen3-fixture.tar.gz" -C /tmp/qwen3-fixture
python3 - <<'PY' || exit 1
from safetensors.torch import load_file
new = load_file("/tmp/qwen3-fixture/qwen3/reference.safetensors")
old = load_file("tests/fixtures/qwen3/reference.safetensors")
for key, tensor in old.items():
    assert key in new and (new[key] == tensor).all(), f"{key} differs from the committed reference"
print("qwen3 fixture: committed fp32 reference reproduced; new keys:", sorted(set(new) - set(old)))
PY
cp /tmp/qwen3-fixture/qwen3/reference.safetensors tests/fixtures/qwen3/

.carry/kvforge_tests --gtest_filter='*Parity*:*Qwen3*:PoliciesOnCuda*:*LowRank*:*OnCuda*:*Gpu*' 2>&1 | tee "$out/gpu-tests.log" |
  grep -E "parity \]|PASSED|FAILED|tests ran" | head -40

python3 scripts/make_random_checkpoint.py /tmp/qwen3-8b --shape qwen3-8b
.carry/kvforge eval --model /tmp/qwen3-8b --device cuda --tasks passkey --lengths "$lengths" --samples "$samples" \
  --batch-size 4 --policy streaming:budget=0.25 --policy snapkv:budget=0.25 --policy pyramidkv:budget=0.25 \
  --policy h2o:budget=0.25 --policy kivi:bits=4 --policy kivi:bits=2 --policy uniform:budget=0.25 \
  --policy heads:sparsity=0.5 --out "$out/eval" 2>"$out/eval-progress.log"
echo "kvforge eval exit $?"
tail -3 "$out/eval-progress.log"
