"""Writing Switchyard plugins in Python, contract switchyard:plugin@0.2.0.

A plugin is a class with a `handle(self, message)` method, exported as
`Handler = export(Plugin)` from the module componentize-py builds (`app.py`;
componentize-py looks for the class `Handler` there, the contract's
interface):

    from switchyard_kit import Failure, config, export, http, kv, mail, publish, sql

    class Plugin:
        def handle(self, message):
            url = config.required("url")
            answer = http.post(url, message.body.encode(), {"idempotency-key": message.id})
            http.check(answer, "notifying")          # 2xx ok; 408/429/5xx retry; else reject
            kv.increment("chats", "total", 1)
            publish("crm.synced", {"id": message.id})

    Handler = export(Plugin)

A handler returns to succeed, raises `Failure.retry(...)` or
`Failure.reject(...)` to fail, and anything else it raises is a bug: the
kit writes the exception's type and message (not the traceback) to stderr
and traps, which the host counts as a trap (dead-lettered after the
queue's `max_trap_attempts`).

Inside a component there are no sockets: urllib, requests and http.client
cannot connect. `http` here goes through wasi:http, under the queue's
grant.
"""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, Sequence
from urllib.parse import urlsplit

import poll_loop
from componentize_py_types import Err
from poll_loop import PollLoop, Sink, Stream
from wit_world import exports
from wit_world.imports import atomics, messages, store
from wit_world.imports import config as _config
from wit_world.imports import log as _log
from wit_world.imports import mail as _mail
from wit_world.imports import publish as _publish
from wit_world.imports import sql as _sql
from wit_world.imports.types import (
    ErrorCode_HttpRequestDenied,
    Fields,
    Method_Delete,
    Method_Get,
    Method_Other,
    Method_Patch,
    Method_Post,
    Method_Put,
    OutgoingRequest,
    Scheme_Http,
    Scheme_Https,
)

Message = messages.Message

#: How long a message waits when the queue's config lacks a setting: the
#: message is fine, the operator's fix is what is missing.
MISSING_SETTING_DELAY_MS = 60_000


class Failure(Exception):
    """Why a message was not handled: raised by a handler."""

    value: messages.Failure

    def __init__(self, value: messages.Failure):
        super().__init__(value)
        self.value = value

    @staticmethod
    def retry(reason: str, delay_ms: Optional[int] = None) -> "Failure":
        """A transient failure: delivered again after `delay_ms`, or the
        queue's backoff."""
        return Failure(messages.Failure_Retry(messages.Retry(reason, delay_ms)))

    @staticmethod
    def reject(reason: str) -> "Failure":
        """A permanent failure: dead-lettered with `reason`."""
        return Failure(messages.Failure_Reject(reason))


def export(handler_class: type) -> type:
    """The class componentize-py exports for a handler class: failures
    raised as the contract's, any other exception a trap with its message."""

    class Exported(exports.Handler):
        def handle(self, message: messages.Message) -> None:
            try:
                handler_class().handle(message)
            except Failure as f:
                raise Err(f.value)
            except Err:
                raise
            except BaseException as e:  # a bug: said in one line, then a trap
                where = ""
                tb = e.__traceback__
                while tb is not None and tb.tb_next is not None:
                    tb = tb.tb_next
                if tb is not None:
                    where = f" ({tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"
                sys.stderr.write(f"uncaught {type(e).__name__}: {e}{where}\n")
                sys.stderr.flush()
                raise SystemExit(70)

    return Exported


class log:
    """Log lines, in the host's log with the queue and the message id."""

    @staticmethod
    def debug(text: str) -> None:
        _log.log(_log.Level.DEBUG, text)

    @staticmethod
    def info(text: str) -> None:
        _log.log(_log.Level.INFO, text)

    @staticmethod
    def warn(text: str) -> None:
        _log.log(_log.Level.WARN, text)

    @staticmethod
    def error(text: str) -> None:
        _log.log(_log.Level.ERROR, text)


class config:
    """The queue's `config` table."""

    @staticmethod
    def get(key: str) -> Optional[str]:
        return _config.get(key)

    @staticmethod
    def required(key: str) -> str:
        """A setting that must be there; without it the message waits
        (retried after a minute) for the operator to add it."""
        value = _config.get(key)
        if value is None or not value.strip():
            raise Failure.retry(f"the queue's config has no `{key}`", MISSING_SETTING_DELAY_MS)
        return value

    @staticmethod
    def json() -> dict[str, Any]:
        return json.loads(_config.get_json())


def publish(message_type: str, body: Any, headers: Optional[dict[str, str]] = None) -> str:
    """Publishes a follow-up message (sent only if this delivery is
    acknowledged) with `body` (JSON-encoded unless a str); returns its id.
    A refusal (a type not granted) is a `Failure` that retries: the
    operator's grant is missing."""
    text = body if isinstance(body, str) else json.dumps(body)
    try:
        return _publish.publish(message_type, text, list((headers or {}).items()))
    except Err as e:
        raise Failure.retry(f"publishing {message_type}: {e.value}", MISSING_SETTING_DELAY_MS)


class kv:
    """The queue's key-value buckets (wasi:keyvalue)."""

    @staticmethod
    def _failure(e: Err, what: str) -> Failure:
        if isinstance(e.value, store.Error_AccessDenied):
            return Failure.retry(f"{what}: key-value state is not granted", MISSING_SETTING_DELAY_MS)
        return Failure.retry(f"{what}: {e.value}")

    @staticmethod
    def get(bucket: str, key: str) -> Optional[bytes]:
        try:
            return store.open(bucket).get(key)
        except Err as e:
            raise kv._failure(e, f"reading {bucket}/{key}")

    @staticmethod
    def set(bucket: str, key: str, value: bytes | str) -> None:
        data = value.encode() if isinstance(value, str) else value
        try:
            store.open(bucket).set(key, data)
        except Err as e:
            raise kv._failure(e, f"writing {bucket}/{key}")

    @staticmethod
    def increment(bucket: str, key: str, delta: int = 1) -> int:
        """Adds `delta` to the key's integer (0 when absent), atomically;
        returns the new value."""
        try:
            return atomics.increment(store.open(bucket), key, delta)
        except Err as e:
            raise kv._failure(e, f"incrementing {bucket}/{key}")

    @staticmethod
    def delete(bucket: str, key: str) -> None:
        try:
            store.open(bucket).delete(key)
        except Err as e:
            raise kv._failure(e, f"deleting {bucket}/{key}")


@dataclass
class Answer:
    """An HTTP answer, read whole."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def retry_after_ms(self) -> Optional[int]:
        value = self.headers.get("retry-after", "").strip()
        if value.isdigit():
            return int(value) * 1000
        return None


class http:
    """HTTP over wasi:http, under the queue's `allowed_hosts`."""

    _METHODS = {
        "GET": Method_Get,
        "POST": Method_Post,
        "PUT": Method_Put,
        "PATCH": Method_Patch,
        "DELETE": Method_Delete,
    }

    @staticmethod
    async def _send(method: str, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        parts = urlsplit(url)
        fields = [(k.lower(), v.encode()) for k, v in headers.items()]
        # With its length, the body goes out whole rather than chunked,
        # which some receivers do not read.
        fields.append(("content-length", str(len(body)).encode()))
        request = OutgoingRequest(Fields.from_list(fields))
        m = http._METHODS.get(method.upper())
        request.set_method(m() if m else Method_Other(method))
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
        return Answer(response.status(), answer_headers, b"".join(chunks))

    @staticmethod
    def request(method: str, url: str, body: bytes = b"", headers: Optional[dict[str, str]] = None) -> Answer:
        """Sends a request and reads its answer. A destination the queue
        does not grant rejects the message; any other failure to get an
        answer retries it."""
        loop = PollLoop()
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(http._send(method, url, body, headers or {}))
        except Err as e:
            if isinstance(e.value, ErrorCode_HttpRequestDenied):
                raise Failure.reject(f"{method} {url}: denied by the host (allowed_hosts)")
            raise Failure.retry(f"{method} {url}: {type(e.value).__name__.removeprefix('ErrorCode_')}")
        finally:
            loop.close()

    @staticmethod
    def get(url: str, headers: Optional[dict[str, str]] = None) -> Answer:
        return http.request("GET", url, b"", headers)

    @staticmethod
    def post(url: str, body: bytes | str | Any, headers: Optional[dict[str, str]] = None) -> Answer:
        """POSTs `body` (bytes as they are, a str as UTF-8, anything else as
        JSON with its content type)."""
        headers = dict(headers or {})
        if isinstance(body, str):
            data = body.encode()
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
            headers.setdefault("content-type", "application/json")
        return http.request("POST", url, data, headers)

    @staticmethod
    def check(answer: Answer, what: str) -> Answer:
        """The rule every shipped plugin applies: 2xx succeeds; 408, 429
        and 5xx retry (after Retry-After when given); any other status
        rejects, with the status and the start of the answer."""
        if 200 <= answer.status < 300:
            return answer
        excerpt = answer.body[:300].decode("utf-8", "replace")
        if answer.status in (408, 429) or answer.status >= 500:
            raise Failure.retry(f"{what}: HTTP {answer.status}: {excerpt}", answer.retry_after_ms())
        raise Failure.reject(f"{what}: HTTP {answer.status}: {excerpt}")


class sql:
    """SQL on the queue's PostgreSQL database (`[queues.<name>.sql]`).

    Parameters and columns are Python values: None, bool, int (64-bit),
    float, str and bytes (see the contract for the conversions; cast other
    types in the statement, `$1::uuid`, `amount::text`):

        rows = sql.query("SELECT guid, total FROM chats WHERE site = $1", [site])
        for row in rows:
            log.info(f"{row['guid']}: {row['total']}")
        with sql.transaction():
            sql.execute("INSERT INTO chats (guid) VALUES ($1) ON CONFLICT DO NOTHING", [guid])
            sql.execute("UPDATE sites SET chats = chats + 1 WHERE id = $1", [site])

    An error raises the Failure it calls for, as the Rust kit's
    `sql::into_failure`: retried when transient (no connection, a timeout,
    a serialization failure or deadlock) and, after a minute, when the
    operator must act (no database granted, a missing table, privileges, a
    bad login: SQLSTATE classes 42, 3F, 28 and 0A); rejected when the data
    itself is refused (a constraint, a value out of range) or the statement
    is malformed. `what` starts the reason.
    """

    @staticmethod
    def _param(value: Any) -> Any:
        if value is None:
            return _sql.DbValue_Null()
        if isinstance(value, bool):
            return _sql.DbValue_Boolean(value)
        if isinstance(value, int):
            if not -(2**63) <= value < 2**63:
                raise Failure.reject(f"SQL parameter {value} does not fit a 64-bit integer")
            return _sql.DbValue_Int64(value)
        if isinstance(value, float):
            return _sql.DbValue_Floating64(value)
        if isinstance(value, str):
            return _sql.DbValue_Str(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return _sql.DbValue_Binary(bytes(value))
        raise TypeError(
            f"a SQL parameter is None, bool, int, float, str or bytes, not {type(value).__name__}"
        )

    @staticmethod
    def _column(value: Any) -> Any:
        return None if isinstance(value, _sql.DbValue_Null) else value.value

    @staticmethod
    def error_text(e: Any) -> str:
        """What an error of the contract's `sql` interface says (the error,
        or the `Err` the raw binding raised)."""
        e = e.value if isinstance(e, Err) else e
        if isinstance(e, _sql.Error_NotGranted):
            return "the queue has no database (queues.<name>.sql)"
        if isinstance(e, _sql.Error_Database):
            return f"{e.value.message} (SQLSTATE {e.value.code})"
        if isinstance(e, _sql.Error_Unavailable):
            return f"no database connection: {e.value}"
        return str(e.value)

    @staticmethod
    def failure(e: Any, what: str) -> Failure:
        """The Failure an error of the `sql` interface (or its `Err`)
        calls for."""
        e = e.value if isinstance(e, Err) else e
        reason = f"{what}: {sql.error_text(e)}"
        if isinstance(e, _sql.Error_NotGranted):
            return Failure.retry(reason, MISSING_SETTING_DELAY_MS)
        if isinstance(e, (_sql.Error_Unavailable, _sql.Error_Timeout)):
            return Failure.retry(reason)
        if isinstance(e, _sql.Error_Database):
            if e.value.transient:
                return Failure.retry(reason)
            if e.value.code[:2] in ("42", "3F", "28", "0A"):
                return Failure.retry(reason, MISSING_SETTING_DELAY_MS)
        return Failure.reject(reason)

    @staticmethod
    def query(statement: str, params: Sequence[Any] = (), what: str = "SQL") -> list[dict[str, Any]]:
        """Runs a statement that returns rows: each a dict by column name
        (give columns unique names, `AS`, when a join repeats one)."""
        try:
            result = _sql.query(statement, [sql._param(p) for p in params])
        except Err as e:
            raise sql.failure(e.value, what)
        names = [c.name for c in result.columns]
        return [dict(zip(names, (sql._column(v) for v in row))) for row in result.rows]

    @staticmethod
    def execute(statement: str, params: Sequence[Any] = (), what: str = "SQL") -> int:
        """Runs a statement; returns the number of rows it affected."""
        try:
            return _sql.execute(statement, [sql._param(p) for p in params])
        except Err as e:
            raise sql.failure(e.value, what)

    @staticmethod
    @contextmanager
    def transaction(what: str = "SQL transaction") -> Iterator[None]:
        """A transaction around the `with` block: committed when the block
        ends, rolled back when it raises (and the host rolls back one a
        call leaves open)."""
        try:
            _sql.begin()
        except Err as e:
            raise sql.failure(e.value, what)
        try:
            yield
        except BaseException:
            try:
                _sql.rollback()
            except Err:
                pass
            raise
        try:
            _sql.commit()
        except Err as e:
            raise sql.failure(e.value, what)


class mail:
    """Mail through the queue's SMTP relay (`[queues.<name>.mail]`).

        mail.send("Support <support@example.com>", [visitor], "Your chat",
                  text=transcript, headers={"Message-ID": f"<{message.id}@example.com>"})

    Delivery is at least once: give each mail a Message-ID made from the
    message id (the host makes one when `headers` has none). An error raises
    the Failure it calls for, as the Rust kit's `mail::into_failure`: an
    invalid mail or a relay's 5xx rejects, a 4xx or an unreachable relay
    retries, no relay granted waits a minute for the operator.
    """

    @staticmethod
    def error_text(e: Any) -> str:
        """What an error of the contract's `mail` interface says (the error,
        or the `Err` the raw binding raised)."""
        e = e.value if isinstance(e, Err) else e
        if isinstance(e, _mail.Error_NotGranted):
            return "the queue has no mail relay (queues.<name>.mail)"
        if isinstance(e, _mail.Error_Permanent):
            return f"the relay refused it: {e.value}"
        if isinstance(e, _mail.Error_Transient):
            return f"not sent: {e.value}"
        return str(e.value)

    @staticmethod
    def failure(e: Any, what: str) -> Failure:
        """The Failure an error of the `mail` interface (or its `Err`)
        calls for."""
        e = e.value if isinstance(e, Err) else e
        reason = f"{what}: {mail.error_text(e)}"
        if isinstance(e, _mail.Error_NotGranted):
            return Failure.retry(reason, MISSING_SETTING_DELAY_MS)
        if isinstance(e, _mail.Error_Transient):
            return Failure.retry(reason)
        return Failure.reject(reason)

    @staticmethod
    def send(
        sender: str,
        to: str | Iterable[str],
        subject: str,
        text: Optional[str] = None,
        html: Optional[str] = None,
        cc: str | Iterable[str] = (),
        bcc: str | Iterable[str] = (),
        reply_to: Optional[str] = None,
        headers: Optional[dict[str, str]] = None,
        what: str = "sending mail",
    ) -> str:
        """Sends one mail (`text`, `html` or both); returns its Message-ID.
        `to`, `cc` and `bcc` are an address or a list of them."""

        def addresses(value: str | Iterable[str]) -> list[str]:
            return [value] if isinstance(value, str) else list(value)

        email = _mail.Email(
            sender,
            addresses(to),
            addresses(cc),
            addresses(bcc),
            reply_to,
            subject,
            text,
            html,
            list((headers or {}).items()),
        )
        try:
            return _mail.send(email)
        except Err as e:
            raise mail.failure(e.value, what)
