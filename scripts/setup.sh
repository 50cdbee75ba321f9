#!/usr/bin/env bash
# Installs what Switchyard needs and a fresh Debian machine lacks: the
# redis-server package and Rust's wasm32-wasip2 target. Safe to run again.
set -euo pipefail

if ! command -v redis-server >/dev/null 2>&1; then
  echo "setup: installing redis-server" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 Rust target" >&2
  rustup target add wasm32-wasip2
fi

