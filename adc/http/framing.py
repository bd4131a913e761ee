"""Strict RFC 9112 message framing: where a message ends, and what we refuse.

A request the appliance and a real server could disagree about is answered 400
and the connection closed (no request smuggling).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from adc.http.events import BodyKind, Headers
from adc.http.headers import get_all, tokens

_DIGITS = re.compile(rb"[0-9]+")
# RFC 3986 reg-name / IPv4 / IP-literal, with an optional port.
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]*)(:[0-9]*)?")
MAX_CONTENT_LENGTH_DIGITS = 18
# RFC 9112 §7: transfer-coding = token *( OWS ";" OWS transfer-parameter )
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_TRANSFER_CODING = re.compile(_TOKEN + rb'(?:[ \t]*;[ \t]*' + _TOKEN + rb'[ \t]*=[ \t]*(?:' + _TOKEN + rb'|"(?:[^"\\]|\\.)*"))*')


class FramingError(Exception):
    """A message the appliance refuses; `status` is what it answers."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def content_length(headers: Headers, status: int = 400) -> int | None:
    """The single valid Content-Length, None if absent; FramingError(status) otherwise."""
    values = get_all(headers, b"content-length")
    if not values:
        return None
    if len(values) > 1:
        raise FramingError(status, "duplicate Content-Length")
    value = values[0].strip()
    if not _DIGITS.fullmatch(value) or len(value) > MAX_CONTENT_LENGTH_DIGITS:
        raise FramingError(status, "invalid Content-Length")
    return int(value)


def transfer_codings(headers: Headers) -> list[str] | None:
    values = get_all(headers, b"transfer-encoding")
    if not values:
        return None
    codings: list[str] = []
    for value in values:
        codings += tokens(value)
    return codings


def _has_empty_member(values: Sequence[bytes]) -> bool:
    return any(not member.strip() for value in values for member in value.split(b","))


def _has_invalid_coding(values: Sequence[bytes]) -> bool:
    for value in values:
        for member in value.split(b","):
            member = member.strip(b" \t")
            if member and _TRANSFER_CODING.fullmatch(member) is None:
                return True
    return False


def request_framing(headers: Headers, version: str) -> tuple[BodyKind, int | None]:
    """Body framing of a request (RFC 9112 §6.3), refusing anything ambiguous."""
    codings = transfer_codings(headers)
    has_length = any(n.lower() == b"content-length" for n, _ in headers)
    if codings is not None:
        if has_length:
            raise FramingError(400, "both Content-Length and Transfer-Encoding")
        if version == "1.0":
            raise FramingError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if codings != ["chunked"]:
            raise FramingError(400, "transfer coding other than a single final chunked")
        return BodyKind.CHUNKED, None
    length = content_length(headers)
    if length is None or length == 0:
        return BodyKind.NONE, length
    return BodyKind.LENGTH, length


def check_host(headers: Headers, version: str) -> bytes | None:
    """The Host value; 400 when missing on HTTP/1.1, duplicated, or malformed."""
    values = get_all(headers, b"host")
    if len(values) > 1:
        raise FramingError(400, "duplicate Host")
    if not values:
        if version == "1.1":
            raise FramingError(400, "missing Host")
        return None
    host = values[0].strip()
    if not _HOST.fullmatch(host):
        raise FramingError(400, "invalid Host")
    return host


def response_framing(
    request_method: str, status: int, headers: Headers
) -> tuple[BodyKind, int | None, str | None]:
    """(body kind, length, framing violation) of a response (RFC 9112 §6.3).

    A violation is Transfer-Encoding, or a Content-Length other than 0, where the status
    forbids them (1xx, 204, a 2xx answer to CONNECT; RFC 9110 §8.6, RFC 9112 §6.1):
    such framing is never forwarded.
    """
    codings = transfer_codings(headers)
    violation = None
    no_body = request_method == "HEAD" or 100 <= status < 200 or status in (204, 304)
    connect_ok = request_method == "CONNECT" and 200 <= status < 300
    if 100 <= status < 200 or status == 204 or connect_ok:
        to = f"a {status} response" + (" to CONNECT" if connect_ok else "")
        if codings is not None:
            violation = f"Transfer-Encoding on {to}"
        elif any(n.lower() == b"content-length" and v.strip() != b"0" for n, v in headers):
            violation = f"Content-Length on {to}"
    if no_body or connect_ok:
        return BodyKind.NONE, None, violation
    if codings is not None:
        if any(n.lower() == b"content-length" for n, _ in headers):
            raise FramingError(502, "response with both Content-Length and Transfer-Encoding")
        if _has_invalid_coding(get_all(headers, b"transfer-encoding")):
            # ("chunked\xa0", say: not chunked to the parser, perhaps chunked to a client)
            raise FramingError(502, "response Transfer-Encoding with a member that is not a transfer coding")
        if "chunked" in codings:
            # Where the parser and a client could read a different end: chunked applied
            # twice (RFC 9112 §7.1 forbids it), or beside an empty list element, which
            # parsers split differently. Refused, never passed on.
            if codings.count("chunked") > 1:
                raise FramingError(502, "response with chunked applied more than once")
            if _has_empty_member(get_all(headers, b"transfer-encoding")):
                raise FramingError(502, "response Transfer-Encoding with an empty list member")
            if codings[-1] == "chunked":
                return BodyKind.CHUNKED, None, None
        return BodyKind.CLOSE, None, None
    length = content_length(headers, 502)
    if length is None:
        return BodyKind.CLOSE, None, None
    if length == 0:
        return BodyKind.NONE, 0, None
    return BodyKind.LENGTH, length, None

