#!/usr/bin/env bash
# Perplexity of the evidence sub-networks (docs/finetune/subnets/*.json, or $SUBNETS/*.json) of a super-network, through the
# runtime engine on F32 exports: `llamanas export --quant f32` then `edgerun perplexity` (llama-perplexity's
# method: non-overlapping 512-token chunks, second half of each scored).
# Usage: scripts/finetune-eval.sh SUPERNET_DIR_OR_GGUF OUT_DIR [TEXT] [CHUNKS]
# Writes OUT_DIR/<name>.json (edgerun's JSON) and prints "name ppl" lines. Needs release builds of llamanas
# and edgerun in $CARGO_TARGET_DIR (default target/), or set LLAMANAS_BIN_DIR to the folder holding them.
set -euo pipefail
in=$1; out=$2; text=${3:-/usr/share/common-licenses/GPL-3}; chunks=${4:-0}
bin=${LLAMANAS_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
for cfg in "${SUBNETS:-$here/docs/finetune/subnets}"/*.json; do
  name=$(basename "$cfg" .json)
  "$bin/llamanas" export "$in" --subnet "$cfg" --quant f32 --out "$out/$name.gguf" >/dev/null
  "$bin/edgerun" perplexity "$out/$name.gguf" -f "$text" --chunks "$chunks" --threads "${THREADS:-2}" --json > "$out/$name.json"
  rm -f "$out/$name.gguf"
  printf '%s %s\n' "$name" "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("ppl", d.get("perplexity", d)))' "$out/$name.json")"
done
