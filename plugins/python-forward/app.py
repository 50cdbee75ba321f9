"""A Switchyard plugin in Python, contract 0.2.0: forwards each message, as
JSON, to the URL its queue's config names, through wasi:http with
componentize-py's own helpers (poll_loop, which it writes beside the
bindings).

    POST <url>
    Content-Type: application/json
    Idempotency-Key: <message id>

    {"id": ..., "type": ..., "attempt": ..., "data": <the message's body>}

A 2xx answer is done; 408, 429 and 5xx (and a failed connection) are
retried, after Retry-After if given; any other status rejects the message.
A destination the queue's allowed_hosts does not grant is rejected.

Build (scripts/build-polyglot.sh does this):

    pip install componentize-py==0.25.1
    componentize-py -d ../../wit/switchyard-plugin@0.2.0 -w plugin componentize app \
        -o ../../target/wasm32-wasip2/release/python_forward.wasm
"""

import asyncio
import json
from urllib.parse import urlsplit

import poll_loop
from componentize_py_types import Err
from poll_loop import PollLoop, Sink, Stream
from wit_world import exports
from wit_world.imports import config, log, messages
from wit_world.imports.types import (
    ErrorCode_HttpRequestDenied,
    Fields,
    Method_Post,
    OutgoingRequest,
    Scheme_Http,
    Scheme_Https,
)


async def post(url: str, body: bytes, headers: list[tuple[str, bytes]]):
    """POSTs `body` to `url`; returns the status, headers and body."""
    parts = urlsplit(url)
    # With its length, the body goes out whole rather than chunked, which
    # some receivers (Python's http.server among them) do not read.
    headers = [*headers, ("content-length", str(len(body)).encode())]
    request = OutgoingRequest(Fields.from_list(headers))
    request.set_method(Method_Post())
    request.set_scheme(Scheme_Https() if parts.scheme == "https" else Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    sink = Sink(request.body())
    sent = asyncio.ensure_future(poll_loop.send(request))
    await sink.send(body)
    sink.close()
    response = await sent
    answer_headers = {k.lower(): v.decode("latin-1") for k, v in response.headers().entries()}
    stream = Stream(response.consume())
    chunks = []
    while (chunk := await stream.next()) is not None:
        chunks.append(chunk)
    return response.status(), answer_headers, b"".join(chunks)


def retry(reason: str, delay_ms=None) -> Err:
    return Err(messages.Failure_Retry(messages.Retry(reason, delay_ms)))


def reject(reason: str) -> Err:
    return Err(messages.Failure_Reject(reason))


class Handler(exports.Handler):
    def handle(self, message: messages.Message) -> None:
        url = config.get("url")
        if not url:
            raise retry("the queue's config has no `url`", 60_000)
        event = {
            "id": message.id,
            "type": message.message_type,
            "attempt": message.attempt,
            "data": json.loads(message.body),
        }
        headers = [
            ("content-type", b"application/json"),
            ("idempotency-key", message.id.encode()),
            ("user-agent", b"switchyard-python-forward"),
        ]
        loop = PollLoop()
        asyncio.set_event_loop(loop)
        try:
            status, answer_headers, answer = loop.run_until_complete(
                post(url, json.dumps(event).encode(), headers)
            )
        except Err as e:
            if isinstance(e.value, ErrorCode_HttpRequestDenied):
                raise reject(f"forwarding to {url}: denied by the host (allowed_hosts)")
            raise retry(f"forwarding to {url}: {type(e.value).__name__.removeprefix('ErrorCode_')}")
        finally:
            loop.close()
        excerpt = answer[:300].decode("utf-8", "replace")
        if 200 <= status < 300:
            log.log(log.Level.INFO, f"forwarded {message.id} to {url}: HTTP {status}")
        elif status in (408, 429) or status >= 500:
            after = answer_headers.get("retry-after", "")
            raise retry(
                f"forwarding: HTTP {status}: {excerpt}",
                int(after) * 1000 if after.isdigit() else None,
            )
        else:
            raise reject(f"forwarding: HTTP {status}: {excerpt}")
