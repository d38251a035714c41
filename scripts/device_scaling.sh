#!/usr/bin/env bash
# Data-parallel scaling on one multi-GPU host with the carried binaries (see device_check.sh), launched by torchrun at
# 1, 2, ... GPUs with the same global batch (micro-batches per step = the largest N):
#   pretrain  the GPU base model's pretraining, with per-step phase times (train.time_phases)
#   rlkv      RLKV's GRPO recipe (rollouts on every rank), with phase times
#   lizard    the Lizard recipe, both stages
#   eval      `kvforge eval` of the RLKV artifact sharded over N ranks (its report must not depend on N)
# Prints each run's tokens/s, scaling efficiency, largest per-step loss difference against one GPU and mean phase
# seconds. Usage on the device: RUNS="pretrain rlkv eval" scripts/device_scaling.sh OUT_DIR 1 2 [4]
set -uo pipefail
out=${1:?usage: device_scaling.sh OUT_DIR N...}
shift
counts=("$@")
largest=${counts[-1]}
runs=${RUNS:-pretrain rlkv lizard eval}
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$PWD/.carry/lib:${LD_LIBRARY_PATH:-}"
mkdir -p "$out"
nvidia-smi --query-gpu=name --format=csv,noheader
launch() {  # ranks, then kvforge arguments
  local n=$1; shift
  timeout 300 python3 -m torch.distributed.run --no-python --standalone --nproc-per-node "$n" .carry/kvforge "$@"
}
has() { [[ " $runs " == *" $1 "* ]]; }
for n in "${counts[@]}"; do
  if has pretrain; then
    launch "$n" pretrain recipes/small-base-gpu.yaml train.steps=400 train.batch_size=$((32 / largest)) \
      train.micro_batches="$largest" train.log_every=100 train.checkpoint_every=0 train.time_phases=true \
      "eval.tasks=[]" out="$out/pretrain-$n" >"$out/pretrain-$n.log" 2>&1
    echo "pretrain on $n GPU(s): exit $?"; grep -E "^step (100|400)/|trained" "$out/pretrain-$n.log"
  fi
  if has rlkv; then
    launch "$n" train recipes/small-base-gpu-rlkv.yaml train.steps=40 rl.prompts=$((16 / largest)) \
      train.micro_batches="$largest" train.log_every=10 train.time_phases=true out="$out/rlkv-$n" \
      >"$out/rlkv-$n.log" 2>&1
    echo "rlkv on $n GPU(s): exit $?"; grep -E "^step 40/|reward_last|rollout_tokens" "$out/rlkv-$n.log"
  fi
  if has lizard; then
    launch "$n" train recipes/lizard-small-gpu.yaml stage1.steps=150 stage2.steps=150 \
      stage1.batch_size=$((16 / largest)) stage2.batch_size=$((16 / largest)) stage1.micro_batches="$largest" \
      stage2.micro_batches="$largest" stage1.log_every=50 stage2.log_every=50 eval.batches=2 out="$out/lizard-$n" \
      >"$out/lizard-$n.log" 2>&1
    echo "lizard on $n GPU(s): exit $?"; grep -E "^step 150/|stage 1:|held-out" "$out/lizard-$n.log"
  fi
  if has eval; then
    artifact=models/small-base-gpu/rlkv/rlkv.safetensors
    launch "$n" eval --model models/small-base-gpu --artifact "$artifact:sparsity=0.25" --tasks arithmetic,passkey \
      --lengths 1024 --samples 96 --batch-size 16 --out "$out/eval-$n" >"$out/eval-$n.log" 2>&1
    echo "eval on $n GPU(s): exit $?"; grep -E "wall time" "$out/eval-$n/report.md"
  fi
done
python3 - "$out" "$runs" "${counts[@]}" <<'PY'
import json, os, sys
out, runs, counts = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
def records(path):
    return [json.loads(line) for line in open(path) if line.strip().startswith("{")]
logs = {"pretrain": ["pretrain-{}/metrics.jsonl"], "rlkv": ["rlkv-{}/metrics.jsonl"],
        "lizard": ["lizard-{}/stage1/metrics.jsonl", "lizard-{}/stage2/metrics.jsonl"]}
phases = ["compute_s", "wait_s", "all_reduce_s", "update_s"]
for run in [path for name in runs for path in logs.get(name, [])]:
    if not os.path.exists(f"{out}/{run.format(counts[0])}"):
        continue
    base = [r for r in records(f"{out}/{run.format(counts[0])}") if "loss" in r]
    tps = lambda rs: sum(r.get("tokens_per_s", 0) for r in rs[len(rs) // 2:]) / max(len(rs) - len(rs) // 2, 1)
    for n in counts:
        path = f"{out}/{run.format(n)}"
        if not os.path.exists(path):
            continue
        other = [r for r in records(path) if "loss" in r]
        diff = max(abs(a["loss"] - b["loss"]) / max(abs(a["loss"]), 1e-9) for a, b in zip(base, other))
        half = other[len(other) // 2:]
        timed = " ".join(f"{p} {sum(r[p] for r in half) / len(half):.4f}" for p in phases if p in half[0])
        print(f"{run.format(n)}: steps {len(other)}, max relative loss difference vs {counts[0]} GPU {diff:.2e}, "
              f"tokens/s {tps(other):.0f} -> efficiency {tps(other) / (int(n) / int(counts[0]) * tps(base)):.2f}; "
              f"mean phase s (2nd half): {timed}")
if "eval" in runs:
    reports = {n: json.load(open(f"{out}/eval-{n}/report.json")) for n in counts if os.path.exists(f"{out}/eval-{n}/report.json")}
    base = reports.get(counts[0])
    for n, report in reports.items():
        same = all(a[k] == b[k] for a, b in zip(base["cells"], report["cells"]) for k in ("accuracy", "kv_bytes", "answer_perplexity"))
        print(f"eval on {n} GPU(s): wall {report['wall_seconds']:.1f} s, cells equal to {counts[0]} GPU: {same}; "
              + ", ".join(f"{c['policy']}/{c['task']} {100 * c['accuracy']:.1f}% ttft {c['ttft_ms']:.1f} ms" for c in report["cells"]))
PY
tar czf "$out/scaling.tgz" -C "$out" $(cd "$out" && ls -d */metrics.jsonl */stage*/metrics.jsonl eval-*/report.json *.log 2>/dev/null)
