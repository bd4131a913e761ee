"""Small real HTTP/1.1 servers for the Layer-7 engine tests (asyncio Protocols on loopback)."""

from __future__ import annotations

import asyncio

import httptools


class HttpBackend:
    """A keep-alive HTTP/1.1 server answering `handler(method, path, headers, body) -> bytes`.

    Counts accepted connections and requests; `responses` may override per path.
    """

    def __init__(self, name: str = "b") -> None:
        self.name = name
        self.connections = 0
        self.requests = 0
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.raw: dict[str, bytes] = {}  # path -> raw response bytes
        self.one_request_per_connection = False  # close (unanswered) on a second request
        self.dropped = 0

    async def start(self) -> "HttpBackend":
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _HttpConn(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    def respond(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if path in self.raw:
            return self.raw[path]
        text = f"{self.name} {method} {path} {len(body)}".encode()
        if method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)


class _HttpConn(asyncio.Protocol):
    def __init__(self, owner: HttpBackend) -> None:
        self.owner = owner
        self.parser = httptools.HttpRequestParser(self)
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.url = b""
        self.served = 0

    def connection_made(self, transport):
        self.transport = transport
        self.owner.connections += 1

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self):
        self.headers, self.body, self.url = {}, bytearray(), b""

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body):
        self.body += body

    def on_message_complete(self):
        o = self.owner
        if o.one_request_per_connection and self.served:
            o.dropped += 1
            self.transport.close()
            return
        self.served += 1
        o.requests += 1
        method = self.parser.get_method().decode()
        path = self.url.decode()
        o.seen.append((method, path, dict(self.headers)))
        self.transport.write(o.respond(method, path, self.headers, bytes(self.body)))
