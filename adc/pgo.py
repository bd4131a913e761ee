"""The workload the build trains the compiled traffic path on (profile-guided optimisation).

    python -m adc.pgo

setup.py compiles the traffic path (`adc.compiled.MODULES`) once with GCC's
instrumentation, runs this module against that build, and compiles again with the
profile it recorded: the compiler then lays the code that runs per connection out
together and moves error paths aside (README, "Set up", has what it saved). CPython's
own `--enable-optimizations` build works the same way.

The workload is what the appliance does most, with every piece real and on loopback:
an `http`, an `https` (TLS termination with a generated certificate) and a `tcp`
virtual server in front of small real servers; WebSocket upgrades with a tunnelled
message, keep-alive requests (with and without bodies, chunked answers among them)
over plain HTTP and TLS, and Layer-4 echo connections with a half-close. Counts and
time are bounded; it exits non-zero if the traffic path is not compiled (nothing
would be learned) or anything goes wrong, and the build then compiles without a profile.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import ssl
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

WSS_CONNECTIONS = 600
WSS_WORKERS = 12
HTTP_CLIENTS = 4
HTTP_REQUESTS = 600  # per client, plain and TLS each
TCP_CONNECTIONS = 150
TIME_LIMIT = 120.0  # seconds, for everything

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _RealServer(asyncio.Protocol):
    """HTTP/1.1 keep-alive answers (chunked for /chunked), a WebSocket 101 then echo."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.echo = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.echo:
            self.transport.write(data)
            return
        self.buffer += data
        while not self.echo:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].split(b"\r\n")
            fields = {}
            for line in head[1:]:
                name, _, value = line.partition(b":")
                fields[name.strip().lower()] = value.strip()
            size = int(fields.get(b"content-length", b"0"))
            if len(self.buffer) < end + 4 + size:
                return
            self.buffer = self.buffer[end + 4 + size:]
            key = fields.get(b"sec-websocket-key")
            if key is not None:
                accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
                self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                self.echo = True
                if self.buffer:
                    self.transport.write(self.buffer)
            elif head[0].split(b" ")[1] == b"/chunked":
                self.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            else:
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")

    def eof_received(self) -> bool:
        return False


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    low = head.lower()
    if b"transfer-encoding: chunked" in low:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return head + body
            body += chunk[:-2]
    start = low.find(b"content-length:")
    if start < 0:
        raise RuntimeError(f"unexpected answer {head[:40]!r}")
    size = int(low[start + 15:low.find(b"\r\n", start)])
    return head + await reader.readexactly(size)


async def _http_client(port: int, tls: ssl.SSLContext | None, done: Counter[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls,
                                                   server_hostname="localhost" if tls else None)
    for i in range(HTTP_REQUESTS):
        if i % 10 == 1:
            writer.write(b"POST /form HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: 11\r\n\r\nhello world")
        elif i % 10 == 2:
            writer.write(b"GET /chunked HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n")
        else:
            writer.write(b"GET /page/%d?q=1 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: adc-pgo\r\n"
                         b"Accept: */*\r\nCookie: a=1\r\n\r\n" % i)
        answer = await _read_response(reader)
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer {answer[:40]!r}")
        done["https requests" if tls else "http requests"] += 1
    writer.close()


async def _wss_client(port: int, tls: ssl.SSLContext, count: int, done: Counter[str]) -> None:
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost")
        key = base64.b64encode(os.urandom(16))
        writer.write(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {head[:40]!r}")
        frame = b"\x81\x85\x00\x00\x00\x00hello"  # a masked text message (a zero mask)
        writer.write(frame)
        if await reader.readexactly(len(frame)) != frame:
            raise RuntimeError("the tunnel changed a message")
        writer.close()
        done["wss connections"] += 1


async def _tcp_client(port: int, count: int, done: Counter[str]) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(count):
        with socket.socket() as sock:  # a plain socket: its half-close is a shutdown()
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, b"x" * 1024)
            sock.shutdown(socket.SHUT_WR)
            received = 0
            while chunk := await loop.sock_recv(sock, 65536):
                received += len(chunk)
        if received != 1024:
            raise RuntimeError("the relay lost bytes")
        done["tcp connections"] += 1


async def _serve(factory: type[asyncio.Protocol]) -> tuple[asyncio.Server, int]:
    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _train(work: Path, done: Counter[str]) -> None:
    from adc.appliance import Appliance
    from adc.config.load import load
    from adc.demo import EchoServer
    from adc.tls.certs import CA_CERT, SERVER_CERT, SERVER_KEY, init

    init(work)
    web, web_port = await _serve(_RealServer)
    web2, web2_port = await _serve(_RealServer)
    echo, echo_port = await _serve(EchoServer)
    http_port, https_port, tcp_port = _free_port(), _free_port(), _free_port()
    config = work / "appliance.toml"
    config.write_text(textwrap.dedent(f"""\
        [appliance]
        name = "pgo"
        admin = "off"
        access_log = "off"

        [virtual_server.http]
        listen = "127.0.0.1:{http_port}"
        profile = "http"
        pool = "web"

        [virtual_server.https]
        listen = "127.0.0.1:{https_port}"
        profile = "https"
        pool = "web"

        [virtual_server.tcp]
        listen = "127.0.0.1:{tcp_port}"
        profile = "tcp"
        pool = "echo"

        [profile.http]
        type = "http"

        [profile.https]
        type = "https"
        client_ssl = {{ certificates = [ {{ cert = "{work / SERVER_CERT}", key = "{work / SERVER_KEY}" }} ] }}

        [profile.tcp]
        type = "tcp"

        [pool.web]
        servers = [ {{ name = "a", address = "127.0.0.1:{web_port}" }}, {{ name = "b", address = "127.0.0.1:{web2_port}" }} ]

        [pool.echo]
        servers = [ {{ name = "e", address = "127.0.0.1:{echo_port}" }} ]
        """))
    appliance = Appliance(load(config))
    await appliance.start()
    tls = ssl.create_default_context(cafile=str(work / CA_CERT))
    try:
        await asyncio.gather(
            *(_wss_client(https_port, tls, WSS_CONNECTIONS // WSS_WORKERS, done) for _ in range(WSS_WORKERS)),
            *(_http_client(http_port, None, done) for _ in range(HTTP_CLIENTS)),
            *(_http_client(https_port, tls, done) for _ in range(HTTP_CLIENTS)),
            *(_tcp_client(tcp_port, TCP_CONNECTIONS // 3, done) for _ in range(3)),
        )
    finally:
        await appliance.stop(grace=0)
        for server in (web, web2, echo):
            server.close()


def main() -> int:
    from adc import compiled

    if not compiled.in_use():
        print(f"adc.pgo: nothing to train: the traffic path runs {compiled.status()}", file=sys.stderr)
        return 1
    import uvloop

    done: Counter[str] = Counter()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="adc-pgo-") as work:
        uvloop.run(asyncio.wait_for(_train(Path(work), done), TIME_LIMIT))
    print(f"adc.pgo: {', '.join(f'{n} {what}' for what, n in sorted(done.items()))} "
          f"in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
