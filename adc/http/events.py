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


@dataclass(slots=True)
class RequestHead:
    method: str
    target: bytes  # the request-target exactly as received
    version: str  # "1.0" or "1.1"
    headers: Headers  # names and values as received, in order
    keep_alive: bool
    body: BodyKind = BodyKind.NONE
    content_length: int | None = None
    path: str = ""  # target without the query, percent-decoding not applied
    host: str = ""  # Host without port, lower case


@dataclass(slots=True)
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

    @property
    def interim(self) -> bool:
        return 100 <= self.status < 200 and self.status != 101


@dataclass(slots=True)
class Body:
    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    trailers: Headers = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Malformed:
    """The peer sent something we refuse; `status` is the answer the appliance gives."""

    status: int
    reason: str


Event = RequestHead | ResponseHead | Body | EndOfMessage | Malformed
