#!/usr/bin/env bash
# LINAS vs. NSGA-II vs. random search at the same budget (issue 8 evidence, docs/SEARCH.md).
# Usage: scripts/search-compare.sh SUPERNET_DIR OUT_DIR
# Environment: SEEDS (default "0 1 2"), EVALS (60), POPULATION (10), LIMIT (ARC-Easy items, 50),
# PROFILE (profiles/amd-epyc-2c-24g-t2-q8_0.json), THREADS (2), LLAMANAS_BIN_DIR (prebuilt binaries; else
# a release build). Each run resumes where it stopped; finished runs are skipped. Ends with the summary
# (OUT_DIR/summary.md, OUT_DIR/hypervolume.svg) from scripts/search_compare.py.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 SUPERNET_DIR OUT_DIR" >&2; exit 2; }
SUPERNET=$1 OUT=$2
SEEDS=${SEEDS:-"0 1 2"} EVALS=${EVALS:-60} POPULATION=${POPULATION:-10} LIMIT=${LIMIT:-50}
PROFILE=${PROFILE:-profiles/amd-epyc-2c-24g-t2-q8_0.json} THREADS=${THREADS:-2}
if [ -n "${LLAMANAS_BIN_DIR:-}" ]; then
  BIN=$LLAMANAS_BIN_DIR/llamanas
else
  cargo build --release -p host --bin llamanas
  BIN=${CARGO_TARGET_DIR:-target}/release/llamanas
fi
mkdir -p "$OUT"
for seed in $SEEDS; do
  for algo in linas nsga2 random; do
    o=$OUT/$algo-$seed
    [ -f "$o/pareto.json" ] && [ "$(wc -l < "$o/evaluations.jsonl")" -ge "$EVALS" ] && continue
    r=(); [ -f "$o/evaluations.jsonl" ] && r=(--resume)
    echo "== $algo, seed $seed ($(date -u +%H:%M:%S) UTC, $(uptime | sed 's/.*load/load/'))"
    "$BIN" search "$SUPERNET" --task arc_easy --limit "$LIMIT" --profile "$PROFILE" \
      --objectives accuracy,latency,size --algo "$algo" --evals "$EVALS" --population "$POPULATION" \
      --seed "$seed" --threads "$THREADS" --out "$o" "${r[@]}"
  done
done
python3 scripts/search_compare.py "$OUT"
