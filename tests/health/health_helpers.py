"""Helpers for health-check tests: real servers on loopback (plain, HTTP, TLS), server SSL for pools."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
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


def server_tls(ca: Path, sni: str | None = "localhost", verify: bool = True) -> Any:
    """What the engine sets as `pool.ssl` for a pool with server SSL."""
    return build_server_ssl(ServerSSL(name="test", ca=ca, sni=sni, verify=verify))


def server_context(pair: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pair[0]), str(pair[1]))
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
