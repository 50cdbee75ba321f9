#!/usr/bin/env bash
# Installs what Switchyard needs and a fresh Debian machine lacks: the
# redis-server package, PostgreSQL (the Persistence queue's database; the
# demo and the tests start a private server of their own), and Rust's
# wasm32-wasip2 target; with --tests, also what only the tests use:
# prometheus (for `promtool check metrics`), chromium and chromium-driver
# (the dashboard's browser test). Safe to run again.
set -euo pipefail

missing=()
if [ "${1:-}" = "--tests" ]; then
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
fi
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi


if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 Rust target" >&2
  rustup target add wasm32-wasip2
fi

