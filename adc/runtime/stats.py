"""Counters and live sessions: the one place runtime numbers live.

The data path touches only plain integer attributes on `Counters` and on the live
`Session` it owns; the admin API and the dashboard read `Stats.snapshot()`, a plain
dict built on demand. Byte counters follow HAProxy's convention everywhere:
`bytes_in` flows client -> real server (requests), `bytes_out` flows back.

Live sessions (Layer-4 relays, WebSocket tunnels) count their bytes on the session
itself and fold them into the virtual server, pool and real server counters when
they end; snapshots add the live part, so totals are always current without three
counter updates per chunk.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Iterable

# aborted: an answer the real server cut short (it closed or reset before the announced end)
ERROR_REASONS = ("connect", "timeout", "protocol", "tls", "no_server", "refused", "aborted")


class Counters:
    """Counters of one virtual server, pool or real server."""

    __slots__ = (
        "conn_current", "conn_total", "bytes_in", "bytes_out",
        "connect_failures", "timeouts", "rejected",
        "requests", "responses", "upgrades_attempted", "upgrades_accepted",
        "upgrades_refused", "upgrades_stripped", "tunnels_current", "tunnels_total", "errors",
        "tls_handshakes", "tls_resumed",
    )

    def __init__(self) -> None:
        self.conn_current = 0
        self.conn_total = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.connect_failures = 0
        self.timeouts = 0
        self.rejected = 0  # refused by max_connections
        self.requests = 0
        self.responses = [0, 0, 0, 0, 0, 0]  # index = status // 100 (0 = other)
        self.upgrades_attempted = 0
        self.upgrades_accepted = 0
        self.upgrades_refused = 0
        self.upgrades_stripped = 0  # asked on a route with websocket off
        self.tunnels_current = 0
        self.tunnels_total = 0
        self.errors: dict[str, int] = dict.fromkeys(ERROR_REASONS, 0)
        # TLS handshakes completed (with clients on a virtual server, with real servers on a pool
        # and a real server), and those of them that resumed a session; failed ones are errors["tls"]
        self.tls_handshakes = 0
        self.tls_resumed = 0

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def snapshot(self, live_in: int = 0, live_out: int = 0) -> dict[str, Any]:
        return {
            "conn_current": self.conn_current,
            "conn_total": self.conn_total,
            "bytes_in": self.bytes_in + live_in,
            "bytes_out": self.bytes_out + live_out,
            "connect_failures": self.connect_failures,
            "timeouts": self.timeouts,
            "rejected": self.rejected,
            "requests": self.requests,
            "responses": {f"{c}xx": n for c, n in enumerate(self.responses) if c} | {"other": self.responses[0]},
            "upgrades_attempted": self.upgrades_attempted,
            "upgrades_accepted": self.upgrades_accepted,
            "upgrades_refused": self.upgrades_refused,
            "upgrades_stripped": self.upgrades_stripped,
            "tunnels_current": self.tunnels_current,
            "tunnels_total": self.tunnels_total,
            "tls_handshakes": self.tls_handshakes,
            "tls_resumed": self.tls_resumed,
            "errors": dict(self.errors),
        }


def count_request(status: int, *counters: Counters) -> None:
    """One request answered with `status`, on each of `counters` (virtual server, pool, real server)."""
    cls = status // 100
    if not 1 <= cls <= 5:
        cls = 0
    for c in counters:
        c.requests += 1
        c.responses[cls] += 1


_session_ids = itertools.count(1)


class Session:
    """A live Layer-4 session or WebSocket tunnel, as the API lists it."""

    __slots__ = (
        "id", "kind", "client", "virtual_server", "pool", "server", "started", "wall_started",
        "last_activity", "bytes_in", "bytes_out", "client_fin", "server_fin", "closer",
        "vs_counters", "pool_counters", "server_counters",
    )

    def __init__(
        self,
        kind: str,
        client: str,
        virtual_server: str,
        vs_counters: Counters,
        now: float,
    ) -> None:
        self.id = next(_session_ids)
        self.kind = kind  # "l4" or "tunnel"
        self.client = client
        self.virtual_server = virtual_server
        self.pool: str | None = None
        self.server: str | None = None
        self.started = now
        self.wall_started = time.time()
        self.last_activity = now
        self.bytes_in = 0
        self.bytes_out = 0
        self.client_fin = False
        self.server_fin = False
        self.closer: Callable[[str], None] | None = None
        self.vs_counters = vs_counters
        self.pool_counters: Counters | None = None
        self.server_counters: Counters | None = None

    def counters(self) -> Iterable[Counters]:
        yield self.vs_counters
        if self.pool_counters is not None:
            yield self.pool_counters
        if self.server_counters is not None:
            yield self.server_counters

    def view(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "client": self.client,
            "virtual_server": self.virtual_server,
            "pool": self.pool,
            "server": self.server,
            "started": self.wall_started,
            "age": round(now - self.started, 3),
            "idle": round(max(0.0, now - self.last_activity), 3),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "client_half_closed": self.client_fin,
            "server_half_closed": self.server_fin,
        }


class Stats:
    """Counters per virtual server, pool and real server, plus the live sessions."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.virtual_servers: dict[str, Counters] = {}
        self.pools: dict[str, Counters] = {}
        self.servers: dict[tuple[str, str], Counters] = {}
        self.sessions: dict[int, Session] = {}
        self.started = time.time()

    def vs(self, name: str) -> Counters:
        c = self.virtual_servers.get(name)
        if c is None:
            c = self.virtual_servers[name] = Counters()
        return c

    def pool(self, name: str) -> Counters:
        c = self.pools.get(name)
        if c is None:
            c = self.pools[name] = Counters()
        return c

    def server(self, pool: str, name: str) -> Counters:
        c = self.servers.get((pool, name))
        if c is None:
            c = self.servers[(pool, name)] = Counters()
        return c

    def open_session(self, session: Session) -> None:
        self.sessions[session.id] = session

    def close_session(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        for c in session.counters():
            c.bytes_in += session.bytes_in
            c.bytes_out += session.bytes_out

    def retain(self, vs_names: Iterable[str], pool_names: Iterable[str], servers: Iterable[tuple[str, str]]) -> None:
        """Forget counters of objects that no longer exist (after a reload)."""
        live_vs = set(vs_names) | {s.virtual_server for s in self.sessions.values()}
        live_pools = set(pool_names) | {s.pool for s in self.sessions.values() if s.pool}
        live_servers = set(servers) | {(s.pool, s.server) for s in self.sessions.values() if s.pool and s.server}
        for name in [k for k in self.virtual_servers if k not in live_vs]:
            del self.virtual_servers[name]
        for name in [k for k in self.pools if k not in live_pools]:
            del self.pools[name]
        for server in [k for k in self.servers if k not in live_servers]:
            del self.servers[server]

    def live_bytes(self) -> tuple[dict[str, list[int]], dict[str, list[int]], dict[tuple[str, str], list[int]]]:
        vs: dict[str, list[int]] = {}
        pools: dict[str, list[int]] = {}
        servers: dict[tuple[str, str], list[int]] = {}
        for s in self.sessions.values():
            for table, key in ((vs, s.virtual_server), (pools, s.pool), (servers, (s.pool, s.server))):
                if key is None or key == (None, None) or (isinstance(key, tuple) and None in key):
                    continue
                acc = table.setdefault(key, [0, 0])  # type: ignore[arg-type]
                acc[0] += s.bytes_in
                acc[1] += s.bytes_out
        return vs, pools, servers

    def snapshot(self) -> dict[str, Any]:
        live_vs, live_pools, live_servers = self.live_bytes()
        now = self.clock()
        return {
            "virtual_servers": {n: c.snapshot(*live_vs.get(n, (0, 0))) for n, c in self.virtual_servers.items()},
            "pools": {n: c.snapshot(*live_pools.get(n, (0, 0))) for n, c in self.pools.items()},
            "servers": {
                f"{p}/{s}": c.snapshot(*live_servers.get((p, s), (0, 0))) for (p, s), c in self.servers.items()
            },
            "sessions": [s.view(now) for s in self.sessions.values()],
        }
