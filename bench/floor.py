#!/usr/bin/env python3
"""The floor under adc's new-connection cost: adc's TLS layer and a byte relay, nothing else.

    python bench/floor.py [--http] LISTEN_PORT REAL_SERVER_PORT CERT KEY

It terminates TLS on 127.0.0.1:LISTEN_PORT exactly as an adc `https` virtual server does
(the same `adc.tls` context with the shipped defaults, the same TLS layer, uvloop), dials
127.0.0.1:REAL_SERVER_PORT once the client's first bytes arrive, and relays bytes both ways
until either side closes: no HTTP parsing, routing, pools, timers or statistics.
`bench/run.py tls` loads it beside adc and HAProxy, so each run shows what the Python
runtime and the TLS layer cost on their own (floor/HAProxy) and what adc's Layer-7 engine
adds on top (adc/floor). It is a measuring device, not a proxy to deploy: one real server,
no timeouts, nothing but flow control between the two sides.

With `--http` it is the HTTP floor: the least any HTTP/1.1 proxy does for a WebSocket
upgrade, in plain (interpreted) Python. The first request head is parsed (httptools, as
adc does) and forwarded rebuilt with X-Forwarded-For (the client's address) and
X-Forwarded-Proto; the first response head is parsed and forwarded rebuilt; then bytes
are relayed. No routing, no checks, no pools, timers or statistics, and only the first
request of a connection is parsed: it measures the parsing and rebuilding every Layer-7
proxy pays, not a proxy.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httptools
import uvloop

from adc.config.model import CertificatePair, ClientSSL
from adc.tls.contexts import build_client_ssl
from adc.tls.termination import terminating

HIGH_WATER = 256 * 1024  # a side whose write buffer holds this much stops the other side's reading
MAX_HEAD_BYTES = 32 * 1024  # the HTTP floor: a longer head, or a malformed one, closes the connection


class _Side:
    """One of the two connections; `peer` is the other one once both exist."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=HIGH_WATER)

    def eof_received(self) -> bool:
        self._close_peer()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._close_peer()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def _close_peer(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class RealServer(_Side):
    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.write(data)


class HttpHead:
    """The HTTP floor's head handling, for either side: the first head, once all of it has
    arrived, is parsed by httptools and rebuilt; what follows it is relayed as it is."""

    transport: asyncio.Transport | None  # (the side's)

    def __init__(self, parser: Any) -> None:
        self.parser: Any = parser  # an httptools request or response parser; None once the head is out
        self.buffer = b""
        self.head: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head.append(b"%s: %s\r\n" % (name, value))

    def rebuilt(self, data: bytes) -> bytes | None:
        """The bytes to relay for `data`: None while the head is incomplete."""
        if self.parser is None:
            return data
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                self._refuse()
            return None
        head, rest = self.buffer[:end + 4], self.buffer[end + 4:]
        try:
            self.parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            self._refuse()
            return None
        self.parser, self.buffer = None, b""
        return b"".join(self.head) + b"\r\n" + rest

    def _refuse(self) -> None:
        """No answer, as fits a measuring device: the connection just closes."""
        self.buffer = b""
        if self.transport is not None:
            self.transport.close()


class HttpRealServer(RealServer, HttpHead):
    """The HTTP floor's real-server side."""

    def __init__(self) -> None:
        RealServer.__init__(self)
        HttpHead.__init__(self, httptools.HttpResponseParser(self))

    def on_status(self, reason: bytes) -> None:
        assert self.parser is not None
        self.head.append(b"HTTP/1.1 %d %s\r\n" % (self.parser.get_status_code(), reason))

    def data_received(self, data: bytes) -> None:
        relayed = self.rebuilt(data)
        if relayed is not None:
            super().data_received(relayed)


class Client(_Side):
    server_side: type[RealServer] = RealServer

    def __init__(self, server_port: int) -> None:
        super().__init__()
        self.server_port = server_port
        self.early: list[bytes] = []  # what the client sent before the real server's connection exists

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            assert self.peer.transport is not None
            self.peer.transport.write(data)
            return
        self.early.append(data)
        if len(self.early) == 1:
            assert self.transport is not None
            self.transport.pause_reading()  # one read waits for the dial, no more
            asyncio.get_running_loop().create_task(self._dial())

    async def _dial(self) -> None:
        try:
            transport, server = await asyncio.get_running_loop().create_connection(
                self.server_side, "127.0.0.1", self.server_port
            )
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        if self.transport is None or self.transport.is_closing():
            transport.close()
            return
        server.peer, self.peer = self, server
        transport.write(b"".join(self.early))
        self.early = []
        self.transport.resume_reading()


class HttpClient(Client, HttpHead):
    """The HTTP floor's client side: the first request head parsed and rebuilt before the dial."""

    server_side = HttpRealServer

    def __init__(self, server_port: int) -> None:
        Client.__init__(self, server_port)
        HttpHead.__init__(self, httptools.HttpRequestParser(self))
        self.forwarded = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.forwarded = b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: https\r\n" % (
            transport.get_extra_info("peername")[0].encode("ascii"))

    def on_url(self, url: bytes) -> None:
        assert self.parser is not None
        self.head.append(b"%s %s HTTP/1.1\r\n" % (self.parser.get_method(), url))

    def on_headers_complete(self) -> None:
        self.head.append(self.forwarded)

    def data_received(self, data: bytes) -> None:
        relayed = self.rebuilt(data)
        if relayed is not None:
            super().data_received(relayed)


async def serve(listen_port: int, server_port: int, cert: Path, key: Path, http: bool = False) -> None:
    loop = asyncio.get_running_loop()
    context = build_client_ssl(ClientSSL(certificates=(CertificatePair(cert, key),)))
    side = HttpClient if http else Client
    await loop.create_server(terminating(lambda: side(server_port), context, loop, 10.0), "127.0.0.1", listen_port,
                             backlog=1024)
    await asyncio.Event().wait()  # until the benchmark stops the process


def main(argv: list[str]) -> int:
    http = argv[:1] == ["--http"]
    if http:
        argv = argv[1:]
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    uvloop.run(serve(int(argv[0]), int(argv[1]), Path(argv[2]), Path(argv[3]), http))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
