#!/usr/bin/env bash
# Builds every plugin in plugins/ into target/wasm32-wasip2/release/*.wasm.
set -euo pipefail
cd "$(dirname "$0")/../plugins"
cargo build --release "$@"
