#!/usr/bin/env bash
# The main job, end to end on the real assets. Grows stage by stage (see README "Pipeline").
# Today: fetch the assets, then inspect the real model with the device runtime.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
export LLAMANAS_ASSETS=${LLAMANAS_ASSETS:-$here/assets}
assets=$(scripts/fetch-assets.sh "$LLAMANAS_ASSETS")
cargo run --quiet --release -p device-runtime --bin edgerun -- inspect "$assets/SmolLM2-135M-Instruct.Q4_1.gguf"
