#!/usr/bin/env bash
# Speed of the engine as llama-bench measures it (-p 128 -n 64 -t 1,2 -r 3), on the shipped model and the
# requantized Q8_0 / Q4_0 reference files (made with gguf-py by scripts/ref/make_reference_ggufs.py if missing).
# Usage: [BENCH_REPS=5] scripts/bench.sh [extra edgerun bench args, e.g. --json]
# Run it on a quiet machine: other processes' load shows up directly in the figures.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
export LLAMANAS_ASSETS=${LLAMANAS_ASSETS:-$here/assets}
derived="$LLAMANAS_ASSETS/derived"
model="$LLAMANAS_ASSETS/SmolLM2-135M-Instruct.Q4_1.gguf"
for v in q8_0 q4_0; do
  [ -f "$derived/smollm2-$v.gguf" ] || python3 scripts/ref/make_reference_ggufs.py "$derived" --model "$model" --only "$v" >&2
done
cargo build --release -p device-runtime --bin edgerun >&2
bin=${CARGO_TARGET_DIR:-target}/release/edgerun
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
for f in "$derived/smollm2-q8_0.gguf" "$derived/smollm2-q4_0.gguf" "$model"; do
  "$bin" bench "$f" -p 128 -n 64 -t 1,2 -r "${BENCH_REPS:-3}" "$@"
done
