"""Running a built plugin the way a queue does, without Redis, from a test
(CPython, outside the component): `switchyard invoke`, found as
`$SWITCHYARD` or on the PATH."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any


def invoke(plugin: str | Path, message_type: str, body: str, *args: str) -> dict[str, Any]:
    """`switchyard invoke <plugin> --type <message_type> --body <body>
    --json <args>`: its report (`outcome`, `reason`, `delay_ms`, `logs`,
    `requests`, `keyvalue`, `published`...). `body` is the body itself, or
    `@file`. Raises when the command cannot run or gives no report."""
    plugin = Path(plugin)
    if not plugin.is_file():
        raise FileNotFoundError(f"{plugin} is not built yet (see README.md)")
    program = os.environ.get("SWITCHYARD", "switchyard")
    done = subprocess.run(
        [program, "invoke", str(plugin), "--type", message_type, "--body", body, "--json", *args],
        capture_output=True,
        text=True,
    )
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError as e:
        raise RuntimeError(f"{program} invoke gave no report ({e}): {done.stdout}{done.stderr}") from None
    return report
