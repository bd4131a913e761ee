"""What the HTTP parsers report: frozen values, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from mypy_extensions import mypyc_attr

Headers = list[tuple[bytes, bytes]]


@mypyc_attr(native_class=False)  # compiled classes cannot extend list
class HeaderList(list):  # type: ignore[type-arg]
    """Header fields as received, plus a lower-case name index built on first lookup.

    Parsers produce these; the index (`adc.http.headers.header_index`) makes the
    several lookups each message needs one pass instead of one pass each. A
    HeaderList is not mutated after parsing.
    """

    __slots__ = ("lowered",)  # unset until the index is built (no __init__: one per message)

    lowered: dict[bytes, list[bytes]]


class BodyKind(enum.Enum):
    """How a message body is delimited on the wire."""

    NONE = "none"  # no body (HEAD answer, 1xx, 204, 304, a request without framing)
    LENGTH = "length"  # Content-Length
    CHUNKED = "chunked"  # Transfer-Encoding ending in chunked
    CLOSE = "close"  # a response read until the server closes


@dataclass(slots=True, init=False)
class RequestHead:
    method: str
    target: bytes  # the request-target exactly as received
    version: str  # "1.0" or "1.1"
    headers: Headers  # names and values as received, in order
    keep_alive: bool
    body: BodyKind = BodyKind.NONE
    content_length: int | None = None
    path: str = ""  # target without the query, as routes see it (adc.http.parser.routing_path)
    host: str = ""  # Host without port, lower case

    def __init__(self, method: str, target: bytes, version: str, headers: Headers, keep_alive: bool,
                 body: BodyKind = BodyKind.NONE, content_length: int | None = None, path: str = "",
                 host: str = "") -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.body = body
        self.content_length = content_length
        self.path = path
        self.host = host


@dataclass(slots=True, init=False)
class ResponseHead:
    status: int
    reason: bytes
    version: str
    headers: Headers
    keep_alive: bool
    body: BodyKind = BodyKind.NONE
    content_length: int | None = None
    # Set when the response carried framing it must not have (Transfer-Encoding on a
    # 1xx/204 or a 2xx answer to CONNECT): the framing is stripped, no body is relayed,
    # and the server connection is not reused.
    framing_violation: str | None = None

    def __init__(self, status: int, reason: bytes, version: str, headers: Headers, keep_alive: bool,
                 body: BodyKind = BodyKind.NONE, content_length: int | None = None,
                 framing_violation: str | None = None) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.body = body
        self.content_length = content_length
        self.framing_violation = framing_violation

    @property
    def interim(self) -> bool:
        return 100 <= self.status < 200 and self.status != 101


@dataclass(slots=True, init=False)
class Body:
    data: bytes

    def __init__(self, data: bytes) -> None:
        self.data = data


@dataclass(slots=True, init=False)
class EndOfMessage:
    trailers: Headers = field(default_factory=list)

    def __init__(self, trailers: Headers | None = None) -> None:
        self.trailers = [] if trailers is None else trailers


@dataclass(frozen=True, slots=True)
class Malformed:
    """The peer sent something we refuse; `status` is the answer the appliance gives."""

    status: int
    reason: str


Event = RequestHead | ResponseHead | Body | EndOfMessage | Malformed
