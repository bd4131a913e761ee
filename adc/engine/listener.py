"""Listening sockets of virtual servers."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from typing import Callable

from adc.config.model import Address

log = logging.getLogger("adc.listener")


class ListenError(Exception):
    pass


async def listen(
    vs_name: str,
    address: Address,
    factory: Callable[[], asyncio.BaseProtocol],
    *,
    backlog: int = 1024,
    ssl_context: ssl.SSLContext | None = None,
    ssl_handshake_timeout: float | None = None,
) -> asyncio.Server:
    """Open one listening socket; errors name the virtual server and the address."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address.host else socket.AF_UNSPEC
    kwargs: dict = {}
    if ssl_context is not None:
        kwargs["ssl"] = ssl_context
        if ssl_handshake_timeout:
            kwargs["ssl_handshake_timeout"] = ssl_handshake_timeout
    try:
        return await loop.create_server(
            factory,
            address.host,
            address.port,
            family=family,
            backlog=backlog,
            reuse_address=True,
            **kwargs,
        )
    except OSError as exc:
        raise ListenError(f"virtual_server.{vs_name}: cannot listen on {address}: {listen_error_text(exc)}") from None


def listen_error_text(exc: OSError) -> str:
    """What went wrong opening a listening socket, in an operator's words."""
    if exc.errno == errno.EADDRINUSE:
        return "address already in use"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "address not available on this machine"
    return exc.strerror or str(exc)


def bound_addresses(server: asyncio.Server) -> list[str]:
    out = []
    for sock in server.sockets:
        host, port = sock.getsockname()[:2]
        out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return out
