#!/usr/bin/env bash
# The test command: installs the Python reference tools the parity tests compare against, fetches the real
# assets (cached in $LLAMANAS_ASSETS), runs every test of the workspace, then builds host with its `wgpu`
# feature and runs the wgpu tests (host/tests/elastic_wgpu.rs: burn's wgpu device against its CPU device;
# device-runtime/tests/gpu_smollm2.rs: the runtime's wgpu backend against the f32 reference and the CPU engine).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
export LLAMANAS_ASSETS=${LLAMANAS_ASSETS:-$here/assets}
# Reference implementations for the parity tests (gguf-py's quants, HF tokenizers).
python3 -m pip install --quiet --disable-pip-version-check gguf==0.19.0 numpy tokenizers==0.23.3 jinja2==3.1.6 >&2
scripts/fetch-assets.sh "$LLAMANAS_ASSETS" >/dev/null

# The wgpu tests need a wgpu adapter. Without a GPU, Mesa's Vulkan driver for the CPU (llvmpipe/lavapipe)
# gives one: install it when missing (Debian/Ubuntu). The tests fail with the reason when no adapter exists.
if command -v dpkg >/dev/null && ! dpkg -s mesa-vulkan-drivers >/dev/null 2>&1; then
  echo "test.sh: installing mesa-vulkan-drivers (a wgpu adapter for the wgpu tests)" >&2
  sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers >&2 \
    || { $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers >&2; }
fi
# Mesa wants a runtime folder and a writable shader cache (kept between runs: compiled shaders are reused).
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR=/tmp/llamanas-xdg-$(id -u)
  mkdir -p -m 700 "$XDG_RUNTIME_DIR"
fi
export MESA_SHADER_CACHE_DIR=${MESA_SHADER_CACHE_DIR:-$HOME/.cache/llamanas/mesa-shader-cache}
mkdir -p "$MESA_SHADER_CACHE_DIR"

cargo test --workspace --locked "$@"
cargo test -p host --locked --features wgpu --test elastic_wgpu
# device-runtime's own wgpu backend (WGSL kernels on GGUF blocks) on the llvmpipe adapter (GPL-3 perplexity of
# two files against the CPU engine included: one to two minutes each), and the tests whose assertions depend on
# the feature.
cargo test -p device-runtime --locked --features wgpu --test gpu_smollm2 --test devices_cli --test profile_latency \
  --test profile_measure -- --show-output
