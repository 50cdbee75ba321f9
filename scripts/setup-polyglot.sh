#!/usr/bin/env bash
# Installs what building the plugins written in Python and JavaScript
# (scripts/build-polyglot.sh) needs: componentize-py and mypy (the Python
# template's type check), in a virtual environment of their own under
# target/tools, and componentize-js, from npm (with nodejs and npm from
# Debian when missing). The tests need them; the
# demo does not. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=target/tools
if ! "$tools/python/bin/componentize-py" --version 2>/dev/null | grep -q "0.25.1"; then
  echo "setup: installing componentize-py 0.25.1 in $tools/python" >&2
  mkdir -p "$tools"
  if ! python3 -m venv "$tools/python" >/dev/null 2>&1; then
    # Debian splits venv support (ensurepip) into its own package.
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$tools/python"
    python3 -m venv "$tools/python"
  fi
  "$tools/python/bin/pip" install -q componentize-py==0.25.1
fi
# mypy type-checks the Python template against the kit's stubs.
if ! "$tools/python/bin/mypy" --version 2>/dev/null | grep -q "mypy 1.19.1 "; then
  echo "setup: installing mypy 1.19.1 in $tools/python" >&2
  "$tools/python/bin/pip" install -q mypy==1.19.1
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing nodejs and npm" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d plugins/js-forward/node_modules/@bytecodealliance/componentize-js ]; then
  echo "setup: installing componentize-js (npm ci in plugins/js-forward)" >&2
      # With npm 10, whatever npm the machine has: npm 11.6 and later refuse
  # this lock in `npm ci` (they want entries for other platforms' optional
  # binaries of nested packages), and their `npm install` leaves out
  # @bytecodealliance/preview2-shim, which componentize-js needs.
  (cd plugins/js-forward && npx --yes npm@10.9.9 ci --no-audit --no-fund --loglevel=error)
fi
