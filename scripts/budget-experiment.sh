#!/usr/bin/env bash
# How much fine-tuning brings a sub-network that meets issue 10's size/speed target to the fine-tuned full
# network's ARC-Easy accuracy (docs/FINETUNE.md, "Budget for the target").
# The target is the smallest sub-network of SPACE, a space that keeps all 30 layers (dropping layers is what
# breaks SmolLM2 most, docs/FINETUNE.md "Evidence"):
#   configs/smollm2-135m-w800-kv2.space.json  FFN 800, 2 KV heads (6 query heads) in every block: 1.53x smaller
#   configs/smollm2-135m-w736-kv1.space.json  FFN 736, 1 KV head (3 query heads): 1.77x smaller (Q8_0 sizes)
# Fine-tuning: sandwich preset with --random-subnets 0, so every step trains the full network and the target on
# the same Alpaca item (seq 256, batch 1), with in-place distillation of the target towards the full network.
# The run goes in segments of SEG steps; before the first and after each, the full network and the target are
# scored at Q8_0 (in memory) on ARC-Easy (300 items, the demo's subset) and GPL-3 perplexity (4 chunks).
# Usage: scripts/budget-experiment.sh [RUN_DIR] [STEPS] [SEG] [SPACE]   (resumes; results in RUN_DIR/curve.jsonl)
# Needs llamanas in $LLAMANAS_BIN_DIR or $CARGO_TARGET_DIR/release; the real assets in $LLAMANAS_ASSETS.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
run=${1:-runs/budget}; steps=${2:-600}; seg=${3:-100}; space=${4:-$here/configs/smollm2-135m-w800-kv2.space.json}
assets=${LLAMANAS_ASSETS:-$here/assets}
bin=${LLAMANAS_BIN_DIR:-${CARGO_TARGET_DIR:-$here/target}/release}
text=/usr/share/common-licenses/GPL-3
mkdir -p "$run"
python3 - "$space" "$run" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
n = s["n_layers"]
assert s["min_layers"] == n, "the experiment's space keeps every layer"
json.dump({"layers": list(range(n)), "ffn": [max(c) for c in s["ffn_choices"]], "kv_heads": [max(c) for c in s["kv_choices"]]}, open(sys.argv[2] + "/full.json", "w"))
json.dump({"layers": list(range(n)), "ffn": [c[0] for c in s["ffn_choices"]], "kv_heads": [c[0] for c in s["kv_choices"]]}, open(sys.argv[2] + "/target.json", "w"))
PY
[ -f "$run/supernet/supernet.gguf" ] || "$bin/llamanas" import "$assets/SmolLM2-135M-Instruct.Q4_1.gguf" --out "$run/supernet" \
  --space "$space" --calib-tokens 4096 --threads 2 --force
score() { # score STEP SUPERNET
  for who in full target; do
    key="$1-$who"
    grep -q "\"key\": \"$key\"" "$run/curve.jsonl" 2>/dev/null && continue
    t=$(date +%s)
    "$bin/llamanas" eval "$2" --subnet "$run/$who.json" --quant q8_0 --tasks arc_easy --limit 300 --seed 1 \
      --ppl "$text" --ppl-chunks 4 --threads 2 --json > "$run/eval-$key.json"
    python3 - "$run/eval-$key.json" "$key" "$1" "$who" "$(( $(date +%s) - t ))" >> "$run/curve.jsonl" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(json.dumps({"key": sys.argv[2], "step": int(sys.argv[3]), "subnet": sys.argv[4], "eval_s": int(sys.argv[5]), "result": d}))
PY
    echo "scored $key in $(( $(date +%s) - t )) s" >&2
  done
}
score 0 "$run/supernet"
done_steps=0
[ -f "$run/ft/checkpoints/latest.json" ] && done_steps=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["step"])' "$run/ft/checkpoints/latest.json")
while [ "$done_steps" -lt "$steps" ]; do
  "$bin/llamanas" finetune "$run/supernet" --data "$assets/data/alpaca_en_demo.json" --steps "$steps" --seq-len 256 \
    --batch 1 --lr 1e-4 --warmup 10 --random-subnets 0 --distill-weight 0.5 --save-every 25 \
    --max-steps-this-run "$seg" --out "$run/ft" --resume
  read -r done_steps ck < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["step"], d["dir"])' "$run/ft/checkpoints/latest.json")
  score "$done_steps" "$run/ft/checkpoints/$ck/supernet.gguf"
done
