"""Active health probes of real servers: tcp, http, tls, websocket.

Each probe opens its own connection (through the pool's server SSL profile when the
pool has one), does the least that proves the service works, closes, and returns a
`CheckResult` with a short reason and the latency. The whole probe, connect
included, runs under the check's `timeout`. A probe never raises (except when
cancelled); every failure is a result.

- tcp: the connect succeeds.
- tls: the connect and the TLS handshake (certificate verification as the server
  SSL profile says) succeed. Under TLS 1.3 the real server judges the client
  certificate only after the client's side of the handshake is over: the probe waits
  for its verdict, a session ticket (accepted) or an alert (refused), at most
  `TLS13_VERDICT_SECONDS`; a server that sends neither passes then.
- http: a real HTTP/1.1 request (`method`, `host`, `path`); the status line's code
  must be one of `expect`.
- websocket: a full upgrade handshake (websockets' sans-IO client); only a 101 with
  the right `Sec-WebSocket-Accept` passes, then the probe closes cleanly (close
  frame, wait briefly for the server's).
"""

from __future__ import annotations

import asyncio
import logging
import time

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from adc.config.model import HealthCheck
from adc.engine.connect import LOCAL_ERRORS, describe_error, dial
from adc.pools.pool import CheckResult, PoolRuntime, RealServerRuntime

log = logging.getLogger("adc.health")

MAX_STATUS_LINE_BYTES = 8 * 1024  # http check: the status line must fit in this
MAX_RESPONSE_BYTES = 64 * 1024  # websocket check: head (and close frame) must fit in this
USER_AGENT = "adc-health-check"
# tls check under TLS 1.3: how long to wait for the server's verdict on the handshake (a ticket
# or an alert come one round trip after it; a server that sends no tickets says nothing)
TLS13_VERDICT_SECONDS = 0.5


class _Conversation(asyncio.Protocol):
    """Collects what the real server sends (bounded) and wakes the probe waiting for it."""

    def __init__(self, limit: int):
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.error: str | None = None  # how the connection ended, when it failed
        self.overflow = False
        self.ticket = False  # over TLS: a session ticket has come (the server accepted the handshake)
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        room = self.limit - len(self.buffer)
        if len(data) > room:
            self.overflow = True
            data = data[:room]
            if self.transport is not None:
                self.transport.pause_reading()
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None:
            self.error = describe_error(exc)
        self._wake()

    def tls_session_kept(self) -> None:
        self.ticket = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def more(self) -> bool:
        """Wait for more bytes; False when no more will come (closed or over the limit)."""
        if self.closed or self.overflow:
            return False
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter
        return True

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def _host_header(check: HealthCheck, rs: RealServerRuntime) -> str:
    return check.host or str(rs.address)


async def _open(
    check: HealthCheck, pool: PoolRuntime, rs: RealServerRuntime, tls: bool, limit: int
) -> tuple[asyncio.Transport, _Conversation]:
    loop = asyncio.get_running_loop()
    # as the engine dials (adc.engine.connect), on adc's TLS layer: the check's `host` plays the
    # request's Host, and TLS sessions are shared with the traffic to the same real server
    dial_tls = pool.ssl.for_dial(rs.address, check.host, rs.address.host) if tls and pool.ssl is not None else None
    transport, protocol = await dial(
        loop, lambda: _Conversation(limit), rs.address.host, rs.address.port, tls=dial_tls, tls_timeout=check.timeout
    )
    return transport, protocol


async def _tls(transport: asyncio.Transport, conv: _Conversation, deadline: float) -> tuple[bool, str]:
    """The handshake is over on the probe's side; under TLS 1.3, wait for the server's verdict."""
    version, _ = transport.protocol_and_cipher()  # type: ignore[attr-defined]
    if version != "TLSv1.3":
        return True, "tls handshake"
    loop = asyncio.get_running_loop()
    # short of the check's own timeout, which would fail the probe
    wait = min(TLS13_VERDICT_SECONDS, 0.9 * (deadline - loop.time()))
    try:
        async with asyncio.timeout(wait):
            while not (conv.ticket or conv.buffer):  # (a server that speaks first has accepted too)
                if not await conv.more():
                    break
    except TimeoutError:
        return True, "tls handshake"
    if conv.ticket or conv.buffer:
        return True, "tls handshake"
    return False, f"{conv.error or 'TLS: connection closed'} after the handshake"


async def _http(check: HealthCheck, transport: asyncio.Transport, conv: _Conversation, rs: RealServerRuntime) -> tuple[bool, str]:
    transport.write(
        (
            f"{check.method} {check.path} HTTP/1.1\r\nHost: {_host_header(check, rs)}\r\n"
            f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
    )
    while b"\r\n" not in conv.buffer:
        if not await conv.more():
            break
    head = bytes(conv.buffer)
    end = head.find(b"\r\n")
    if end < 0:
        if conv.overflow:
            return False, "HTTP: status line too long"
        if head:
            return False, "HTTP: incomplete status line"
        return False, f"HTTP: {conv.error or 'connection closed'} before a status line"
    parts = head[:end].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        return False, f"HTTP: malformed status line {head[:min(end, 80)]!r}"
    status = int(parts[1])
    if status in check.expect:
        return True, f"HTTP {status}"
    expected = ",".join(str(s) for s in check.expect)
    return False, f"HTTP {status} (expected {expected})"


async def _websocket(
    check: HealthCheck, transport: asyncio.Transport, conv: _Conversation, rs: RealServerRuntime, secure: bool
) -> tuple[bool, str]:
    uri = parse_uri(f"{'wss' if secure else 'ws'}://{_host_header(check, rs)}{check.path}")
    client = ClientProtocol(uri, max_size=MAX_RESPONSE_BYTES)
    request = client.connect()
    request.headers["User-Agent"] = USER_AGENT
    client.send_request(request)
    for chunk in client.data_to_send():
        transport.write(chunk)
    response: Response | None = None
    while response is None:
        alive = await conv.more() if not conv.buffer else True
        data = conv.take()
        if data:
            client.receive_data(data)
        elif not alive:
            client.receive_eof()
        for event in client.events_received():
            if isinstance(event, Response):
                response = event
        if response is None and not alive and not data:
            break
    exc = client.handshake_exc
    if response is None:
        if conv.error is not None or exc is None:  # the way it ended says more than "no valid response"
            return False, f"websocket: {conv.error or 'connection closed'} before a response"
        return False, f"websocket: {exc}"
    if exc is not None:
        if isinstance(exc, InvalidStatus):
            return False, f"websocket: HTTP {response.status_code} instead of 101"
        return False, f"websocket: {exc}"
    # upgraded: close cleanly, and give the server a moment to answer the close frame
    client.send_close(1000, "health check")
    for chunk in client.data_to_send():
        if chunk:
            transport.write(chunk)
    closed = False
    while not closed:
        data = conv.take()
        if data:
            client.receive_data(data)
            for event in client.events_received():
                if getattr(event, "opcode", None) is Opcode.CLOSE:
                    closed = True
        if not closed and not await conv.more():
            break
    return True, "websocket 101"


async def run_check(check: HealthCheck, pool: PoolRuntime, rs: RealServerRuntime) -> CheckResult:
    """Probe one real server once, as `check` says; the result says why it passed or failed."""
    started = time.monotonic()
    transport: asyncio.Transport | None = None
    secure = pool.ssl is not None
    try:
        async with asyncio.timeout(check.timeout) as scope:
            if check.type == "tcp":
                transport, _ = await _open(check, pool, rs, False, 1)
                ok, reason = True, "tcp connect"
            elif check.type == "tls":
                if pool.ssl is None:
                    return CheckResult(False, "tls check: the pool has no server_ssl", 0.0)
                transport, conv = await _open(check, pool, rs, True, 1)
                ok, reason = await _tls(transport, conv, scope.when() or 0.0)
            elif check.type == "http":
                transport, conv = await _open(check, pool, rs, secure, MAX_STATUS_LINE_BYTES)
                ok, reason = await _http(check, transport, conv, rs)
            elif check.type == "websocket":
                transport, conv = await _open(check, pool, rs, secure, MAX_RESPONSE_BYTES)
                ok, reason = await _websocket(check, transport, conv, rs, secure)
            else:
                return CheckResult(False, f"unknown check type {check.type!r}", 0.0)
    except TimeoutError:
        return CheckResult(False, f"timeout after {check.timeout:g}s", time.monotonic() - started)
    except OSError as exc:
        if exc.errno in LOCAL_ERRORS:
            return CheckResult(False, f"{describe_error(exc)} (a local resource, not the server)",
                               time.monotonic() - started, local=True)
        return CheckResult(False, describe_error(exc), time.monotonic() - started)
    except ValueError as exc:
        return CheckResult(False, describe_error(exc), time.monotonic() - started)
    except Exception as exc:  # a probe must never take the monitor down
        log.exception("pool %s server %s: health check error", pool.name, rs.name)
        return CheckResult(False, f"check error: {exc.__class__.__name__}: {exc}", time.monotonic() - started)
    finally:
        if transport is not None and not transport.is_closing():
            transport.close()
    latency = time.monotonic() - started
    return CheckResult(ok, reason, latency)
