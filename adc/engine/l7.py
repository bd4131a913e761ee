"""The `http` and `https` profiles: asyncio glue around `adc.http.exchange.Exchange`.

`ClientProtocol` (one per client connection) feeds bytes to the exchange and
executes the actions it returns; `ServerProtocol` (one per real-server connection)
feeds the server's bytes back. The HTTP decisions all live in the sans-IO core;
this module moves bytes, runs timers and applies flow control:

- Paired backpressure: both transports have write-buffer limits (`Profile.buffer_bytes`);
  when one side's buffer is full, reading from the other side pauses.
- Timers: one lazily re-armed handle per client connection chooses between
  `timeout_http_request` (head incomplete, 408), `timeout_client` (keep-alive idle)
  and `timeout_server` (waiting for the real server, 504).
- Idle keep-alive connections to real servers are kept per real server (at most
  `Profile.max_idle_server_connections`, closed after `Profile.timeout_server_idle`).
- Output: the bytes one batch of actions produces go out in one write per side; for a
  small input they wait for the end of the event-loop iteration (`Outbox`), so the
  answers of many connections leave together.
- After a 101 that passes every check, both transports go to a `Relay` (the tunnel).

The protocols are plain classes with the methods uvloop calls, not `asyncio.Protocol`
subclasses: this module is compiled with mypyc (see `adc.compiled`), and only then are
they native classes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adc.config.model import ProfileType
from adc.engine.connect import NoServerAvailable, connect_server, describe_error, peer_text
from adc.http.exchange import (
    AccessFacts,
    Action,
    CloseClient,
    Count,
    Exchange,
    OpenServer,
    PauseClient,
    Phase,
    ReleaseServer,
    RequestDone,
    Respond,
    ResumeClient,
    SendToClient,
    SendToServer,
    StartTunnel,
)
from adc.http.events import Headers
from adc.http.headers import get_one
from adc.pools.balancers import PickContext
from adc.relay import CLOSE_LINGER_SECONDS, Dialled, Relay, close_watched, reset
from adc.runtime.deadlines import Timed
from adc.runtime.loglimit import limited
from adc.runtime.stats import Session, count_request
from adc.tls.clientcert import certificate_subject, client_cert_fields

if TYPE_CHECKING:
    from adc.engine.engine import Engine, VirtualServerRuntime
    from adc.pools.pool import PoolRuntime, RealServerRuntime

log = logging.getLogger("adc.l7")

_WAITING_SERVER = frozenset(
    {Phase.FORWARD_REQUEST, Phase.READ_RESPONSE_HEAD, Phase.UPGRADE_PENDING, Phase.FORWARD_RESPONSE}
)


# -- idle keep-alive connections to real servers ---------------------------------------------
class IdleConnections:
    """Idle keep-alive connections of one engine, per real server, newest last.

    The key is the real server, or (real server, name) where server SSL sends the request's
    Host (`sni = "@host"`): such a connection's TLS session was made and verified for one
    name, and serves only requests for that name (see `_idle_key`).

    Expiry is lazy: each connection carries the time it may stay idle until, and one
    periodic sweep closes the expired ones, so a request costs no timer of its own.
    """

    __slots__ = ("by_server", "sweeper", "interval")

    def __init__(self) -> None:
        self.by_server: dict[Any, collections.deque[ServerProtocol]] = {}
        self.sweeper: asyncio.TimerHandle | None = None
        self.interval = 1.0

    def take(self, key: Any) -> "ServerProtocol | None":
        conns = self.by_server.get(key)
        while conns:
            conn = conns.pop()  # the most recently used one is the most likely alive
            conn.idle = None
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def put(self, conn: "ServerProtocol", limit: int, timeout: float) -> bool:
        conns = self.by_server.get(conn.key)
        if conns is None:
            conns = self.by_server[conn.key] = collections.deque()
        if len(conns) >= limit:
            return False
        conn.idle = self
        conns.append(conn)
        if timeout <= 0:
            conn.idle_until = float("inf")
            return True
        conn.idle_until = time.monotonic() + timeout
        if self.sweeper is None or timeout < self.interval * 4:
            loop = asyncio.get_running_loop() if self.sweeper is None else None
            interval = min(1.0, max(IDLE_SWEEP_MIN_SECONDS, timeout / 4))
            if loop is not None or interval < self.interval:
                self.interval = min(self.interval, interval)
                if self.sweeper is not None:
                    self.sweeper.cancel()
                self.sweeper = (loop or asyncio.get_running_loop()).call_later(self.interval, self._sweep)
        return True

    def _sweep(self) -> None:
        self.sweeper = None
        now = time.monotonic()
        waiting = False
        for key, conns in list(self.by_server.items()):
            for conn in [c for c in conns if c.idle_until <= now]:
                conns.remove(conn)
                conn.idle = None
                if conn.transport is not None:
                    conn.transport.close()
            if conns:
                waiting = waiting or any(c.idle_until != float("inf") for c in conns)
            else:
                del self.by_server[key]
        if waiting:
            self.sweeper = asyncio.get_running_loop().call_later(self.interval, self._sweep)
        else:
            self.interval = 1.0

    def remove(self, conn: "ServerProtocol") -> None:
        conns = self.by_server.get(conn.key)
        if conns is not None:
            try:
                conns.remove(conn)
            except ValueError:
                pass
            if not conns:
                del self.by_server[conn.key]

    def count(self, rs: "RealServerRuntime | None" = None) -> int:
        return sum(len(c) if rs is None else sum(1 for conn in c if conn.rs is rs) for c in self.by_server.values())

    def close_all(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        for conns in list(self.by_server.values()):
            for conn in list(conns):
                conn.idle = None
                if conn.transport is not None:
                    conn.transport.close()
        self.by_server.clear()


IDLE_SWEEP_MIN_SECONDS = 0.05
# Lingering close (a client still sending when its connection is to close): what it sends is
# read and dropped until it has sent it all, or is quiet for LINGERING_TIMEOUT, and at most
# for LINGERING_TIME (NGINX's lingering_timeout and lingering_time); timeout_client, if shorter,
# bounds both
LINGERING_TIMEOUT_SECONDS = 5.0
LINGERING_TIME_SECONDS = 30.0
_NO_ACTIONS: "collections.deque[Action]" = collections.deque(maxlen=0)  # a tunnel runs no actions
# A tunnel writes nothing through the Layer-7 code (its exchange is gone, so no action can
# produce output): its output lists are this shared empty one, two objects fewer per tunnel.
_NO_WRITES: list[bytes] = []


# -- output written at the end of the event-loop iteration ----------------------------------------
DEFER_WRITES_BELOW = 16 * 1024  # the output of an input this small waits for the end of the iteration


class Outbox:
    """Client connections whose output waits for the end of this event-loop iteration.

    A small answer written at once wakes its reader at once, and on a busy appliance
    that reader (a client or a real server) has gone back to sleep by the next answer:
    every write paid for a wake-up on another CPU. Written together once the iteration's
    input is handled, the answers find their readers awake, which saves about a quarter
    of the system time per request. Only the output of small inputs waits
    (`DEFER_WRITES_BELOW`), so a connection holds at most one read's worth of it.
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: list[ClientProtocol] = []

    def add(self, conn: "ClientProtocol") -> None:
        if not self.pending:
            conn.loop.call_soon(self.flush)
        self.pending.append(conn)

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for conn in pending:
            conn.deferred = False
            try:
                conn._flush_writes()
            except Exception:  # one connection's failure must not hold back the others' output
                log.exception("virtual_server %s: %s: writing failed", conn.vs.name, conn.client)


def outbox(engine: "Engine") -> Outbox:
    box: Outbox | None = engine.outbox
    if box is None:
        box = engine.outbox = Outbox()
    return box


def _persistence_cookie(pool: "PoolRuntime", rs: Any, ctx: PickContext) -> bytes | None:
    """Set-Cookie value binding the client to `rs`, unless the request already names it.

    Only for a pool with cookie persistence (callers check `pool.cookies`).
    """
    assert pool.cookies is not None
    name = pool.cookies.cookie_name
    value = pool.cookie_for(rs, ctx.cookie(name) if ctx.cookie is not None else None)
    return None if value is None else value.encode("latin-1")


def _idle_key(pool: "PoolRuntime", rs: Any, host: str | None) -> Any:
    """Which idle connections to `rs` may serve a request for `host` (see `IdleConnections`)."""
    tls = pool.ssl
    if tls is None or tls.cfg.sni != "@host":
        return rs
    return rs, tls.server_hostname(host, rs.address.host)


def idle_connections(engine: "Engine") -> IdleConnections:
    idle: IdleConnections | None = engine.idle
    if idle is None:
        idle = engine.idle = IdleConnections()
    return idle


def close_idle(engine: "Engine") -> None:
    """Close every idle real-server connection of `engine` (call when stopping)."""
    idle: IdleConnections | None = engine.idle
    engine.idle = None
    if idle is not None:
        idle.close_all()


JOIN_WRITES_BELOW_BYTES = 32 * 1024  # smaller pieces are joined: one plain write beats a gather write


def _write(transport: asyncio.Transport, parts: list[bytes]) -> int:
    """Write `parts` in one call; return the byte count."""
    if len(parts) == 1:
        data = parts[0]
    else:
        n = sum(map(len, parts))
        if n >= JOIN_WRITES_BELOW_BYTES:
            transport.writelines(parts)
            return n
        data = b"".join(parts)
    transport.write(data)
    return len(data)


def _request_lookups(headers: Headers) -> tuple[Callable[[str], str | None], Callable[[str], str | None]]:
    """Header and cookie lookups on a request's fields, for balancers that read them."""

    def header(name: str) -> str | None:
        value = get_one(headers, name.lower().encode("latin-1"))
        return None if value is None else value.decode("latin-1")

    def cookie(name: str) -> str | None:
        for raw in (v for n, v in headers if n.lower() == b"cookie"):
            for part in raw.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name:
                    return v
        return None

    return header, cookie


# -- the real-server side ----------------------------------------------------------------------
# what a real server may send before its connection's handover without its reading paused
HOLD_BYTES = 64 * 1024


class ServerProtocol(Dialled):
    """One connection to a real server; owned by a client connection or idle.

    A new connection carries its first request head from the start (see `dial`), so the
    answer may arrive before the connection is handed to its client: until then what the
    server sends is held and passed on at the handover (`hand_over`), its end included.
    The handover comes in the event-loop iteration after the connection is made, so
    the answer usually arrives whole with nothing after it, and reading goes on (pausing
    and resuming it would cost two changes of the event loop's interest in the socket).
    Past `HOLD_BYTES`, reading pauses: at most that and one read's worth are held.
    """

    __slots__ = (
        "rs", "pool", "owner", "transport", "idle", "idle_until", "ended", "read_paused", "requests", "high_water",
        "held", "key", "error", "writing_paused",
    )

    def __init__(self, pool: "PoolRuntime") -> None:
        super().__init__()  # `sock`: the socket dialled, for the tunnel's half-close (plain TCP)
        self.pool = pool
        self.rs: RealServerRuntime | None = None
        self.owner: ClientProtocol | None = None
        self.transport: asyncio.Transport | None = None
        self.idle: IdleConnections | None = None  # set while parked as an idle keep-alive connection
        self.idle_until = 0.0
        self.ended = False
        self.read_paused = False
        self.requests = 0
        self.high_water = 0  # the write-buffer limit set on the transport (0: not yet)
        self.held: bytes | None = None  # arrived before the handover to the first client
        self.key: Any = None  # what it is filed under while idle (see IdleConnections)
        self.error: str | None = None  # why the connection failed, in an operator's words
        self.writing_paused = False  # its write buffer is over the high-water mark (owner or not)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:
            if self.requests == 0:  # not handed over yet: keep it for the client
                held = data if self.held is None else self.held + data
                self.held = held
                if len(held) > HOLD_BYTES:
                    self.set_reading(False)
                return
            self._drop_idle()  # bytes on an idle connection: it cannot be trusted any more
            return
        self.pool.counters.bytes_out += len(data)
        if self.rs is not None:
            self.rs.counters.bytes_out += len(data)
        owner.server_data(data)

    def eof_received(self) -> bool:
        self.ended = True
        if self.error is None and not getattr(self.transport, "close_notify", True):
            # TLS: a TCP FIN with no close_notify before it, which anyone on the path can forge
            self.error = "TLS: the real server's connection ended without close_notify"
        owner = self.owner
        if owner is None:
            if self.requests:  # not before the handover, which reports it
                self._drop_idle()
        else:
            owner.server_ended(self)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        already = self.ended
        self.ended = True
        if exc is not None and self.error is None:
            self.error = describe_error(exc)
            if isinstance(exc, ssl.SSLError) and self.rs is not None:
                # after the handshake: an alert such as TLS 1.3's "certificate required",
                # which a real server sends once it has read the client's Finished
                self.rs.counters.error("tls")
                limited(self.pool.limits, "server_tls", log).log(
                    "pool %s server %s (%s): %s", self.pool.name, self.rs.name, self.rs.address, self.error)
        owner = self.owner
        if owner is None:
            if self.idle is not None:  # a parked connection the real server closed
                self.idle.remove(self)
                self.idle = None
        elif not already:
            owner.server_ended(self)

    def hand_over(self) -> None:
        """Pass what came before the handover (see the class), if anything, to the owner, now attached."""
        held = self.held
        if held is not None:
            self.held = None
            self.data_received(held)
        if self.ended and self.owner is not None:
            self.owner.server_ended(self)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.owner is not None:
            self.owner.server_buffer_full(True)

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.owner is not None:
            self.owner.server_buffer_full(False)

    def set_reading(self, on: bool) -> None:
        t = self.transport
        if t is None or t.is_closing() or self.read_paused == (not on):
            return
        self.read_paused = not on
        try:
            if on:
                t.resume_reading()
            else:
                t.pause_reading()
        except RuntimeError:
            pass

    def _drop_idle(self) -> None:
        if self.idle is not None:
            self.idle.remove(self)
        self.idle = None
        if self.transport is not None:
            self.transport.close()


# -- the client side ------------------------------------------------------------------------------
class ClientProtocol(Timed):
    """One client connection of an `http`/`https` virtual server.

    Its timeouts are one deadline at a time (see `_arm`), filed with the event loop's
    others (adc.runtime.deadlines).
    """

    __slots__ = (
        "vs", "engine", "profile", "transport", "exchange", "server", "open_task", "client_ip", "client",
        "client_cert", "loop", "client_activity", "server_activity", "head_started", "hold", "backpressure",
        "writing_paused", "closed", "relay", "queue", "running", "request_started", "tunnel_started",
        "tunnel_facts", "tunnel_rs", "counted", "high_water", "request_server", "to_client", "to_server", "idle",
        "ip_context", "min_wait", "outbox", "deferred", "tls_names", "lingering", "linger_end",
    )

    def __init__(self, vs: "VirtualServerRuntime") -> None:
        super().__init__()
        self.vs = vs
        self.engine = vs.engine
        self.profile = vs.profile
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.server: ServerProtocol | None = None
        self.open_task: asyncio.Task | None = None
        self.client_ip = ""
        self.client = "-"
        self.client_cert: str | None = None  # https: the client certificate's subject, for the access log
        self.tls_names: tuple[str | None, str | None] | None = None  # https: TLS version and cipher, once asked
        loop: asyncio.AbstractEventLoop | None = vs.engine.loop
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        # the shortest of the timeouts that count from activity (see _arm)
        wait = math.inf
        for t in (self.profile.timeout_client, self.profile.timeout_server):
            if 0 < t < wait:
                wait = t
        self.min_wait = wait
        now = self.loop.time()
        self.client_activity = now
        self.server_activity = now
        self.head_started: float | None = None
        self.hold = False  # the exchange asked to stop reading the client
        self.backpressure = False  # the server's write buffer is full
        self.writing_paused = False  # the client's write buffer is full
        self.closed = False
        # closed, but still reading (and dropping) what the client sends: loop time of its last
        # bytes, 0.0 when not lingering; lingering ends by `linger_end` at the latest
        self.lingering = 0.0
        self.linger_end = 0.0
        self.counted = False
        self.relay: Relay | None = None
        self.queue: collections.deque[Action] = collections.deque()
        self.running = False
        self.request_started = time.monotonic()
        self.tunnel_started = 0.0
        self.tunnel_facts: AccessFacts | None = None
        self.tunnel_rs: RealServerRuntime | None = None
        self.high_water = max(1, self.profile.buffer_bytes)
        self.idle = idle_connections(self.engine)
        self.ip_context: PickContext | None = None  # what a pick by client address needs, made once
        self.request_server: ServerProtocol | None = None  # serves the current request (for its counters)
        # bytes produced by one batch of actions, written with one write each side (see _write)
        self.to_client: list[bytes] = []
        self.to_server: list[bytes] = []
        self.outbox = outbox(self.engine)
        self.deferred = False  # in the outbox: the output waits for the end of the iteration

    # -- asyncio callbacks -------------------------------------------------------------------
    def tls_accepted(self, layer: Any) -> bool:
        """An `https` connection is accepted, its handshake still to come (adc.tls.termination):
        it is counted now (`max_connections`, draining), or refused before any handshake work."""
        self.transport = layer  # closing it (engine stop, admin) ends the handshake
        return self._admit()

    def tls_ended(self) -> None:
        """The connection ended before its TLS handshake completed: give its slot back."""
        self.closed = True
        self.transport = None
        self._cleanup()

    def _admit(self) -> bool:
        vs = self.vs
        counters = vs.counters
        if vs.stopping or (vs.config.max_connections and counters.conn_current >= vs.config.max_connections):
            vs.refuse()
            self.closed = True
            return False
        self.counted = True
        counters.conn_current += 1
        counters.conn_total += 1
        vs.connections.add(self)
        return True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        vs = self.vs
        self.transport = transport  # type: ignore[assignment]
        if not self.counted and not self._admit():  # (an https connection was admitted at accept)
            transport.abort()  # type: ignore[attr-defined]
            return
        self.client_ip, self.client = peer_text(transport)
        scheme = "https" if self.profile.type is ProfileType.HTTPS else "http"
        cached = vs.router_cache  # vs.router() without a call into interpreted code, once it is built
        router = cached[1] if cached is not None and cached[0] is vs.config else vs.router()
        client_ssl = self.profile.client_ssl
        tls_fields = None
        if client_ssl is not None:
            counters = vs.counters
            counters.tls_handshakes += 1
            if transport.session_reused():  # type: ignore[attr-defined]
                counters.tls_resumed += 1
        if client_ssl is not None and (client_ssl.forward_client_cert or client_ssl.verify_client != "none"):
            fields = client_cert_fields(transport.peer_certificate())  # type: ignore[attr-defined]
            self.client_cert = certificate_subject(fields)
            if client_ssl.forward_client_cert:
                tls_fields = fields
        self.exchange = Exchange(self.profile, router, self.client_ip, scheme, tls_fields)
        transport.set_write_buffer_limits(high=self.high_water, low=self.high_water // 4)  # type: ignore[attr-defined]
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self.lingering = self.loop.time()
            self.vs.counters.bytes_in += len(data)
            return
        last_activity = self.client_activity
        self.client_activity = self.loop.time()
        self.vs.counters.bytes_in += len(data)
        ex = self.exchange
        assert ex is not None
        if ex.phase is Phase.READ_HEAD and self.head_started is None:
            self.head_started = self.client_activity
            self.request_started = time.monotonic()
        actions = ex.receive_client(data)
        if ex.only_empty_lines:
            self.client_activity = last_activity  # see Exchange.receive_client
        self._run(actions, len(data) < DEFER_WRITES_BELOW)

    def eof_received(self) -> bool:
        if self.lingering:  # the client has sent all it had: the answer is all that is left
            self._end_linger()
            return True
        if self.exchange is not None and not self.closed:
            self._run(self.exchange.client_eof())
        # keep writing the answer (CloseClient closes): a FIN, or under TLS a close_notify,
        # ends the client's direction only (RFC 8446 6.1; adc's TLS layer goes on writing)
        return self.transport is not None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.relay is not None:
            return  # the tunnel owns the transport now
        was_closed = self.closed
        self.closed = True
        self.lingering = 0.0
        if self.exchange is not None and not was_closed:
            self._run(self.exchange.client_lost("client closed" if exc is None else "client error"))
        self._cleanup()

    def pause_writing(self) -> None:
        # the client does not read fast enough: stop reading the real server, and the
        # client too (answers the appliance makes itself must not pile up either)
        self.writing_paused = True
        if self.server is not None:
            self.server.set_reading(False)
        self._sync_reading()
        self._arm()  # timeout_client now counts (the write that filled the buffer may have been deferred)

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.server is not None:
            self.server.set_reading(True)
        self._sync_reading()
        self._arm()  # back to timeout_server, which may come sooner
        self._proceed()

    # -- called by ServerProtocol -------------------------------------------------------------
    def server_data(self, data: bytes) -> None:
        self.server_activity = self.loop.time()
        assert self.exchange is not None
        self._run(self.exchange.receive_server(data), len(data) < DEFER_WRITES_BELOW)

    def server_ended(self, conn: ServerProtocol) -> None:
        if conn is not self.server or self.exchange is None:
            return
        self._run(self.exchange.server_closed(conn.error))

    def server_buffer_full(self, full: bool) -> None:
        self.backpressure = full
        self._sync_reading()

    # -- executing actions ----------------------------------------------------------------------
    def _run(self, actions: list[Action], defer: bool = False) -> None:
        """Execute actions in order; actions produced while running are queued behind.

        Their output is written at the end, or with `defer` at the end of the event-loop
        iteration (see `Outbox`).
        """
        if self.running:
            self.queue.extend(actions)
            return
        if actions:
            self.running = True
            try:
                handlers = _HANDLERS
                queue = self.queue
                queue.extend(actions)
                while queue:
                    action = queue.popleft()
                    cls = action.__class__
                    if cls is SendToClient:  # the most frequent actions, inline
                        if not self.closed:
                            self.to_client.append(action.data)  # type: ignore[union-attr]
                    elif cls is SendToServer:
                        self.to_server.append(action.data)  # type: ignore[union-attr]
                    else:
                        handlers[cls](self, action)
                if not defer:
                    self._flush_writes()
                elif not self.deferred and (self.to_client or self.to_server):
                    self.deferred = True
                    self.outbox.add(self)
            finally:
                self.running = False
        self._arm()
        ex = self.exchange
        if ex is not None and ex.stalled and not self.writing_paused and not self.closed:
            self.loop.call_soon(self._proceed)

    def _proceed(self) -> None:
        """Pipelined requests held back by the exchange: go on while the client keeps up."""
        ex = self.exchange
        if ex is not None and ex.stalled and not self.writing_paused and not self.closed and not self.running:
            self._run(ex.proceed())

    def _flush_writes(self) -> None:
        """Write what the last actions produced: one system call per side, not one per action."""
        if self.to_server:
            self._flush_server()
        if self.to_client:
            data, self.to_client = self.to_client, []
            t = self.transport
            if t is not None and not t.is_closing():
                self.vs.counters.bytes_out += _write(t, data)

    def _flush_server(self) -> None:
        data, self.to_server = self.to_server, []
        server = self.server
        if server is None or server.transport is None or server.transport.is_closing():
            return  # released with the client gone, or closed by the real server: nobody reads it
        n = _write(server.transport, data)
        server.pool.counters.bytes_in += n  # bytes as sent, heads included
        if server.rs is not None:
            server.rs.counters.bytes_in += n

    # one handler per action type (see _HANDLERS): a dict lookup instead of an isinstance chain
    def _send_to_server(self, action: SendToServer) -> None:
        self.to_server.append(action.data)

    def _send_to_client(self, action: SendToClient) -> None:
        if not self.closed:
            self.to_client.append(action.data)

    def _do_release_server(self, action: ReleaseServer) -> None:
        if self.to_server:  # the connection may serve another client next
            self._flush_server()
        self._release_server(action.reusable)

    def _respond(self, action: Respond) -> None:
        if self.transport is not None and not self.closed:
            self.to_client.append(action.data)
        self._count_answer(action.status, action.reason)

    def _pause_client(self, action: PauseClient) -> None:
        self.hold = True
        self._sync_reading()

    def _resume_client(self, action: ResumeClient) -> None:
        self.hold = False
        self._sync_reading()

    def _close_client(self, action: CloseClient) -> None:
        self._flush_writes()
        self.closed = True
        t = self.transport
        if t is None:
            return
        if action.abort:
            # an incomplete answer: a reset (no FIN, no close_notify) tells the client so
            reset(t)
            return
        if action.linger and t.can_write_eof():
            # The client is still sending (a body nobody will read): closing now would answer
            # its next bytes with a reset, which can destroy the answer before the client
            # reads it. End our direction after the answer, and read and drop what comes
            # until the client is done, or quiet for a while (NGINX's lingering close).
            t.write_eof()
            now = self.loop.time()
            self.lingering = now
            self.linger_end = now + self._linger_limit(LINGERING_TIME_SECONDS)
            if not t.is_reading():  # type: ignore[attr-defined]
                t.resume_reading()
            self.loop.call_later(self._linger_limit(LINGERING_TIMEOUT_SECONDS), self._linger_check)
            return
        self._close_watched(t)

    def _close_watched(self, t: asyncio.Transport) -> None:
        # the answer's last bytes may still be on their way to a slow reader: it gets them
        # all while it reads; a client that reads nothing must not keep the connection
        # (and its buffer) for ever
        close_watched(self.loop, t, self.profile.timeout_client or CLOSE_LINGER_SECONDS)

    def _linger_limit(self, limit: float) -> float:
        timeout = self.profile.timeout_client
        return timeout if 0 < timeout < limit else limit

    def _linger_check(self) -> None:
        if not self.lingering:
            return  # ended meanwhile
        now = self.loop.time()
        quiet_until = self.lingering + self._linger_limit(LINGERING_TIMEOUT_SECONDS)
        if now < quiet_until - 0.001 and now < self.linger_end - 0.001:
            self.loop.call_later(min(quiet_until, self.linger_end) - now, self._linger_check)
            return
        self._end_linger()

    def _end_linger(self) -> None:
        self.lingering = 0.0
        t = self.transport
        if t is not None and not t.is_closing():
            self._close_watched(t)

    def _do_start_tunnel(self, action: StartTunnel) -> None:
        self._flush_writes()
        self._start_tunnel(action)

    def _do_count(self, action: Count) -> None:
        self._count(action.name, action.detail)

    def _sync_reading(self) -> None:
        t = self.transport
        if t is None or self.closed or self.relay is not None:
            return
        try:
            if self.hold or self.backpressure or self.writing_paused:
                t.pause_reading()
            else:
                t.resume_reading()
        except RuntimeError:
            pass

    # -- real-server connections ------------------------------------------------------------------
    def _pick_context(self, action: OpenServer, pool: "PoolRuntime") -> PickContext:
        request = action.request
        headers = request.headers
        if not pool.reads_target:  # round-robin, least-conn, source hash...: the client address is enough
            ctx = self.ip_context
            if ctx is None:
                ctx = self.ip_context = PickContext(self.client_ip)
            return ctx
        if not pool.reads_request:  # no header or cookie lookups
            return PickContext(client_ip=self.client_ip, uri=request.target.decode("latin-1"), host=request.host)

        header, cookie = _request_lookups(headers)
        return PickContext(
            client_ip=self.client_ip,
            uri=request.target.decode("latin-1"),
            host=request.host,
            header=header,
            cookie=cookie,
        )

    def _open_server(self, action: OpenServer) -> None:
        ex = self.exchange
        if ex is None or self.closed or ex.phase is not Phase.CONNECT:
            # the exchange moved on in the same batch of actions: a malformed body after
            # the head, answered 400, say; no connection (an idle one taken at once least of all)
            return
        pool = self.engine.pools.get(action.pool)
        if pool is None:  # removed by a reload while this connection was open
            assert self.exchange is not None
            self._run(self.exchange.server_failed(f"pool {action.pool} no longer exists", 503))
            return
        ctx = self._pick_context(action, pool)
        first = None
        if not action.retry:
            first = pool.pick(ctx)
            if first is not None:
                conn = self.idle.take(_idle_key(pool, first, action.request.host))
                if conn is not None:
                    pool.take(first)
                    self._attach(conn)
                    assert self.exchange is not None
                    cookie = None if pool.cookies is None else _persistence_cookie(pool, first, ctx)
                    self._run(self.exchange.server_connected(reused=True, set_cookie=cookie))
                    return
        self.open_task = self.loop.create_task(self._connect(action, pool, ctx, first))

    async def _connect(self, action: OpenServer, pool: "PoolRuntime", ctx: PickContext, first: Any) -> None:
        try:
            rs, transport, conn = await connect_server(
                pool, ctx, self.profile, lambda: ServerProtocol(pool), host=action.request.host or None, first=first,
                loop=self.loop, first_data=action.head,
            )
        except NoServerAvailable as exc:
            self.open_task = None
            if self.closed or self.exchange is None:
                return
            limited(self.vs.limits, "no_server", log).log("virtual_server %s: %s: %s", self.vs.name, self.client,
                                                          exc.reason)
            self._run(self.exchange.server_failed(exc.reason, 502 if exc.tls_failure else 503))
            return
        except Exception as err:  # a bug must cost this request, not hang the client
            # (`err`, not `exc`: compiled, one name holds one type, and the clause above took `exc`)
            self.open_task = None
            log.exception("virtual_server %s: %s: connecting to pool %s failed", self.vs.name, self.client, pool.name)
            if not self.closed and self.exchange is not None and self.exchange.phase is Phase.CONNECT:
                self._run(self.exchange.server_failed(f"internal error: {err.__class__.__name__}", 502))
            return
        self.open_task = None
        conn.rs = rs
        conn.key = _idle_key(pool, rs, action.request.host)
        n = len(action.head)  # sent with the connection
        pool.counters.bytes_in += n
        rs.counters.bytes_in += n
        if self.closed or self.exchange is None or self.exchange.phase is not Phase.CONNECT:
            transport.close()
            pool.drop(rs)
            return
        self._attach(conn)
        cookie = None if pool.cookies is None else _persistence_cookie(pool, rs, ctx)
        self._run(self.exchange.server_connected(reused=False, set_cookie=cookie, head_sent=True))
        conn.hand_over()

    def _attach(self, conn: ServerProtocol) -> None:
        self.server = conn
        self.request_server = conn
        conn.owner = self
        conn.requests += 1
        assert conn.transport is not None
        if conn.high_water != self.high_water:  # set once per connection and profile, not per request
            conn.high_water = self.high_water
            conn.transport.set_write_buffer_limits(high=self.high_water, low=self.high_water // 4)
        if self.writing_paused or conn.read_paused:
            conn.set_reading(not self.writing_paused)
        self.server_activity = self.loop.time()

    def _release_server(self, reusable: bool) -> None:
        if self.open_task is not None:  # still connecting: give up on it
            self.open_task.cancel()
            self.open_task = None
        conn = self.server
        if conn is None:
            return
        self.server = None
        conn.owner = None
        if self.backpressure:
            self.backpressure = False
            self._sync_reading()
        rs = conn.rs
        assert rs is not None and conn.transport is not None
        conn.pool.drop(rs)
        profile = self.profile
        if (
            reusable
            and not conn.ended
            and not conn.transport.is_closing()
            and profile.max_idle_server_connections > 0
            and self.idle.put(
                conn, profile.max_idle_server_connections, profile.timeout_server_idle
            )
        ):
            if conn.read_paused:
                conn.set_reading(True)
            return
        conn.transport.close()

    # -- timers -------------------------------------------------------------------------------------
    def _deadline(self) -> tuple[str, float] | None:
        """(which timeout, when it expires) for the current phase, or None."""
        ex = self.exchange
        if ex is None or self.closed:
            return None
        phase = ex.phase
        p = self.profile
        if phase is Phase.READ_HEAD:
            if ex.head_in_progress:
                if self.head_started is None:
                    self.head_started = self.client_activity
                return ("http_request", self.head_started + p.timeout_http_request) if p.timeout_http_request else None
            self.head_started = None
            return ("client", self.client_activity + p.timeout_client) if p.timeout_client else None
        if phase in _WAITING_SERVER:
            if self.writing_paused:  # the client is the one not reading
                if not p.timeout_client:
                    return None
                return "client", max(self.server_activity, self.client_activity) + p.timeout_client
            if not self.backpressure and ex.awaiting_client_body:
                # the real server takes what comes and waits for the rest: a stall is the
                # client's (408, as NGINX's client_body_timeout), not a 504 on the server
                return ("client", self.client_activity + p.timeout_client) if p.timeout_client else None
            if not p.timeout_server:
                return None
            return "server", max(self.server_activity, self.client_activity) + p.timeout_server
        return None

    def _arm(self) -> None:
        if self.closed or self.relay is not None:
            return
        filed = self.deadline_wheel is not None
        if filed and self.deadline_at <= self.client_activity + self.min_wait:
            # Every deadline but a request head's comes at least min_wait after the
            # last client activity, so the deadline filed comes first (and is filed again lazily).
            ex = self.exchange
            if ex is not None and not ex.head_in_progress:
                return
        deadline = self._deadline()
        if deadline is None:
            return  # a deadline filed finds nothing to do and is not filed again
        at = deadline[1]
        if filed and self.deadline_at <= at:
            return  # comes first and is filed again lazily
        self.file_deadline(self.loop, at, at - self.loop.time())

    def on_deadline(self) -> None:
        deadline = self._deadline()
        if deadline is None or self.exchange is None:
            return
        kind, at = deadline
        left = at - self.loop.time()
        if left > 0.001:
            self.file_deadline(self.loop, at, left)
            return
        self.vs.counters.timeouts += 1
        self.vs.counters.error("timeout")
        if kind == "server":
            self._run(self.exchange.server_timeout())
        else:
            self._run(self.exchange.client_timeout())

    # -- the tunnel --------------------------------------------------------------------------------
    def _start_tunnel(self, action: StartTunnel) -> None:
        conn = self.server
        t = self.transport
        assert conn is not None and conn.transport is not None and t is not None and conn.rs is not None
        self.drop_deadline()
        vs = self.vs
        p = self.profile
        session = Session("tunnel", self.client, vs.name, vs.counters, time.monotonic())
        session.pool = conn.pool.name
        session.server = conn.rs.name
        session.pool_counters = conn.pool.counters
        session.server_counters = conn.rs.counters
        relay = Relay(
            session,
            idle_timeout=p.timeout_tunnel,
            client_fin_timeout=p.timeout_client_fin,
            server_fin_timeout=p.timeout_server_fin,
            high_water=self.high_water,
            on_close=self._tunnel_closed,
            loop=self.loop,
        )
        self.relay = relay
        self.server = None
        conn.owner = None
        for c in session.counters():
            c.tunnels_current += 1
            c.tunnels_total += 1
            c.upgrades_accepted += 1
        self.tunnel_started = time.monotonic()
        self.tunnel_rs = conn.rs
        conn.pool.tunnel_opened(conn.rs)
        self.engine.stats.open_session(session)
        relay.attach(t, conn.transport, limits_set=conn.high_water == self.high_water, server_sock=conn.sock,
                     client_paused=self.writing_paused, server_paused=conn.writing_paused)  # (see _attach)
        relay.start(action.client_leftover, action.server_leftover)
        # No HTTP code runs any more: free the parsers and buffers (an idle tunnel should
        # cost little more than its two transports).
        if self.exchange is not None:
            self.exchange.release()
        self.exchange = None
        self.queue = _NO_ACTIONS
        self.to_client = self.to_server = _NO_WRITES

    def _tunnel_closed(self, relay: Relay, reason: str) -> None:
        session = relay.session
        for c in session.counters():
            c.tunnels_current -= 1
        self.engine.stats.close_session(session)
        rs = self.tunnel_rs
        if rs is not None:
            self.tunnel_rs = None
            rs.pool.tunnel_closed(rs)
            rs.pool.drop(rs)
        access_log = self.engine.access_log
        if access_log.enabled:  # the record is built only for a log that takes it
            facts = self.tunnel_facts
            access_log.log({
                "kind": "tunnel",
                "client": self.client,
                "client_cert": self.client_cert,
                **self._tls_fields(),
                "vs": self.vs.name,
                "host": facts.host if facts else None,
                "path": facts.target if facts else None,
                "route": facts.route if facts else None,
                "pool": session.pool,
                "server": session.server,
                "bytes_in": session.bytes_in,
                "bytes_out": session.bytes_out,
                "duration": time.monotonic() - self.tunnel_started,
                "end": reason,
            })
        self._cleanup()

    # -- bookkeeping -------------------------------------------------------------------------------
    def _request_done(self, action: RequestDone) -> None:
        facts = action.facts
        vs = self.vs
        conn = self.server or self.request_server  # the connection may already be released
        self.request_server = None
        self.head_started = None
        rs = None if conn is None else conn.rs
        if rs is not None:
            count_request(facts.status, vs.counters, conn.pool.counters, rs.counters)  # type: ignore[union-attr]
        else:
            count_request(facts.status, vs.counters)
        if facts.upgrade is not None:
            if facts.upgrade == "tunnel":
                self.tunnel_facts = facts
            elif facts.upgrade == "declined":
                vs.counters.upgrades_refused += 1
        access_log = self.engine.access_log
        if not access_log.enabled:
            self.request_started = time.monotonic()
            return
        server_name = None if rs is None else rs.name
        access_log.log({
            "kind": "http",
            "client": self.client,
            "client_cert": self.client_cert,
            **self._tls_fields(),
            "vs": self.vs.name,
            "method": facts.method or None,
            "host": facts.host or None,
            "path": facts.target or None,
            "version": facts.version or None,
            "route": facts.route or None,
            "pool": facts.pool,
            "server": server_name,
            "status": facts.status,
            "bytes_in": facts.bytes_in,
            "bytes_out": facts.bytes_out,
            "duration": time.monotonic() - self.request_started,
            "upgrade": facts.upgrade,
            "retried": True if facts.retried else None,
            "reason": facts.reason,
        })
        self.request_started = time.monotonic()
        self.head_started = None

    def _count_answer(self, status: int, reason: str) -> None:
        """An answer the appliance made itself: count it and say why in the log."""
        counters = self.vs.counters
        if status == 503:
            counters.error("no_server")
        elif status in (400, 413, 414, 431, 502, 505):
            counters.error("protocol")
        if status >= 500 or status in (400, 408, 414, 431):
            conn = self.server or self.request_server  # a real server failed after the connect: name it
            if status >= 500 and conn is not None and conn.rs is not None:
                reason = f"{self._server_where(conn)}: {reason}"
            limited(self.vs.limits, "answered", log, logging.INFO).log(
                "virtual_server %s: %s: answered %d: %s", self.vs.name, self.client, status, reason)

    @staticmethod
    def _server_where(conn: "ServerProtocol | None") -> str:
        rs = None if conn is None else conn.rs
        return "a real server" if rs is None else f"pool {rs.pool.name} server {rs.name} ({rs.address})"

    def _count(self, name: str, detail: str = "") -> None:
        counters = self.vs.counters
        if name == "websocket_refused":
            counters.upgrades_stripped += 1
        elif name == "response_framing_violation" or name == "stray_response_bytes":
            counters.error("protocol")
            where = self._server_where(self.server or self.request_server)
            limited(self.vs.limits, "server_framing", log).log("virtual_server %s: %s: %s", self.vs.name, where, detail)
        elif name == "server_aborted":  # an answer cut short: the client is reset
            conn = self.server or self.request_server
            counters.error("aborted")
            if conn is not None and conn.rs is not None:
                conn.rs.counters.error("aborted")
            limited(self.vs.limits, "server_aborted", log).log("virtual_server %s: %s: %s: answer cut short: %s",
                                                               self.vs.name, self.client, self._server_where(conn), detail)
        elif name == "websocket_upgrade":
            counters.upgrades_attempted += 1

    def _tls_fields(self) -> dict[str, str | None]:
        """The access log's `tls_version` and `tls_cipher` (None without TLS): read once per connection."""
        names = self.tls_names
        if names is None:
            t = self.transport
            names = (None, None)
            if self.profile.client_ssl is not None and t is not None:
                names = t.protocol_and_cipher()  # type: ignore[attr-defined]
            self.tls_names = names
        return {"tls_version": names[0], "tls_cipher": names[1]}

    def _cleanup(self) -> None:
        self.drop_deadline()
        if self.open_task is not None:
            self.open_task.cancel()
            self.open_task = None
        if self.server is not None:
            self._release_server(False)
        if self.exchange is not None:
            self.exchange.release()
        if self.counted:
            self.counted = False
            self.vs.counters.conn_current -= 1
            self.vs.connections.discard(self)

    def close(self, reason: str = "closed") -> None:
        """Close this client connection (engine stop, admin action)."""
        if self.relay is not None:
            self.relay.close(reason)
            return
        if self.transport is not None:
            self.transport.close()


class ProtocolFactory:
    """What a virtual server's listeners call per accepted connection: its protocol.

    A compiled callable rather than a method of the (interpreted) virtual server, as it
    runs once per connection. The profile is read each time, so a reload that changes
    its type takes effect on the next connection.
    """

    __slots__ = ("vs", "l4")

    def __init__(self, vs: "VirtualServerRuntime", l4: Callable[["VirtualServerRuntime"], Any]) -> None:
        self.vs = vs
        self.l4 = l4  # the `tcp` profile's protocol (adc.engine.l4.L4Accept)

    def __call__(self) -> Any:  # every method uvloop calls, not always a BaseProtocol subclass
        vs = self.vs
        if vs.profile.type is ProfileType.TCP:
            return self.l4(vs)
        return ClientProtocol(vs)


# Every action type has its handler; a new action without one fails loudly (KeyError).
_HANDLERS: dict[type, Any] = {
    SendToServer: ClientProtocol._send_to_server,
    SendToClient: ClientProtocol._send_to_client,
    OpenServer: ClientProtocol._open_server,
    ReleaseServer: ClientProtocol._do_release_server,
    Respond: ClientProtocol._respond,
    RequestDone: ClientProtocol._request_done,
    PauseClient: ClientProtocol._pause_client,
    ResumeClient: ClientProtocol._resume_client,
    CloseClient: ClientProtocol._close_client,
    StartTunnel: ClientProtocol._do_start_tunnel,
    Count: ClientProtocol._do_count,
}
