"""Helpers for health-check tests: real servers on loopback (plain, HTTP, TLS), server SSL for pools."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adc.config.model import Address, HealthCheck, Pool, RealServer, ServerSSL
from adc.pools.pool import PoolRuntime
from adc.runtime.stats import Stats
from adc.tls.contexts import build_server_ssl


@dataclass(frozen=True)
class PKI:
    ca: Path
    server: tuple[Path, Path]  # localhost, 127.0.0.1
    rogue_server: tuple[Path, Path]  # signed by a CA nobody trusts
    client: tuple[Path, Path]  # a client certificate (mTLS) from the dev CA
    rogue_client: tuple[Path, Path]  # a client certificate from the CA nobody trusts


def server_tls(ca: Path, sni: str | None = "localhost", verify: bool = True,
               client: tuple[Path, Path] | None = None) -> Any:
    """What the engine sets as `pool.ssl` for a pool with server SSL (presenting `client`, if given)."""
    cert, key = client if client is not None else (None, None)
    return build_server_ssl(ServerSSL(name="test", ca=ca, sni=sni, verify=verify, cert=cert, key=key))


def server_context(pair: tuple[Path, Path], client_ca: Path | None = None, tickets: int = 2) -> ssl.SSLContext:
    """A real server's TLS; with `client_ca`, it requires a client certificate from that CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pair[0]), str(pair[1]))
    ctx.num_tickets = tickets
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(client_ca))
    return ctx


class HttpStatusServer(asyncio.Protocol):
    """Answers every request head with a fixed status (or `raw` bytes) and closes; records heads."""

    def __init__(self, owner: "Spot"):
        self.owner = owner
        self.buf = b""

    def connection_made(self, transport):
        self.transport = transport
        self.owner.accepted += 1

    def data_received(self, data):
        self.buf += data
        if b"\r\n\r\n" in self.buf:
            self.owner.requests.append(self.buf.split(b"\r\n\r\n", 1)[0])
            if self.owner.raw is not None:
                self.transport.write(self.owner.raw)
            elif self.owner.silent:
                return
            elif self.owner.reset:  # SO_LINGER 0: the close is a reset
                sock = self.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.transport.write(
                    f"HTTP/1.1 {self.owner.status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode()
                )
            self.transport.close()


class Spot:
    """A real server on 127.0.0.1 that tests start, stop and restart on the same port."""

    def __init__(self) -> None:
        self.accepted = 0
        self.requests: list[bytes] = []
        self.status = 200
        self.raw: bytes | None = None
        self.silent = False
        self.reset = False  # answer a request with a reset
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self, ssl_ctx: ssl.SSLContext | None = None, port: int | None = None) -> "Spot":
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: HttpStatusServer(self), "127.0.0.1", self.port if port is None else port, ssl=ssl_ctx
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    @property
    def address(self) -> Address:
        return Address("127.0.0.1", self.port)


def pool_for(addresses: list[Address], check: HealthCheck | None, name: str = "p", **kw: Any) -> PoolRuntime:
    servers = tuple(RealServer(name=f"s{i}", address=a) for i, a in enumerate(addresses))
    return PoolRuntime(Pool(name=name, servers=servers, health=check, **kw), Stats())


class OpenSSLServer:
    """A TLS real server on a blocking socket in a thread, as servers built straight on OpenSSL
    behave: a refused handshake ends with OpenSSL's alert, an accepted one (TLS 1.3) with the
    session tickets at once. It then waits for the client to leave (each read bounded)."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> Address:
        return Address("127.0.0.1", self.port)

    def _serve(self) -> None:
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(5)
            try:
                with self.ctx.wrap_socket(sock, server_side=True) as tls:
                    while tls.recv(1024):
                        pass
            except (ssl.SSLError, OSError):
                pass  # refused (OpenSSL has sent its alert), or the client left
            finally:
                sock.close()

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.listener.close()
