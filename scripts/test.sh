#!/usr/bin/env bash
# Runs every test: the plugins' own tests, the host's unit tests, and the
# integration tests (each with its own redis-server and HTTP services on free
# loopback ports, and the real plugins built from plugins/, in Rust, Python
# and JavaScript), then prints the totals.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
scripts/setup-polyglot.sh
scripts/build-plugins.sh --quiet
scripts/build-polyglot.sh
host=$(rustc -vV | sed -n 's/^host: //p')
out=$(mktemp)
trap 'rm -f "$out"' EXIT
(cd plugins && cargo test -p chat-events -p switchyard-plugin -p webhook -p email --lib --target "$host" "$@") 2>&1 | tee -a "$out"
cargo test --workspace --all-targets "$@" 2>&1 | tee -a "$out"
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$out"
