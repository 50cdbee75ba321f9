"""An audit handler written in Python: logs every message it is given and
rejects a body that is not a JSON object.

Built with componentize-py (pip install componentize-py==0.25.1), against
contract 0.1.0:

    componentize-py -d ../../wit/switchyard-plugin@0.1.0 -w plugin componentize app \
        -o ../../target/wasm32-wasip2/release/python_audit.wasm

It is an 18 MB component that takes seconds to compile: the benchmark of
plugin reloads uses it as the large plugin.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, log, types


class Handler(exports.Handler):
    def handle(self, message: types.Message) -> None:
        try:
            body = json.loads(message.body)
        except ValueError as e:
            raise Err(types.Failure_Reject(f"body is not JSON: {e}"))
        if not isinstance(body, dict):
            raise Err(types.Failure_Reject("body is not a JSON object"))
        stream = config.get("stream") or "audit"
        log.log(
            log.Level.INFO,
            f"{stream}: {message.message_type} {message.id} site={body.get('SiteId')} attempt={message.attempt}",
        )
