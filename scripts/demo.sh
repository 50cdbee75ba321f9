#!/usr/bin/env bash
# Runs Switchyard's demo on this machine: a private redis-server on loopback
# (unless SWITCHYARD_REDIS_URL is set), the shipped queues.toml and plugins,
# sample chat events (malformed ones among them), and a summary of what each
# queue did and what was dead-lettered.
#
# The first run builds the plugins and the host (wasmtime is most of it):
# several minutes on a 2-core machine, with cargo's progress shown. Later
# runs start in seconds. The host is built in the same (dev) profile as the
# README's `run`, `check` and `status` commands and the tests, so none of
# them builds it again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ ! -x target/debug/switchyard ]; then
  echo "demo: first run: building the plugins and the host; this takes several minutes" >&2
fi
scripts/build-plugins.sh
exec cargo run --bin switchyard -- demo --config queues.toml --events demo/events.jsonl "$@"
