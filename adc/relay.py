"""The byte relay: Layer-4 sessions and WebSocket tunnels after a 101.

Two transports, one `_Side` protocol on each. Bytes read on one side are written to
the other unchanged (no copy beyond the event loop's read buffer). Backpressure is
paired: when a side's write buffer passes its high-water mark the event loop calls
its `pause_writing()`, which pauses reading on the *other* transport; `resume_writing()`
resumes it. Memory per session is therefore bounded by about two write buffers plus
two read chunks, whatever the peers do.

Half-close is propagated (a FIN once the buffer is flushed; a TLS transport cannot
half-close, so it is closed once its buffer is flushed), after which that side's fin timeout
applies. Idleness is checked lazily: the data path only stamps `last_activity`, and
sessions share the event loop's timers (one per deadline slot, see `adc.runtime.deadlines`),
so an idle tunnel costs no timer object of its own.
"""

from __future__ import annotations

import _socket
import asyncio
import fcntl
import logging
import socket
import struct
import termios
import time
from typing import Callable, cast

from adc.runtime.deadlines import Timed
from adc.runtime.stats import Session

log = logging.getLogger("adc.relay")

WRITE_HIGH_WATER_BYTES = 256 * 1024
FIN_DRAIN_POLL_SECONDS = 0.01  # how often a pending half-close checks the write buffer
CLOSE_LINGER_SECONDS = 30.0  # how long a closing transport may flush to a peer that takes nothing (no idle timeout set)
_UNSEEN = 1 << 62  # what a side had unsent, not looked at yet

# Linux: the bytes in a socket's send queue not yet acknowledged by the peer (= SIOCOUTQ)
_OUTQ = getattr(termios, "TIOCOUTQ", 0)
_INT = struct.Struct("i")

# SO_LINGER on, 0 seconds: close() resets the connection (RST) instead of ending it (FIN)
_LINGER_RESET = struct.pack("ii", 1, 0)


def reset(transport: asyncio.Transport) -> None:
    """End a connection with a reset: what it carried is known to be incomplete."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass  # closed meanwhile: an abort is all there is left to do
    transport.abort()


def unsent(transport: asyncio.Transport) -> int:
    """What a transport still has to deliver, 0 once its write buffer is empty: the buffer,
    plus its socket's send queue (bytes not acknowledged by the peer yet).

    A progress measure for a slow reader: its write buffer alone shrinks only when the
    kernel's send buffer, sized in megabytes, has a good part of itself free again, which
    for a slow reader can take longer than a timeout while the reader takes bytes all along.
    """
    size = transport.get_write_buffer_size()
    if size and _OUTQ:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                size += _INT.unpack(fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
            except (OSError, ValueError):
                pass  # no such socket (any more): the buffer says it alone
    return size


def close_watched(loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, period: float) -> None:
    """Close `transport` once its buffer has drained, which `_linger` watches: a peer that
    reads, however slowly, gets all of it; one that reads nothing for `period` a reset."""
    size = unsent(transport)
    transport.close()
    if transport.get_write_buffer_size():
        loop.call_later(period, _linger, loop, transport, period, size)


def _linger(loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, period: float, last: int) -> None:
    """A closed transport still flushing its buffer: look again after `period` while what it has
    unsent shrinks (its peer reads, if slowly), reset it once a whole period passes without (a
    peer that reads nothing must not keep the connection and its buffer for ever, uncounted).

    A buffer found empty has drained and the transport closed: nothing more, its descriptor
    may belong to another connection already.
    """
    size = unsent(transport)
    if not size:
        return
    if size < last:
        loop.call_later(period, _linger, loop, transport, period, size)
    else:
        reset(transport)


class Dialled:
    """A protocol whose connection the appliance dialled itself: `sock` is that socket
    (plain TCP only; `adc.engine.connect.dial` sets it), so a half-close needs no socket view
    of the descriptor (see shutdown_write)."""

    __slots__ = ("sock",)

    def __init__(self) -> None:
        self.sock: socket.socket | None = None


def shutdown_write(transport: asyncio.BaseTransport, sock: socket.socket | None = None) -> bool:
    """Send a FIN on a TCP transport; False if it cannot (TLS, bytes still buffered).

    `sock`: the transport's own socket object, when the caller has it (see Dialled).
    """
    if sock is not None:
        if transport.get_write_buffer_size():  # type: ignore[attr-defined]
            return False
        try:
            sock.shutdown(socket.SHUT_WR)  # a socket the transport has closed is detached: EBADF
            return True
        except OSError:
            return False
    if transport.get_extra_info("sslcontext") is not None:
        return False  # asked first: the socket is made for the asking (a system call)
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    if transport.get_write_buffer_size():  # type: ignore[attr-defined]
        return False
    try:
        # A bare socket object on the transport's descriptor, detached again (never closed)
        # afterwards. CPython checks the descriptor with one getsockname(); with family,
        # type and protocol given it reads nothing more. They are only labels here
        # (shutdown() works whatever they say). `_socket.socket`: the C type, without the
        # Python layer.
        view = _socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, sock.fileno())
    except (OSError, ValueError):  # ValueError: no descriptor any more (-1)
        return False
    try:
        view.shutdown(socket.SHUT_WR)
        return True
    except OSError:
        return False
    finally:
        view.detach()


class _Side(Dialled):
    """One side of a tunnel: the protocol of its transport.

    Like the Layer-7 protocols, a plain class with the protocol methods (all uvloop
    calls), not an `asyncio.Protocol` subclass: compiled, it is a native class.
    """

    __deletable__ = ("relay",)  # dropped once lost, see connection_lost
    __slots__ = (
        "relay", "transport", "out", "is_client", "eof", "lost", "paused_peer", "fin_sent", "fin_timer", "buffered",
    )

    def __init__(self, relay: "Relay", is_client: bool):
        super().__init__()
        self.relay = relay
        self.is_client = is_client
        self.transport: asyncio.Transport | None = None
        self.out: asyncio.Transport | None = None  # the other side's transport
        self.eof = False  # this side sent EOF to us
        self.lost = False
        self.paused_peer = False
        self.fin_sent = False  # we half-closed this transport
        self.fin_timer: asyncio.TimerHandle | None = None  # waiting for its buffer to drain
        self.buffered = _UNSEEN  # what it had unsent (see `unsent`) when the idle deadline last looked

    # The transport may come through connection_made (a fresh connection) or through
    # Relay.attach (a transport handed over by the Layer-7 engine via set_protocol).
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.relay._attach(self, transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        out = self.out
        if out is None:  # cannot happen after start(); keep bytes safe anyway
            self.relay._early(self, data)
            return
        out.write(data)
        s = self.relay.session
        if self.is_client:
            s.bytes_in += len(data)
        else:
            s.bytes_out += len(data)
        s.last_activity = time.monotonic()

    def eof_received(self) -> bool:
        self.eof = True
        if self.out is None:  # before start(): replayed in order by start()
            self.relay._early(self, None)
        else:
            self.relay._half_closed(self)
        # stay open for the other direction (adc's TLS layer too: a close_notify is a half-close)
        return True

    def pause_writing(self) -> None:
        # our outgoing buffer is full: stop reading from the side that fills it
        peer = self.relay._peer(self)
        if peer is not None and peer.transport is not None and not peer.lost:
            self.paused_peer = True
            try:
                peer.transport.pause_reading()
            except (RuntimeError, AttributeError):
                pass

    def resume_writing(self) -> None:
        peer = self.relay._peer(self)
        if self.paused_peer and peer is not None and peer.transport is not None and not peer.lost:
            self.paused_peer = False
            if not peer.eof:
                try:
                    peer.transport.resume_reading()
                except (RuntimeError, AttributeError):
                    pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        relay = self.relay
        relay._lost(self, exc)
        # nothing calls a lost side again: drop the references back (transport, relay) so
        # that a closed tunnel is freed at once, without waiting for the cycle collector
        self.transport = self.out = None
        if relay.closed:  # else Relay.close() drops it
            del self.relay


class Relay(Timed):
    """Relays bytes between a client transport and a real-server transport."""

    __slots__ = (
        "session", "client", "server", "idle_timeout", "client_fin_timeout", "server_fin_timeout",
        "high_water", "loop", "closed", "reason", "on_close", "started", "_early_buf",
    )

    def __init__(
        self,
        session: Session,
        *,
        idle_timeout: float,
        client_fin_timeout: float,
        server_fin_timeout: float,
        high_water: int = WRITE_HIGH_WATER_BYTES,
        on_close: Callable[["Relay", str], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ):
        super().__init__()
        self.session = session
        self.client = _Side(self, True)
        self.server = _Side(self, False)
        self.idle_timeout = idle_timeout
        self.client_fin_timeout = client_fin_timeout
        self.server_fin_timeout = server_fin_timeout
        self.high_water = high_water
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.closed = False
        self.reason = ""
        self.on_close = on_close
        self.started = False
        self._early_buf: list[tuple[_Side, bytes | None]] = []
        session.closer = self.close

    # ------------------------------------------------------------------ wiring

    def attach(self, client: asyncio.Transport, server: asyncio.Transport, limits_set: bool = False,
               server_sock: socket.socket | None = None, client_paused: bool = False,
               server_paused: bool = False) -> None:
        """Take over two live transports (the Layer-7 engine's hand-over after a 101).

        `limits_set`: both already have this relay's write-buffer limits (high water, a
        quarter of it low). `server_sock`: the server transport's socket, if dialled in plain
        TCP (see Dialled). `client_paused`, `server_paused`: that transport's writing is paused
        (its buffer went over the high-water mark and has not drained yet). The event loop
        tells a transport's protocol only when that changes, so the relay must know: the other
        side's reading then stays paused until the resume_writing that comes with the drain.
        """
        self.server.sock = server_sock
        self.client.paused_peer = client_paused
        self.server.paused_peer = server_paused
        # a _Side has every protocol method without being a BaseProtocol (see _Side)
        client.set_protocol(cast(asyncio.BaseProtocol, self.client))
        server.set_protocol(cast(asyncio.BaseProtocol, self.server))
        self._attach(self.client, client, not limits_set)
        self._attach(self.server, server, not limits_set)

    def _attach(self, side: _Side, transport: asyncio.Transport, set_limits: bool = True) -> None:
        side.transport = transport
        if set_limits:
            transport.set_write_buffer_limits(high=self.high_water, low=self.high_water // 4)
        if not self.started:
            transport.pause_reading()  # nothing flows until start()

    def _peer(self, side: _Side) -> _Side | None:
        return self.server if side is self.client else self.client

    def start(self, client_leftover: bytes = b"", server_leftover: bytes = b"") -> None:
        """Both transports attached: send what each side already sent, then relay."""
        c, s = self.client, self.server
        assert c.transport is not None and s.transport is not None
        c.out, s.out = s.transport, c.transport
        self.started = True
        if client_leftover:
            s.transport.write(client_leftover)
            self.session.bytes_in += len(client_leftover)
        if server_leftover:
            c.transport.write(server_leftover)
            self.session.bytes_out += len(server_leftover)
        early, self._early_buf = self._early_buf, []
        for side, data in early:
            if data is None:
                self._half_closed(side)
            else:
                side.data_received(data)
        if self.closed:
            return
        self.session.last_activity = time.monotonic()
        for side in (c, s):
            if side.lost:
                self._lost(side, None)
                return
        # resume reading unless the opposite side's writing is paused (its resume_writing will)
        if not c.eof and not s.paused_peer:
            c.transport.resume_reading()
        if not s.eof and not c.paused_peer:
            s.transport.resume_reading()
        self._arm(self._timeout())

    def _early(self, side: _Side, data: bytes | None) -> None:
        # the event loop may deliver bytes (or EOF) before start(); keep them, bounded
        self._early_buf.append((side, data))
        if data is not None and side.transport is not None:
            if sum(len(d) for _, d in self._early_buf if d) >= self.high_water:
                side.transport.pause_reading()

    # ------------------------------------------------------------------ timers

    def _timeout(self) -> float:
        c, s = self.client, self.server
        if c.eof and s.eof:
            return 0.001
        if c.eof:
            return self.client_fin_timeout or self.idle_timeout
        if s.eof:
            return self.server_fin_timeout or self.idle_timeout
        return self.idle_timeout

    def _arm(self, delay: float) -> None:
        if delay > 0 and not self.closed:
            self.file_deadline(self.loop, self.loop.time() + delay, delay)
        else:
            self.drop_deadline()

    def on_deadline(self) -> None:
        if self.closed:
            return
        timeout = self._timeout()
        idle = time.monotonic() - self.session.last_activity
        if idle >= timeout - 0.001 and self._draining():
            # nothing came in, but a peer is taking what is buffered for it, slowly: that is
            # activity too (HAProxy's timeout client, NGINX's send_timeout count the same way)
            self.session.last_activity = time.monotonic()
            idle = 0.0
        if idle >= timeout - 0.001:
            half = self.client.eof or self.server.eof
            self.session.vs_counters.timeouts += 1
            self.session.vs_counters.error("timeout")
            # abort: a peer that reads nothing must not hold the session through close()
            self.close("fin timeout" if half else "idle timeout", abort=True)
        else:
            self._arm(timeout - idle)

    def _draining(self) -> bool:
        """A write buffer holds bytes and what is unsent (see `unsent`) has shrunk since the
        idle deadline last looked.

        Looked at only when the deadline comes, not per read: a peer that takes nothing
        for a whole timeout (after the first look, which gives it the benefit) ends the
        session; one that takes something keeps it.
        """
        draining = False
        for side in (self.client, self.server):
            t = side.transport
            size = 0 if t is None or side.lost else unsent(t)
            if size and size < side.buffered:
                draining = True
            side.buffered = size
        return draining

    # ------------------------------------------------------------------ half-close and close

    def _half_closed(self, side: _Side) -> bool:
        if side.is_client:
            self.session.client_fin = True
        else:
            self.session.server_fin = True
        if self.client.eof and self.server.eof:
            self.close("closed by both sides")
            return True
        peer = self._peer(side)
        if peer is not None:
            self._send_fin(peer)
        self._arm(self._timeout())
        return True  # keep our transport open for the other direction

    def _send_fin(self, side: _Side) -> None:
        """Half-close `side`'s transport once what is buffered for it has gone out.

        The FIN is sent with shutdown(SHUT_WR) on the socket's descriptor (see shutdown_write)
        rather than with `transport.write_eof()`: uvloop (0.21-0.23) frees memory twice
        when a stream whose write_eof() is still pending is closed, and a relay closes
        its transports as soon as both directions have ended.

        TLS (https clients, real servers with a server SSL profile): adc's TLS layer
        half-closes with a close_notify alert and goes on reading, as TLS 1.3 allows.
        A transport that cannot half-close at all is left open, so the other direction's
        bytes still arrive, until its peer closes too or the fin timeout ends the session.
        """
        side.fin_timer = None
        t = side.transport
        if t is None or side.lost or side.fin_sent or self.closed:
            return
        if not t.can_write_eof():
            side.fin_sent = True
            return
        if t.get_write_buffer_size():
            side.fin_timer = self.loop.call_later(FIN_DRAIN_POLL_SECONDS, self._send_fin, side)
            return
        side.fin_sent = True
        if shutdown_write(t, side.sock):
            return
        if t.get_extra_info("sslcontext") is not None:
            t.write_eof()  # adc's TLS layer: close_notify
        else:
            t.close()

    def _lost(self, side: _Side, exc: Exception | None) -> None:
        if self.closed:
            return
        who = "client" if side.is_client else "server"
        if exc is not None:
            self.close(f"{who} error: {exc.__class__.__name__}")
            return
        peer = self._peer(side)
        if not self.started:
            self.close(f"{who} closed")
            return
        if peer is not None and (peer.lost or peer.eof):
            self.close("closed")
            return
        # one side fully closed: the other side gets what is buffered, then a FIN
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            side.eof = True
            if side.is_client:
                self.session.client_fin = True
            else:
                self.session.server_fin = True
            self._send_fin(peer)
            self._arm(self._timeout())
            return
        self.close(f"{who} closed")

    def close(self, reason: str = "closed", abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        self.session.closer = None  # it refers to us: no cycle left behind
        self.drop_deadline()
        for side in (self.client, self.server):
            if side.fin_timer is not None:
                side.fin_timer.cancel()
                side.fin_timer = None
        for side in (self.client, self.server):
            t = side.transport
            if side.lost:
                if t is None:  # its connection_lost has returned; see there
                    del side.relay
            elif t is not None:
                if abort:
                    if t.get_write_buffer_size():
                        reset(t)  # bytes for it are dropped: a FIN would pass what it got for all of it
                    else:
                        t.abort()
                else:
                    close_watched(self.loop, t, self.idle_timeout or CLOSE_LINGER_SECONDS)
        on_close, self.on_close = self.on_close, None  # the owner refers to us: no cycle left behind
        if on_close is not None:
            on_close(self, reason)
