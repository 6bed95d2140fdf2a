#!/usr/bin/env bash
# Training-free sub-networks against the pruning baselines (issue 20; results in docs/QUALITY.md).
#
#   scripts/quality.sh            writes runs/quality/ (LLAMANAS_RUN_DIR): models/, results/, table.md
#
# 1. import SmolLM2-135M twice, with the importance order and with the OBS order (--order obs), each with the
#    calibration statistics of 128k tokens of c4/wiki text (calib.gguf);
# 2. the device profile of this machine (a committed one when `edgerun devices --find-profile` matches, else
#    measured);
# 3. at each operating point (POINTS, predicted decode speed-up): ShortGPT and uniform-width sub-networks
#    (`llamanas prune`), and the LINAS members of two searches (from random sub-networks, and warm-started with
#    the baselines that lie in the space, `--init`): each a search on the reconstructed super-network (1/perplexity of
#    c4 documents the calibration did not use, 16 chunks of 128 tokens; latency from the profile; Q8_0 size;
#    LINAS_EVALS evaluations), then per point the evaluated sub-network of best accuracy among those
#    predicted at least that fast;
# 4. each exported as Q8_0 sliced only (--no-reconstruct) and reconstructed, from each super-network;
# 5. each file measured: edgerun bench (decode/prefill t/s), GPL-3 perplexity (whole text, ctx 512) and, with
#    EVAL=1, ARC-Easy (validation), PIQA (validation) and HellaSwag (first HS_LIMIT items) accuracy.
# Every step keeps its outputs; running the script again continues where it stopped.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
export LLAMANAS_ASSETS=${LLAMANAS_ASSETS:-$here/assets}
bin=${LLAMANAS_BIN_DIR:-${CARGO_TARGET_DIR:-$here/target}/release}
run=${LLAMANAS_RUN_DIR:-runs/quality}
points=${POINTS:-"1.15 1.25 1.5"}
threads=${THREADS:-2}
hs_limit=${HS_LIMIT:-2000}
text=/usr/share/common-licenses/GPL-3
assets=$(scripts/fetch-assets.sh "$LLAMANAS_ASSETS")
base="$assets/SmolLM2-135M-Instruct.Q4_1.gguf"
llamanas="$bin/llamanas"; edgerun="$bin/edgerun"
mkdir -p "$run/subnets" "$run/models" "$run/results"
log() { printf '== %s\n' "$*" >&2; }

for order in importance obs; do
  if [ ! -f "$run/sn-$order/supernet.json" ]; then
    log "import ($order order)"
    /usr/bin/time -f "%e s, max RSS %M kB" -o "$run/import-$order.time" \
      "$llamanas" import "$base" --out "$run/sn-$order" --order "$order" --threads "$threads" --force > "$run/import-$order.log"
  fi
done

if [ ! -f "$run/profile.json" ]; then
  if p=$("$edgerun" devices --find-profile profiles --threads "$threads" --quant q8_0 2>"$run/profile-match.log"); then
    cp "$p" "$run/profile.json"
  else
    log "no committed profile matches this machine: measuring one"
    "$edgerun" profile "$base" --threads "$threads" --quant q8_0 --budget 600 --passes 3 --out "$run/profile.json"
  fi
fi

printf '{"layers":%s,"ffn":%s,"kv_heads":%s}\n' "$(python3 -c 'print(list(range(30)))')" \
  "$(python3 -c 'print([1536]*30)')" "$(python3 -c 'print([3]*30)')" > "$run/subnets/full.json"
for p in $points; do
  for m in shortgpt uniform-width; do
    f="$run/subnets/$m-$p.json"
    [ -f "$f" ] || "$llamanas" prune "$run/sn-importance" --method "$m" --target-speedup "$p" --profile "$run/profile.json" \
      --out "$f" >&2
  done
done

# LINAS on the reconstructed super-network. The search text: c4 documents 200-299 (calibration read only the
# first 65536 c4 tokens, inside documents 0-199); never the GPL-3 text or a benchmark.
python3 - "$assets/data/c4_demo.jsonl" "$run/search-text.txt" <<'PY'
import json, sys
docs = [json.loads(l)["text"] for l in open(sys.argv[1]) if l.strip()]
open(sys.argv[2], "w").write("\n\n".join(docs[200:]))
PY
# Two runs: LINAS from random sub-networks (`linas`), and LINAS warm-started with the baselines that lie in its
# space (`linas-warm`, `search --init`).
linas_run() {
  local name=$1; shift
  if [ ! -f "$run/$name/pareto.json" ]; then
    local resume=(); [ -f "$run/$name/evaluations.jsonl" ] && resume=(--resume)
    "$llamanas" search "$run/sn-importance" --task "ppl:$run/search-text.txt" --limit 16 --profile "$run/profile.json" \
      --space configs/smollm2-135m-recon.space.json --evals "${LINAS_EVALS:-96}" --population 12 --threads "$threads" \
      --out "$run/$name" --quiet "${resume[@]}" "$@"
  fi
}
linas_run linas
init=$(python3 - "$run/subnets" configs/smollm2-135m-recon.space.json <<'PY'
import json, os, sys
sp = json.load(open(sys.argv[2]))
ok = []
for n in sorted(os.listdir(sys.argv[1])):
    if n.startswith(("shortgpt-", "uniform-width-")):
        c = json.load(open(os.path.join(sys.argv[1], n)))
        if len(c["layers"]) >= sp["min_layers"] and all(f in sp["ffn_choices"][l] and k in sp["kv_choices"][l]
                                                       for l, f, k in zip(c["layers"], c["ffn"], c["kv_heads"])):
            ok.append(os.path.join(sys.argv[1], n))
print(",".join(ok))
PY
)
linas_run linas-warm --init "$init"
for name in linas linas-warm; do
python3 - "$run" "$name" $points <<'PY'
import json, sys
run, name, points = sys.argv[1], sys.argv[2], [float(p) for p in sys.argv[3:]]
ev = [json.loads(l) for l in open(f"{run}/{name}/evaluations.jsonl") if l.strip()]
base = max(e["latency_ms"] for e in ev if len(e["config"]["layers"]) == 30 and min(e["config"]["ffn"]) == 1536
           and min(e["config"]["kv_heads"]) == 3)
for p, label in zip(points, sys.argv[3:]):
    ok = [e for e in ev if base / e["latency_ms"] >= p]
    if ok:
        best = max(ok, key=lambda e: e["accuracy"])
        json.dump(best["config"], open(f"{run}/subnets/{name}-{label}.json", "w"))
PY
done

# name sn flags subnet.json
export_one() {
  local name=$1 sn=$2 flags=$3 cfg=$4
  [ -f "$run/models/$name.gguf" ] && return 0
  # shellcheck disable=SC2086
  "$llamanas" export "$sn" --subnet "$cfg" --quant q8_0 --any-subnet $flags --out "$run/models/$name.gguf" --json \
    > "$run/models/$name.export.json"
}
export_one base "$run/sn-importance" --no-reconstruct "$run/subnets/full.json"
for cfg in "$run"/subnets/*-*.json; do
  n=$(basename "$cfg" .json)
  export_one "$n-sliced" "$run/sn-importance" --no-reconstruct "$cfg"
  # ShortGPT keeps every kept layer whole: reconstruction refits nothing (the file would be the same bytes).
  case "$n" in shortgpt-*) continue ;; esac
  export_one "$n-recon" "$run/sn-importance" --reconstruct "$cfg"
  case "$n" in linas-*|linas-warm-*) ;; *) export_one "$n-obs-recon" "$run/sn-obs" --reconstruct "$cfg" ;; esac
done

# Speed first (nothing else running), then quality. Speed depends on the shapes only, so each configuration is
# timed once (its sliced file), in BENCH_ROUNDS interleaved rounds (this VM's speed drifts by 10-20%).
for r in $(seq 1 "${BENCH_ROUNDS:-3}"); do
  for m in "$run"/models/base.gguf "$run"/models/*-sliced.gguf; do
    n=$(basename "$m" .gguf); n=${n%-sliced}; o="$run/results/$n-bench-r$r.json"
    [ -s "$o" ] || "$edgerun" bench "$m" -p 128 -n 64 -t "$threads" -r 3 --json > "$o"
  done
done
for m in "$run"/models/*.gguf; do
  n=$(basename "$m" .gguf); o="$run/results/$n"
  [ -s "$o-ppl.json" ] || "$edgerun" perplexity "$m" --file "$text" --ctx 512 -t "$threads" --json > "$o-ppl.json"
done
if [ "${EVAL:-0}" = 1 ]; then
  for m in "$run"/models/*.gguf; do
    n=$(basename "$m" .gguf); o="$run/results/$n"
    case "$n" in *-sliced) [ "${EVAL_SLICED:-0}" = 1 ] || continue ;; esac
    [ -s "$o-arc.json" ] || "$llamanas" eval "$m" --tasks arc_easy --threads "$threads" --cache "$o-arc.cache.jsonl" --json > "$o-arc.json"
    [ -s "$o-piqa.json" ] || "$llamanas" eval "$m" --tasks piqa --threads "$threads" --cache "$o-piqa.cache.jsonl" --json > "$o-piqa.json"
    [ -s "$o-hs.json" ] || "$llamanas" eval "$m" --tasks hellaswag --limit "$hs_limit" --threads "$threads" \
      --cache "$o-hs.cache.jsonl" --json > "$o-hs.json"
  done
fi
python3 scripts/quality_report.py "$run" > "$run/table.md"
log "wrote $run/table.md"
