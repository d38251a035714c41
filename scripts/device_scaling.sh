#!/usr/bin/env bash
# Data-parallel scaling on one multi-GPU host with the carried binaries (see device_check.sh): the GPU base model's
# pretraining and the Lizard recipe (both stages) at 1, 2, ... GPUs with the same global batch (micro-batches per
# step = the largest N), launched by torchrun; prints each run's last steps and tokens/s, and the largest per-step
# loss difference against one GPU (loss equality). Usage on the device: scripts/device_scaling.sh OUT_DIR 1 2 [4]
set -uo pipefail
out=${1:?usage: device_scaling.sh OUT_DIR N...}
shift
counts=("$@")
largest=${counts[-1]}
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name --format=csv,noheader
launch() {  # ranks, then kvforge arguments
  local n=$1; shift
  timeout 300 python3 -m torch.distributed.run --no-python --standalone --nproc-per-node "$n" .carry/kvforge "$@"
}
for n in "${counts[@]}"; do
  launch "$n" pretrain recipes/small-base-gpu.yaml train.steps=400 train.batch_size=$((32 / largest)) \
    train.micro_batches="$largest" train.log_every=100 train.checkpoint_every=0 "eval.tasks=[]" \
    out="$out/pretrain-$n" >"$out/pretrain-$n.log" 2>&1
  echo "pretrain on $n GPU(s): exit $?"; grep -E "^step (100|400)/|trained" "$out/pretrain-$n.log"
  launch "$n" train recipes/lizard-small-gpu.yaml stage1.steps=150 stage2.steps=150 stage1.batch_size=$((16 / largest)) \
    stage2.batch_size=$((16 / largest)) stage1.micro_batches="$largest" stage2.micro_batches="$largest" \
    stage1.log_every=50 stage2.log_every=50 eval.batches=2 out="$out/lizard-$n" >"$out/lizard-$n.log" 2>&1
  echo "lizard on $n GPU(s): exit $?"; grep -E "^step 150/|stage 1:|held-out" "$out/lizard-$n.log"
done
python3 - "$out" "${counts[@]}" <<'PY'
import json, sys
out, counts = sys.argv[1], sys.argv[2:]
def records(path):
    return [json.loads(line) for line in open(path) if line.strip().startswith("{")]
for run in ["pretrain-{}/metrics.jsonl", "lizard-{}/stage1/metrics.jsonl", "lizard-{}/stage2/metrics.jsonl"]:
    base = [r for r in records(f"{out}/{run.format(counts[0])}") if "loss" in r]
    for n in counts[1:]:
        other = [r for r in records(f"{out}/{run.format(n)}") if "loss" in r]
        diff = max(abs(a["loss"] - b["loss"]) / max(abs(a["loss"]), 1e-9) for a, b in zip(base, other))
        tps = lambda rs: sum(r.get("tokens_per_s", 0) for r in rs[len(rs) // 2:]) / max(len(rs) - len(rs) // 2, 1)
        print(f"{run.split('/', 1)[1] if '/' in run else run}: {n} vs {counts[0]} GPU: steps {len(other)}, "
              f"max relative loss difference {diff:.2e}, tokens/s {tps(other):.0f} vs {tps(base):.0f} "
              f"-> scaling efficiency {tps(other) / (int(n) / int(counts[0]) * tps(base)):.2f}")
PY
