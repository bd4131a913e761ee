"""Dialling real servers: pick, connect with `timeout_connect`, retry elsewhere.

Shared by the Layer-4 engine and the Layer-7 engine. A failed attempt is counted
on the real server (and reported to the pool, where passive health checking may
act on it) and another server is tried, up to `Profile.connect_retries` times.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import ipaddress
import logging
import os
import socket
import ssl
import time
from typing import Any, Callable, TypeVar

from mypy_extensions import mypyc_attr

from adc.config.model import Profile
from adc.pools.balancers import PickContext
from adc.pools.pool import CheckResult, PoolRuntime, RealServerRuntime
from adc.relay import Dialled
from adc.runtime.loglimit import limited
from adc.tls.contexts import TLS_REASONS
from adc.tls.termination import dialling

log = logging.getLogger("adc.connect")

# Failures of the appliance's own resources, not of the real server dialled (EADDRNOTAVAIL:
# the local ports are all taken)
LOCAL_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL})

# A TLS handshake with a real server when `timeout_connect` is 0 (the event loop's default)
TLS_HANDSHAKE_SECONDS = 60.0

P = TypeVar("P")  # a protocol: every method uvloop calls, not always a BaseProtocol subclass


class NoServerAvailable(Exception):
    """No real server of the pool could be reached; `reason` says why."""

    def __init__(self, reason: str, tls_failure: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.tls_failure = tls_failure


def describe_error(exc: BaseException) -> str:
    """A connect or TLS failure in an operator's words (log lines, health check results)."""
    if isinstance(exc, UnicodeError):  # the TLS layer's IDNA encoding of the server name
        return f"TLS: unusable server name ({exc})"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "connect timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLEOFError):
        return "TLS: connection closed during the handshake"
    if isinstance(exc, ssl.SSLError):
        # `reason` is set on OpenSSL's own errors only; the usual ones have words (alerts...)
        reason = getattr(exc, "reason", None)
        return f"TLS: {(TLS_REASONS.get(reason) or reason) if reason else exc}".rstrip()
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "connection reset"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or exc.__class__.__name__
    return str(exc) or exc.__class__.__name__


def peer_text(transport: asyncio.BaseTransport) -> tuple[str, str]:
    """(ip, "ip:port") of the transport's peer."""
    peer = transport.get_extra_info("peername")
    if not peer:
        return "", "-"
    host, port = peer[0], peer[1]
    return host, (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


class _Deadline:
    """`timeout_connect` for one attempt: what `asyncio.timeout` does, without its interpreted code.

    The clock starts when the attempt first has to wait (`arm`: for the address, the TCP
    handshake or the TLS handshake), so an attempt that never waits, the usual case on a
    near network, costs no timer. When it expires it cancels the dialling task;
    `timed_out()` then takes that cancellation back (unless the task was cancelled from
    elsewhere too) so the attempt counts as a timeout.
    """

    __slots__ = ("loop", "delay", "task", "handle", "expired", "over", "tls")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.loop = loop
        self.delay = delay
        self.task: asyncio.Task | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.expired = False
        self.over = False  # disarmed: the attempt is past the point the deadline covers
        self.tls = False  # the TCP connection is up, the TLS handshake under way

    def arm_tls(self) -> None:
        self.tls = True
        self.arm()

    def arm(self) -> None:
        if self.handle is None and not self.over:
            self.task = asyncio.current_task(self.loop)
            if self.task is not None:
                self.handle = self.loop.call_later(self.delay, self._expire)

    def _expire(self) -> None:
        self.handle = None
        if self.task is not None:
            self.expired = True
            self.task.cancel()

    def disarm(self) -> None:
        self.over = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def timed_out(self) -> bool:
        """After a CancelledError: True if it came from this deadline alone."""
        return self.expired and self.task is not None and self.task.uncancel() == 0


# host -> address family of an IP literal, 0 for a name (resolved by the event loop)
_FAMILIES: dict[str, int] = {}
_MAX_FAMILIES = 4096


def _literal_family(host: str) -> int:
    family = _FAMILIES.get(host)
    if family is None:
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        except ValueError:
            family = 0
        if len(_FAMILIES) < _MAX_FAMILIES:
            _FAMILIES[host] = family
    return family


# Made non-blocking at creation where the system can (one system call fewer per connection).
_NONBLOCK: int = getattr(socket, "SOCK_NONBLOCK", 0)


# `socket.socket`, not the C type under it: uvloop detaches a `socket.socket` when the
# transport closes, but closes any other socket object again after libuv has closed its
# descriptor; by then another thread (a name lookup, say) may hold that number. Its family
# and type are class attributes here: the event loop reads both when it makes the
# transport, and the stdlib's properties build an enum member in interpreted code on each read.
# `__init__` is what socket.socket's does for a new socket (its own is interpreted code).
@mypyc_attr(native_class=False)  # compiled classes cannot extend socket.socket
class _Socket4(socket.socket):
    __slots__ = ()
    family = socket.AF_INET
    type = socket.SOCK_STREAM

    def __init__(self, family: int, type: int) -> None:
        _socket.socket.__init__(self, family, type, 0)
        self._io_refs = 0
        self._closed = False

    def setblocking(self, flag: bool) -> None:
        """As socket.socket's, without the system call when there is nothing to change: the
        event loop makes the socket it is given non-blocking, which one made so at creation
        already is (a timeout of 0.0 is the socket module's record of that)."""
        if flag or self.gettimeout() != 0.0:
            _socket.socket.setblocking(self, flag)


@mypyc_attr(native_class=False)
class _Socket6(_Socket4):
    __slots__ = ()
    family = socket.AF_INET6


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def _writable(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


async def dial(
    loop: asyncio.AbstractEventLoop, protocol_factory: Callable[[], P], host: str, port: int,
    first_data: bytes = b"", connected: Callable[[], None] | None = None,
    waiting: Callable[[], None] | None = None, tls: Any = None, tls_timeout: float = 0.0,
    tls_waiting: Callable[[], None] | None = None,
) -> tuple[asyncio.Transport, P]:
    """`loop.create_connection` to `host`:`port`, sooner when the handshake is over at once.

    On a near network (the same host, a short link) the TCP handshake is often complete
    when connect() returns: the transport is then made at once, without registering for
    writability and waiting an event-loop turn for the report (a plain connection through
    the Layer-7 engine costs about a tenth less CPU). Otherwise it waits for writability
    as the event loop would. A name is resolved by the event loop.

    `first_data` are the connection's first bytes (a request head). Without TLS they
    leave the moment the TCP handshake is over, before the transport exists: the real
    server finds them with the new connection and answers without another wake-up.
    With TLS they are written once the handshake is over. Either way nothing else is
    written before them. `tls` is `ServerTLS.for_dial()`'s answer: the connection then
    carries adc's TLS layer (adc.tls.termination), whose handshake is awaited, bounded
    by `tls_timeout` (0: unbounded), and the transport returned is that layer.

    `connected` is called once the TCP connection is up, as they leave (the caller stops
    its connect deadline there: a request that has left must not be counted a failed
    connect and sent to another server). When the connect has not reported yet, sending
    them is how the connection is found up, and the call follows with nothing awaited
    in between. `waiting` is called before the first
    wait for the network (the caller starts its connect deadline there), `tls_waiting`
    (if given, else `waiting`) before the TLS handshake.
    """
    waiter: asyncio.Future | None = None
    factory: Callable[[], Any] = protocol_factory
    made: list[Any] | None = None  # with TLS: the layer, once the event loop has made it
    if tls is not None:
        context, name, session, resume = tls
        waiter = loop.create_future()
        made = []
        factory = _recorded(dialling(protocol_factory, context, loop, waiter, name, session, resume, tls_timeout), made)
    family = _literal_family(host)
    if not family:
        if waiting is not None:
            waiting()
        try:
            transport, protocol = await loop.create_connection(factory, host, port)
        except BaseException:
            _forget(waiter, made)
            raise
        if waiter is not None:
            if tls_waiting is not None:
                tls_waiting()  # (its deadline runs already: only the phase changes)
            transport, protocol = await _tls_handshake(waiter, protocol)
        if first_data:
            transport.write(first_data)
        return transport, protocol  # type: ignore[return-value]
    sock = (_Socket4 if family == socket.AF_INET else _Socket6)(family, socket.SOCK_STREAM | _NONBLOCK)
    try:
        if not _NONBLOCK:
            sock.setblocking(False)
        err = sock.connect_ex((host, port))
        sent = -1  # first_data not tried yet
        if err == errno.EINPROGRESS:
            if waiter is None and first_data:
                # the send says whether the handshake is over, in the call that would follow anyway
                try:
                    sent = sock.send(first_data)
                except BlockingIOError:
                    pass  # still connecting
                except OSError as exc:
                    err = exc.errno or errno.EIO
                else:
                    err = 0
            elif _connected(sock):
                err = 0
            if err == errno.EINPROGRESS:
                if waiting is not None:
                    waiting()
                # Not from inside an except clause: a coroutine suspended there would
                # leave that exception as the context of what others raise meanwhile.
                fut = loop.create_future()
                fd = sock.fileno()
                loop.add_writer(fd, _writable, fut)
                try:
                    await fut
                finally:
                    loop.remove_writer(fd)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        if waiter is not None:
            if tls_waiting is not None:
                tls_waiting()
            elif waiting is not None:
                waiting()  # the TLS handshake
        elif first_data:
            if connected is not None:
                connected()  # (with nothing awaited since the send, when it came first)
            if sent < 0:
                try:
                    sent = sock.send(first_data)
                except BlockingIOError:
                    sent = 0  # the transport writes it all
        sent = max(sent, 0)
        transport, protocol = await loop.create_connection(factory, sock=sock)
    except BaseException:
        sock.close()
        _forget(waiter, made)
        raise
    if waiter is not None:  # the transport owns the socket now
        transport, protocol = await _tls_handshake(waiter, protocol)
    elif isinstance(protocol, Dialled):
        protocol.sock = sock
    if sent < len(first_data):
        transport.write(first_data[sent:] if sent else first_data)
    return transport, protocol  # type: ignore[return-value]


def _recorded(factory: Callable[[], Any], made: list[Any]) -> Callable[[], Any]:
    def make() -> Any:
        layer = factory()
        made.append(layer)
        return layer

    return make


def _forget(waiter: asyncio.Future | None, made: list[Any] | None) -> None:
    """The connection failed or was cancelled (the client left) while the event loop made it:
    a TLS layer already made would still run its handshake deadline, and report to a waiter
    nobody awaits any more ("exception was never retrieved")."""
    if waiter is not None:
        waiter.cancel()
    if made:
        for layer in made:
            layer.abort()


async def _tls_handshake(waiter: asyncio.Future, layer: Any) -> tuple[Any, Any]:
    """Wait for the TLS layer's handshake: (the layer, as the transport; the protocol over it).

    On failure or cancellation the connection is aborted and the exception raised.
    """
    try:
        await waiter
    except BaseException:
        waiter.cancel()  # a later outcome (the connection's loss) has nobody to hear it
        layer.abort()
        raise
    return layer, layer.protocol


async def connect_server(
    pool: PoolRuntime,
    ctx: PickContext,
    profile: Profile,
    protocol_factory: Callable[[], P],
    *,
    host: str | None = None,
    exclude: frozenset[str] = frozenset(),
    first: RealServerRuntime | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    first_data: bytes = b"",
) -> tuple[RealServerRuntime, asyncio.Transport, P]:
    """Connect to a real server of `pool`; the server's connection count is taken.

    The caller owns the returned server slot and must `pool.drop(rs)` when done.
    `first` forces the first attempt (persistence); `host` is the request's Host
    (for server SSL `sni = "@host"`); `first_data` is written first on the connection
    that succeeds (see `dial`). Raises `NoServerAvailable`.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    # (with "@host" and no usable Host the name is the real server's address: its fault then)
    sni_from_request = pool.ssl is not None and pool.ssl.name_from_request(host)
    tried: set[str] = set(exclude)
    reasons: list[str] = []
    tls_failure = False
    for attempt in range(1 + profile.connect_retries):
        rs = first if (attempt == 0 and first is not None and first.usable) else pool.pick(ctx, tried)
        if rs is None:
            break
        tried.add(rs.name)
        pool.take(rs)
        started = time.monotonic()
        deadline = _Deadline(loop, profile.timeout_connect) if profile.timeout_connect > 0 else None
        exc: BaseException | None = None
        try:
            try:
                # adc.tls.contexts.ServerTLS; the handshake is bounded by the connect deadline
                # (or, without one, by the event loop's usual TLS handshake timeout)
                tls = None if pool.ssl is None else pool.ssl.for_dial(rs.address, host, rs.address.host)
                transport, protocol = await dial(
                    loop, protocol_factory, rs.address.host, rs.address.port, first_data,
                    None if deadline is None else deadline.disarm, None if deadline is None else deadline.arm,
                    tls, profile.timeout_connect if profile.timeout_connect > 0 else TLS_HANDSHAKE_SECONDS,
                    None if deadline is None or tls is None else deadline.arm_tls,
                )
            finally:
                if deadline is not None:
                    deadline.disarm()
        except asyncio.CancelledError:
            if deadline is None or not deadline.timed_out():
                pool.drop(rs)  # cancelled by the caller: never leak the slot
                raise
            exc = asyncio.TimeoutError()
        except (OSError, asyncio.TimeoutError, ssl.SSLError, ValueError) as e:
            exc = e
        except BaseException:
            pool.drop(rs)  # an error nobody expected: never leak the slot
            raise
        if exc is not None:
            # ValueError: a name the TLS layer refuses (IDNA), not the real server's fault
            pool.drop(rs)
            if isinstance(exc, OSError) and exc.errno in LOCAL_ERRORS:
                # The appliance ran out of something (descriptors, memory, local ports): no
                # evidence against this real server, nor any reason to expect better of another.
                reason = describe_error(exc)
                limited(pool.limits, "local", log).log(
                    "pool %s: cannot connect to server %s (%s): %s (a local resource, not the server)",
                    pool.name, rs.name, rs.address, reason)
                raise NoServerAvailable(f"pool {pool.name}: {reason} (local)") from None
            if deadline is not None and deadline.tls and isinstance(exc, asyncio.TimeoutError):
                reason = "TLS handshake timeout"  # the TCP connection was up
            else:
                reason = describe_error(exc)
            is_tls = isinstance(exc, (ssl.SSLError, ValueError))
            tls_failure = tls_failure or is_tls
            if is_tls and sni_from_request:
                # The name checked came from the client's Host: not the real server's
                # fault, so no passive health verdict and no retry elsewhere (a client
                # must not be able to mark servers down with a made-up Host).
                limited(pool.limits, "connect", log).log(
                    "pool %s server %s (%s): %s (SNI from the request's Host)", pool.name, rs.name, rs.address, reason)
                raise NoServerAvailable(f"pool {pool.name}: {rs.name}: {reason}", True) from None
            rs.counters.connect_failures += 1
            rs.counters.error("tls" if is_tls else "connect")
            pool.counters.connect_failures += 1
            if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
                rs.counters.timeouts += 1
            limited(pool.limits, "connect", log).log("pool %s server %s (%s): %s", pool.name, rs.name, rs.address, reason)
            reasons.append(f"{rs.name}: {reason}")
            pool.connect_failed(rs, CheckResult(False, f"live traffic: {reason}", time.monotonic() - started))
            continue
        if tls is not None:
            resumed = transport.session_reused()  # type: ignore[attr-defined]
            for counters in (rs.counters, pool.counters):
                counters.tls_handshakes += 1
                if resumed:
                    counters.tls_resumed += 1
        return rs, transport, protocol  # type: ignore[return-value]
    if not reasons:
        raise NoServerAvailable(f"pool {pool.name}: no server available")
    raise NoServerAvailable(f"pool {pool.name}: " + "; ".join(reasons), tls_failure)
