"""Listening sockets of virtual servers."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from pathlib import Path
from typing import Any, Callable

from adc.config.model import Address, Config, VirtualServer
from adc.tls.termination import terminating

log = logging.getLogger("adc.listener")


class ListenError(Exception):
    pass


def file_name(source: Path) -> str:
    """A configuration file as error lines name it: relative to the working directory when inside it."""
    try:
        return str(source.relative_to(Path.cwd()))
    except ValueError:
        return str(source)


def access_log_error(config: Config, exc: OSError) -> str:
    """`FILE: appliance.access_log: cannot open PATH: why`, for a start or a reload."""
    return (f"{file_name(config.source)}: appliance.access_log: cannot open {config.appliance.access_log}: "
            f"{exc.strerror or exc}")


def listen_where(source: Path, vs: VirtualServer, address: Address) -> str:
    """`FILE: virtual_server.NAME.listen[i]`: where the operator set an address that cannot be listened on."""
    key = f"virtual_server.{vs.name}.listen"
    if len(vs.listen) > 1 and address in vs.listen:
        key += f"[{vs.listen.index(address)}]"
    return f"{file_name(source)}: {key}"


async def listen(
    where: str,
    address: Address,
    factory: Callable[[], asyncio.BaseProtocol],
    *,
    backlog: int = 1024,
    ssl_context: ssl.SSLContext | None = None,
    ssl_handshake_timeout: float | None = None,
) -> asyncio.Server:
    """Open one listening socket; errors start with `where` (see `listen_where`) and name the address.

    With `ssl_context`, TLS is terminated in front of `factory`'s protocols (see `protocol_factory`).
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address.host else socket.AF_UNSPEC
    try:
        return await loop.create_server(
            protocol_factory(factory, ssl_context, ssl_handshake_timeout),
            address.host,
            address.port,
            family=family,
            backlog=backlog,
            reuse_address=True,
        )
    except OSError as exc:
        raise ListenError(f"{where}: cannot listen on {address}: {listen_error_text(exc)}") from None


def protocol_factory(
    factory: Callable[[], Any], ssl_context: ssl.SSLContext | None, handshake_timeout: float | None
) -> Callable[[], Any]:
    """What a listener calls per accepted connection: `factory` itself, or, for TLS, a
    `TLSLayer` in front of its protocol (adc.tls.termination: not the event loop's TLS)."""
    if ssl_context is None:
        return factory
    return terminating(factory, ssl_context, asyncio.get_running_loop(), handshake_timeout)


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
