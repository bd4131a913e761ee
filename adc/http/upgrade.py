"""WebSocket upgrade checks (RFC 6455 §4): the request, and whether a 101 may open a tunnel."""

from __future__ import annotations

import binascii
import hashlib

from adc.http.events import BodyKind, Headers, RequestHead, ResponseHead
from adc.http.headers import connection_tokens, get_all, get_one, tokens

WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def upgrade_tokens(headers: Headers) -> list[str]:
    out: list[str] = []
    for value in get_all(headers, b"upgrade"):
        out += tokens(value)
    return out


def upgrade_request(head: RequestHead) -> str | None:
    """The protocol switch the request proposes: None, "websocket" or "other".

    A switch needs `Connection: upgrade` and an Upgrade field; it is a WebSocket one
    when one of the protocols offered is websocket (whatever its version suffix).
    """
    offered = upgrade_tokens(head.headers)
    if not offered or "upgrade" not in connection_tokens(head.headers):
        return None
    return "websocket" if any(t.split("/", 1)[0] == "websocket" for t in offered) else "other"


def check_websocket_request(head: RequestHead) -> str | None:
    """None when the websocket upgrade request is valid, else why it is not (-> 400)."""
    if head.method != "GET":
        return "websocket upgrade must use GET"
    if head.version != "1.1":
        return "websocket upgrade needs HTTP/1.1"
    if head.body is not BodyKind.NONE:
        return "websocket upgrade must not have a body"
    keys = get_all(head.headers, b"sec-websocket-key")
    if len(keys) != 1:
        return "missing or duplicate Sec-WebSocket-Key"
    try:
        # strict: the base64 alphabet only, correct padding, nothing after it
        raw = binascii.a2b_base64(keys[0].strip(), strict_mode=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        return "invalid Sec-WebSocket-Key"
    versions = get_all(head.headers, b"sec-websocket-version")
    if len(versions) != 1 or versions[0].strip() != b"13":
        return "Sec-WebSocket-Version must be 13"
    return None


def accept_key(key: bytes) -> bytes:
    return binascii.b2a_base64(hashlib.sha1(key.strip() + WEBSOCKET_GUID).digest(), newline=False)


def may_tunnel(
    request: RequestHead,
    response: ResponseHead,
    *,
    websocket_allowed: bool,
    request_complete: bool,
    offered: str | None | bool = False,
) -> tuple[bool, str | None]:
    """(tunnel?, why not). `why not` set means a 101 that fails a check -> 502.

    Only a 101 with Upgrade: websocket, Connection: upgrade and the right
    Sec-WebSocket-Accept, answering a complete websocket request on a route
    that allows websocket, opens a tunnel. Any other status is plain HTTP.
    `offered` is `upgrade_request(request)` when the caller knows it already.
    """
    if response.status != 101:
        return False, None
    if offered is False:
        offered = upgrade_request(request)
    if not websocket_allowed or offered != "websocket":
        return False, "101 without a websocket upgrade request"
    if not request_complete:
        return False, "101 before the request was complete"
    if upgrade_tokens(response.headers) != ["websocket"]:
        return False, "101 without Upgrade: websocket"
    if "upgrade" not in connection_tokens(response.headers):
        return False, "101 without Connection: upgrade"
    key = get_one(request.headers, b"sec-websocket-key") or b""
    accepts = get_all(response.headers, b"sec-websocket-accept")
    if len(accepts) != 1 or accepts[0].strip() != accept_key(key):
        return False, "101 with a wrong Sec-WebSocket-Accept"
    return True, None
