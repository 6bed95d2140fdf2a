#!/usr/bin/env bash
# The test command: installs the Python reference tools the parity tests compare against, fetches the real
# assets (cached in $LLAMANAS_ASSETS), and runs every test of the workspace.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
export LLAMANAS_ASSETS=${LLAMANAS_ASSETS:-$here/assets}
# Reference implementations for the parity tests (gguf-py's quants, HF tokenizers).
python3 -m pip install --quiet --disable-pip-version-check gguf==0.19.0 numpy tokenizers==0.23.3 jinja2==3.1.6 >&2
scripts/fetch-assets.sh "$LLAMANAS_ASSETS" >/dev/null
cargo test --workspace --locked "$@"
