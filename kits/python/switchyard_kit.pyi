# Types of switchyard_kit.py, contract switchyard:plugin@0.2.0, for editors
# and mypy. They stand alone: a plugin type-checks (`mypy app.py`) without
# the bindings componentize-py generates when it builds the component.
# See switchyard_kit.py for what each does.

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

MISSING_SETTING_DELAY_MS: int

class Message:
    """One message, as the queue hands it to `handle`."""

    #: The producer's id (or the ingress entry id): the same for every queue
    #: and redelivery; make handling idempotent with it.
    id: str
    #: The message type, e.g. `chat.ended`.
    message_type: str
    #: The queue this copy was routed to.
    queue: str
    #: The body as the producer sent it: valid JSON, of any shape.
    body: str
    #: Every other field the producer sent, in its order.
    headers: list[tuple[str, str]]
    #: 1 on the first delivery, then 2, 3, ... on each redelivery.
    attempt: int

class Retry:
    reason: str
    delay_ms: Optional[int]

class Failure_Retry:
    value: Retry

class Failure_Reject:
    value: str

class Failure(Exception):
    """Why a message was not handled: raised by a handler."""

    value: Failure_Retry | Failure_Reject
    def __init__(self, value: Failure_Retry | Failure_Reject) -> None: ...
    @staticmethod
    def retry(reason: str, delay_ms: Optional[int] = None) -> Failure: ...
    @staticmethod
    def reject(reason: str) -> Failure: ...

def export(handler_class: type) -> type: ...

class log:
    @staticmethod
    def debug(text: str) -> None: ...
    @staticmethod
    def info(text: str) -> None: ...
    @staticmethod
    def warn(text: str) -> None: ...
    @staticmethod
    def error(text: str) -> None: ...

class config:
    @staticmethod
    def get(key: str) -> Optional[str]: ...
    @staticmethod
    def required(key: str) -> str: ...
    @staticmethod
    def json() -> dict[str, Any]: ...

def publish(message_type: str, body: Any, headers: Optional[dict[str, str]] = None) -> str: ...

class kv:
    @staticmethod
    def get(bucket: str, key: str) -> Optional[bytes]: ...
    @staticmethod
    def set(bucket: str, key: str, value: bytes | str) -> None: ...
    @staticmethod
    def increment(bucket: str, key: str, delta: int = 1) -> int: ...
    @staticmethod
    def delete(bucket: str, key: str) -> None: ...

@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    def json(self) -> Any: ...
    def retry_after_ms(self) -> Optional[int]: ...

class http:
    @staticmethod
    def request(
        method: str, url: str, body: bytes = b"", headers: Optional[dict[str, str]] = None
    ) -> Answer: ...
    @staticmethod
    def get(url: str, headers: Optional[dict[str, str]] = None) -> Answer: ...
    @staticmethod
    def post(url: str, body: bytes | str | Any, headers: Optional[dict[str, str]] = None) -> Answer: ...
    @staticmethod
    def check(answer: Answer, what: str) -> Answer: ...

class sql:
    @staticmethod
    def error_text(e: Any) -> str: ...
    @staticmethod
    def failure(e: Any, what: str) -> Failure: ...
    @staticmethod
    def query(
        statement: str, params: Sequence[Any] = (), what: str = "SQL"
    ) -> list[dict[str, Any]]: ...
    @staticmethod
    def execute(statement: str, params: Sequence[Any] = (), what: str = "SQL") -> int: ...
    @staticmethod
    def transaction(what: str = "SQL transaction") -> AbstractContextManager[None]: ...

class mail:
    @staticmethod
    def error_text(e: Any) -> str: ...
    @staticmethod
    def failure(e: Any, what: str) -> Failure: ...
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
    ) -> str: ...
