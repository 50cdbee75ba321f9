#!/usr/bin/env bash
# Runs every test: the plugins' payload tests, the host's unit tests, and the
# integration tests (each with its own redis-server on a free loopback port
# and the real plugins built from plugins/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-plugins.sh --quiet
host=$(rustc -vV | sed -n 's/^host: //p')
(cd plugins && cargo test -p chat-events --lib --target "$host" "$@")
cargo test --workspace --all-targets "$@"
