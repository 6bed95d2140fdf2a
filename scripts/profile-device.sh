#!/usr/bin/env bash
# Measure and validate the device profiles of this machine (docs/PROFILES.md): both thread counts, Q8_0 and
# Q4_0, each validated on K random sub-networks. Run on a quiet machine (check `uptime`).
# Usage: scripts/profile-device.sh [K] [THREADS...]
set -euo pipefail
cd "$(dirname "$0")/.."
K=${1:-30}
shift || true
THREADS=${*:-"2 1"}
MODEL=${LLAMANAS_ASSETS:-$HOME/.cache/llamanas/assets}/SmolLM2-135M-Instruct.Q4_1.gguf
cargo build --release -p device-runtime --bin edgerun
BIN=${CARGO_TARGET_DIR:-target}/release/edgerun
mkdir -p profiles/validation
for t in $THREADS; do
  for q in q8_0 q4_0; do
    echo "== threads $t, $q ($(date -u +%H:%M:%S), $(uptime | sed 's/.*load/load/'))"
    "$BIN" profile "$MODEL" --threads "$t" --quant "$q" --quiet \
      --validate "$K" --validation-csv "profiles/validation/t$t-$q.csv"
  done
done
