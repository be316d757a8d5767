#!/bin/bash
# One-GPU check of kamado's GPU path, ≤ 8 minutes on an H100/H200, printing one table:
#   1. kamado bench: the 1b preset at sequence 2048 and 4096 in bf16 (eager and torch.compile) and FP8
#      (torchao float8) where kamado bench supports it, tokens/s and MFU against the datasheet peak;
#   2. a 100-step pretrain of the tiny recipe on CUDA (corpus → tokenizer → data → pretrain);
#   3. a short eval of that model on CUDA (jcommonsenseqa, arc-easy, 50 items each).
# --dry-run: the same steps on CPU with tiny sizes and few steps (checks the script; tests/test_gpu_check.py).
# Usage: scripts/gpu_check.sh [--dry-run] [--out DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
OUT=${KAMADO_GPU_CHECK_OUT:-.cache/gpu_check}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT=$2; shift ;;
    *) echo "usage: $0 [--dry-run] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
K=${KAMADO:-.venv/bin/kamado}
PY=${PYTHON:-.venv/bin/python}
export KAMADO_CACHE=${KAMADO_CACHE:-$PWD/.cache/kamado} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export KAMADO_DATA_ROOT=${KAMADO_DATA_ROOT:-$PWD/../shared/data} KAMADO_PROGRESS_EVERY=30
rm -rf "$OUT"; mkdir -p "$OUT"
ROWS=$OUT/rows.jsonl
row() { "$PY" -c 'import json,sys; print(json.dumps(dict(zip(["step","setting","result","seconds"], sys.argv[1:]))))' "$@" >>"$ROWS"; }

if [ $DRY = 1 ]; then
  PRESET=tiny; SEQS="64 128"; BATCH=2; BSTEPS=3; COMPILE=--no-compile; PT_STEPS=3; EV_LIMIT=4
  PT_SET=(--set pretrain.train.batch_size=4 --set pretrain.train.seq_len=64 --set pretrain.train.eval_every=0
          --set pretrain.train.ckpt_every=0 --set pretrain.train.warmup_steps=1)
else
  "$PY" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || { echo "no CUDA device: run with --dry-run on CPU" >&2; exit 1; }
  PRESET=1b; SEQS="2048 4096"; BATCH=0; BSTEPS=10; COMPILE=--compile; PT_STEPS=100; EV_LIMIT=50
  PT_SET=(--set pretrain.train.eval_every=50)
fi

# 1. throughput (bf16 eager and compiled; fp8 where kamado bench has it)
FP8=""
if "$K" bench --help 2>/dev/null | grep -q fp8 && "$PY" -c 'import torchao.float8' 2>/dev/null \
   && [ $DRY = 0 ]; then FP8=",fp8"; fi
for seq in $SEQS; do
  b=$BATCH; [ "$b" = 0 ] && b=$((16384 / seq))
  t0=$SECONDS
  if "$K" bench --preset $PRESET --seq-len $seq --batch $b --precision "bf16$FP8" $COMPILE --steps $BSTEPS \
       --no-peaks --json >"$OUT/bench_$seq.json" 2>"$OUT/bench_$seq.err"; then
    "$PY" - "$OUT/bench_$seq.json" "$ROWS" $((SECONDS - t0)) <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
with open(sys.argv[2], "a") as f:
    for r in res:
        f.write(json.dumps({"step": "bench", "setting": f"{r['preset']} seq {r['seq_len']} × {r['batch']} "
                            f"{r['precision']}", "result": f"{r['tokens_per_s']:,.0f} tok/s, "
                            f"{100 * r['mfu']:.1f}% MFU of {r['peak_tflops']:.3g} TFLOP/s, "
                            f"{(r['mem_gb'] or 0):.1f} GB", "seconds": sys.argv[3]}) + "\n")
PY
  else
    row bench "$PRESET seq $seq bf16$FP8" "FAILED: $(tail -n 1 "$OUT/bench_$seq.err")" $((SECONDS - t0))
  fi
done
[ -z "$FP8" ] && row bench "$PRESET fp8" "skipped: $([ $DRY = 1 ] && echo dry run || echo 'kamado bench has no fp8 precision or torchao is missing')" 0

# 2. a short pretrain of the tiny recipe on this device
t0=$SECONDS
if "$K" run recipes/tiny.yaml --out "$OUT/tiny" --until pretrain --set pretrain.train.steps=$PT_STEPS "${PT_SET[@]}" \
     >"$OUT/pretrain.log" 2>&1; then
  res=$("$PY" - "$OUT/tiny/pretrain" <<'PY'
import json, sys
from pathlib import Path
recs = [json.loads(x) for x in (Path(sys.argv[1]) / "metrics.jsonl").read_text().splitlines() if x.strip()]
st = [r for r in recs if "loss" in r and "step" in r]
tps = [r["tokens_per_s"] for r in st if "tokens_per_s" in r]
print(f"{st[-1]['step']} steps, loss {st[0]['loss']:.2f} → {st[-1]['loss']:.2f}, "
      f"{sorted(tps)[len(tps) // 2]:,.0f} tok/s median")
PY
)
  row pretrain "tiny recipe, $PT_STEPS steps" "$res" $((SECONDS - t0))
else
  row pretrain "tiny recipe, $PT_STEPS steps" "FAILED: $(tail -n 1 "$OUT/pretrain.log")" $((SECONDS - t0))
fi

# 3. a short eval of that model
t0=$SECONDS
if "$K" eval "$OUT/tiny/pretrain/hf" --tasks jcommonsenseqa,arc-easy --limit $EV_LIMIT --out "$OUT/eval" \
     >"$OUT/eval.log" 2>&1; then
  res=$("$PY" - "$OUT/eval/results.json" 2>&1 <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
per = next(iter(r.get("models", r.get("results", {})).values()))
print(", ".join(f"{t} acc {m.get('acc', float('nan')):.3f} (n={m.get('n')})" for t, m in per.items()))
PY
)
  row eval "jcommonsenseqa, arc-easy × $EV_LIMIT" "$res" $((SECONDS - t0))
else
  row eval "jcommonsenseqa, arc-easy × $EV_LIMIT" "FAILED: $(tail -n 1 "$OUT/eval.log")" $((SECONDS - t0))
fi

"$PY" - "$ROWS" "$DRY" <<'PY'
import json, sys
rows = [json.loads(x) for x in open(sys.argv[1])]
dev = "CPU (dry run)" if sys.argv[2] == "1" else __import__("torch").cuda.get_device_name()
cols = ["step", "setting", "result", "seconds"]
w = [max(len(str(r[c])) for r in rows + [dict(zip(cols, cols))]) for c in cols]
print(f"\nkamado GPU check on {dev}")
print("| " + " | ".join(c.ljust(x) for c, x in zip(cols, w)) + " |")
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in rows:
    print("| " + " | ".join(str(r[c]).ljust(x) for c, x in zip(cols, w)) + " |")
bad = [r for r in rows if str(r["result"]).startswith("FAILED")]
sys.exit(1 if bad else 0)
PY
