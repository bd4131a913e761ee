"""Playbook helpers for the sans-IO Layer-7 core: feed bytes, compare actions."""

from __future__ import annotations

import base64
import re

from adc.config.model import Profile, ProfileType, Route
from adc.http.exchange import Exchange, OpenServer, RequestDone
from adc.http.routing import Router
from adc.http.upgrade import accept_key

PROFILE = Profile(name="http", type=ProfileType.HTTP)
KEY = base64.b64encode(b"0123456789abcdef")
ACCEPT = accept_key(KEY)
XF = b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n"


def make(routes: tuple[Route, ...] = (), pool: str | None = "web", profile: Profile = PROFILE) -> Exchange:
    return Exchange(profile, Router(routes, pool), "10.0.0.1")


def kinds(actions: list) -> list[str]:
    return [type(a).__name__ for a in actions]


def without_facts(actions: list) -> list:
    """Actions with OpenServer/RequestDone reduced to comparable tuples."""
    out = []
    for a in actions:
        if isinstance(a, OpenServer):
            out.append(("OpenServer", a.pool, a.retry))
        elif isinstance(a, RequestDone):
            out.append(("RequestDone", a.facts.status))
        else:
            out.append(a)
    return out


def ws_request(path: str = "/ws", extra: bytes = b"") -> bytes:
    return (
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )


def ws_response(accept: bytes = ACCEPT) -> bytes:
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


def route(**kw) -> Route:
    if "path_regex" in kw and isinstance(kw["path_regex"], str):
        kw["path_regex"] = re.compile(kw["path_regex"])
    if "methods" in kw:
        kw["methods"] = frozenset(kw["methods"])
    return Route(**kw)
