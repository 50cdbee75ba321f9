#!/usr/bin/env bash
# Runs Switchyard's demo on this machine: a private redis-server on loopback
# (unless SWITCHYARD_REDIS_URL is set), the shipped queues.toml and plugins,
# sample chat events (malformed ones among them), and a summary of what each
# queue did and what was dead-lettered.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-plugins.sh --quiet
exec cargo run --quiet --bin switchyard -- demo --config queues.toml --events demo/events.jsonl "$@"
