"""Demo real servers for `adc run --demo`.

For every real server of the configuration that lives on a loopback address, start a
small server there, chosen by how its pool is used:

- pools behind `tcp` virtual servers only: a TCP echo server;
- every other pool: an HTTP server that answers "hello from NAME" (and 200 on
  `/healthz`) and echoes WebSocket messages on any path (the `websockets` library);
- pools with a server SSL profile: the same over TLS, with the development
  certificate from `certs/`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from typing import Any

from adc.config.model import Config, Pool, ProfileType, RealServer
from adc.relay import shutdown_write

log = logging.getLogger("adc.demo")
logging.getLogger("websockets").setLevel(logging.WARNING)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def send_websocket_data(connection: object) -> None:
    """`websockets` Connection.send_data, half-closing with `shutdown_write`, not write_eof().

    The `websockets` library half-closes with `transport.write_eof()` after a close
    handshake; on uvloop a transport dropped while that shutdown is pending frees memory
    twice and aborts the process. Servers and clients built on `websockets` inside the
    appliance's process (the demo real servers) use this instead.
    """
    transport = connection.transport  # type: ignore[attr-defined]
    for data in connection.protocol.data_to_send():  # type: ignore[attr-defined]
        if data:
            transport.write(data)
        elif not shutdown_write(transport):
            transport.close()  # TLS (or bytes still queued): close once flushed, as websockets does


class EchoServer(asyncio.Protocol):
    """A TCP echo server that passes the client's half-close back (never `write_eof()`: see
    `adc.relay.shutdown_write`). The demo's Layer-4 real servers; the build's training too (adc.pgo)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        if not shutdown_write(self.transport):  # echo the half-close (see adc.relay)
            self.transport.close()
        return True


class DemoServers:
    def __init__(self, config: Config):
        self.config = config
        self.servers: list[Any] = []

    def _kind(self, pool: Pool) -> str:
        users = [
            self.config.profiles[vs.profile].type
            for vs in self.config.virtual_servers.values()
            if vs.pool == pool.name or any(r.pool == pool.name for r in vs.routes)
        ]
        if users and all(t is ProfileType.TCP for t in users):
            return "echo"
        return "http"

    def _tls_context(self) -> ssl.SSLContext:
        certs = self.config.base_dir / "certs"
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(certs / "adc.pem", certs / "adc.key")
        return ctx

    async def start(self) -> None:
        for pool in self.config.pools.values():
            kind = self._kind(pool)
            for rs in pool.servers:
                if not _is_loopback(rs.address.host):
                    continue
                tls = self._tls_context() if pool.server_ssl else None
                try:
                    await self._start_one(kind, rs, tls)
                except OSError as exc:
                    log.warning("demo server %s on %s not started: %s", rs.name, rs.address, exc.strerror or exc)
                    continue
                log.info(
                    "demo real server %s (%s%s) on %s", rs.name, kind, "+tls" if tls else "", rs.address
                )

    async def _start_one(self, kind: str, rs: RealServer, tls: ssl.SSLContext | None) -> None:
        loop = asyncio.get_running_loop()
        if kind == "echo":
            server = await loop.create_server(EchoServer, rs.address.host, rs.address.port, ssl=tls, reuse_address=True)
            self.servers.append(server)
            return
        from websockets.asyncio.server import ServerConnection, serve

        class DemoConnection(ServerConnection):
            send_data = send_websocket_data

        name = rs.name

        def process_request(connection: Any, request: Any) -> Any:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                return None  # go on with the WebSocket handshake
            if request.path == "/healthz":
                return connection.respond(200, "ok\n")
            return connection.respond(200, f"hello from {name}: {request.path}\n")

        async def echo(ws: Any) -> None:
            async for message in ws:
                await ws.send(message)

        server = await serve(
            echo,
            rs.address.host,
            rs.address.port,
            ssl=tls,
            process_request=process_request,
            max_size=16 << 20,
            server_header=f"adc-demo/{name}",
            reuse_address=True,
            create_connection=DemoConnection,
        )
        self.servers.append(server)

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        self.servers.clear()
