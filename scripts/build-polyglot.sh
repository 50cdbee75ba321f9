#!/usr/bin/env bash
# Builds the plugins written in Python and JavaScript into
# target/wasm32-wasip2/release/: python_forward.wasm and python_audit.wasm
# (componentize-py), js_forward.wasm (componentize-js).
# scripts/setup-polyglot.sh installs both tools.
# A plugin is rebuilt only when its source is newer than its component.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/wasm32-wasip2/release
mkdir -p "$out"

newer() { [ ! -f "$1" ] || [ -n "$(find "${@:2}" -newer "$1" -print -quit)" ]; }

if newer "$out/python_forward.wasm" plugins/python-forward/app.py wit; then
  echo "build-polyglot: python-forward (componentize-py)" >&2
  (cd plugins/python-forward &&
    "../../target/tools/python/bin/componentize-py" -d ../../wit/switchyard-plugin@0.2.0 -w plugin componentize app \
      -o "../../$out/python_forward.wasm" >/dev/null)
fi
if newer "$out/python_audit.wasm" plugins/python-audit/app.py wit; then
  echo "build-polyglot: python-audit (componentize-py)" >&2
  (cd plugins/python-audit &&
    "../../target/tools/python/bin/componentize-py" -d ../../wit/switchyard-plugin@0.1.0 -w plugin componentize app \
      -o "../../$out/python_audit.wasm" >/dev/null)
fi
if newer "$out/js_forward.wasm" plugins/js-forward/forward.js plugins/js-forward/build.mjs wit; then
  echo "build-polyglot: js-forward (componentize-js)" >&2
  (cd plugins/js-forward && node build.mjs >/dev/null)
fi
