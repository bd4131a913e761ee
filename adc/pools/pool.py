"""Runtime state of real-server pools.

`PoolRuntime` owns the real servers of one pool, their administrative state, health,
effective weight and connection counts, persistence tables, and the balancers that
pick among them. All state changes (admin API, health checks, reload) go through the
methods here, which notify the balancers, so a pick never rescans what has not changed.

Picking order: persistence (source-ip table, or the pool's cookie when the request
context can read cookies), then the primary servers' balancer, then the backup
servers' balancer (backups get traffic only when no primary is usable).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from adc.config.model import Pool, RealServer, ServerState
from adc.pools.balancers import WEIGHT_SCALE, Balancer, PickContext, make_balancer
from adc.pools.persistence import make_tables
from adc.runtime.loglimit import LineLimit
from adc.runtime.stats import Counters, Stats

log = logging.getLogger("adc.pool")

RAMP_STEPS = 32  # slow start: effective weights are recomputed at most this often per window


@dataclass(slots=True)
class CheckResult:
    """Outcome of one health probe (or of a failed connect on live traffic)."""

    ok: bool
    reason: str
    latency: float | None = None  # seconds
    at: float = field(default_factory=time.time)
    # the probe failed on the appliance's own resources (descriptors, memory, local ports):
    # no evidence about the real server, so no verdict either way
    local: bool = False

    def view(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reason": self.reason,
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 2),
            "at": self.at,
        }


class RealServerRuntime:
    __slots__ = (
        "config", "pool", "name", "address", "state", "healthy", "weight", "backup", "max_connections",
        "active", "tunnels", "counters", "last_check", "up_since", "slow_start", "eweight",
        "index", "successor",
    )

    def __init__(self, config: RealServer, pool: "PoolRuntime", counters: Counters):
        self.config = config
        self.pool = pool
        self.name = config.name
        self.address = config.address
        self.state = config.state
        self.weight = config.weight
        self.backup = config.backup
        self.max_connections = config.max_connections
        self.healthy = True  # presumed up (with or without a health check), as HAProxy does
        self.active = 0  # live client sessions, tunnels and in-flight requests on this server
        self.tunnels = 0
        self.counters = counters
        self.last_check: CheckResult | None = None
        self.up_since: float | None = None  # pool clock time this server started ramping (slow start)
        self.slow_start = 0.0
        self.eweight = config.weight * WEIGHT_SCALE  # internal effective weight (scaled)
        self.index = 0
        # the same real server in the pool a reload rebuilt: it counts this one's live sessions too
        self.successor: RealServerRuntime | None = None

    @property
    def effective_weight(self) -> float | int:
        """The weight the balancers use now, in configured units (fractional while ramping)."""
        w, r = divmod(self.eweight, WEIGHT_SCALE)
        return w if r == 0 else round(self.eweight / WEIGHT_SCALE, 2)

    @property
    def usable(self) -> bool:
        """May take a new connection or request now."""
        return (
            self.state is ServerState.ENABLED
            and self.healthy
            and self.eweight > 0
            and (self.max_connections == 0 or self.active < self.max_connections)
        )

    @property
    def available(self) -> bool:
        """Up and enabled, whatever its current load."""
        return self.state is ServerState.ENABLED and self.healthy and self.eweight > 0

    @property
    def ramping(self) -> bool:
        return self.up_since is not None

    def status(self) -> str:
        if self.state is ServerState.DISABLED:
            return "disabled"
        if self.state is ServerState.DRAINING:
            return "draining"
        return "up" if self.healthy else "down"

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": str(self.address),
            "state": self.state.value,
            "status": self.status(),
            "health": "up" if self.healthy else "down",
            "backup": self.backup,
            "weight": self.weight,
            "effective_weight": self.effective_weight,
            "slow_start": self.ramping,
            "max_connections": self.max_connections,
            "active": self.active,
            "tunnels": self.tunnels,
            "last_check": self.last_check.view() if self.last_check else None,
        }


def _carried(rs: RealServerRuntime | None, sessions: int, tunnels: int) -> None:
    """A session that began before a reload rebuilt the pool changed: so does each successor's count."""
    while rs is not None:
        rs.active += sessions
        rs.tunnels += tunnels
        if sessions:
            (rs.pool.backup if rs.backup else rs.pool.primary).dropped(rs)
        rs = rs.successor


class PoolRuntime:
    """One pool: its servers, a balancer for the primaries and one for the backups."""

    def __init__(self, config: Pool, stats: Stats, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.name = config.name
        self.clock = clock
        self.counters = stats.pool(config.name)
        self.servers: dict[str, RealServerRuntime] = {}
        self.source_table, self.cookies = make_tables(config.persistence, clock)
        for i, sc in enumerate(config.servers):
            rs = RealServerRuntime(sc, self, stats.server(config.name, sc.name))
            rs.index = i
            rs.slow_start = config.slow_start
            self.servers[sc.name] = rs
            if self.cookies is not None:
                self.cookies.add(config.name, sc.name, sc.address)
        self.primary: Balancer = make_balancer(config, [s for s in self.servers.values() if not s.backup])
        self.backup: Balancer = make_balancer(config, [s for s in self.servers.values() if s.backup])
        self.ssl: Any = None  # server-side TLS connector, set by the engine when server_ssl is configured
        self.limits: dict[str, LineLimit] = {}  # its log lines' flood limits
        # whether a pick looks at request headers or cookies (Layer 7 then offers them)
        self.reads_request = (config.persistence is not None and config.persistence.type == "cookie") or (
            config.method == "maglev" and config.hash_on.startswith(("header:", "cookie:"))
        )
        # whether a pick looks at the request at all (its URI or Host); else the client address is enough
        self.reads_target = self.reads_request or config.method == "uri-hash" or (
            config.method == "maglev" and config.hash_on in ("uri", "host")
        )
        # called with (server, result) when live traffic fails to connect; the health monitor hooks in here
        self.on_connect_failure: Callable[[RealServerRuntime, CheckResult], None] | None = None
        self._ramping: set[RealServerRuntime] = set()
        self._next_ramp = 0.0

    def start_healthy(self) -> None:
        """At process start servers are presumed up until checks say otherwise (HAProxy does the same).

        No slow start applies to this.
        """
        for rs in self.servers.values():
            rs.healthy = True
            rs.up_since = None
            rs.eweight = rs.weight * WEIGHT_SCALE
        self._ramping.clear()
        self.changed()

    # ------------------------------------------------------------------ picking

    def pick(self, ctx: PickContext, exclude: frozenset[str] | set[str] = frozenset()) -> RealServerRuntime | None:
        if self._ramping and self.clock() >= self._next_ramp:
            self._ramp()
        if self.source_table is not None or (self.cookies is not None and ctx.cookie is not None):
            rs = self.persist_lookup(ctx)
            if rs is not None and rs.name not in exclude:
                if self.source_table is not None:
                    self.source_table.record(ctx.client_ip, rs.name)  # refresh its lifetime
                return rs
        rs = self.primary.pick(ctx, exclude)
        if rs is None:
            rs = self.backup.pick(ctx, exclude)
        if rs is not None and self.source_table is not None and ctx.client_ip:
            self.source_table.record(ctx.client_ip, rs.name)
        return rs

    def take(self, rs: RealServerRuntime) -> None:
        rs.active += 1
        rs.counters.conn_current += 1
        rs.counters.conn_total += 1
        self.counters.conn_current += 1
        self.counters.conn_total += 1
        (self.backup if rs.backup else self.primary).taken(rs)

    def connect_failed(self, rs: RealServerRuntime, result: CheckResult) -> None:
        if self.on_connect_failure is not None:
            self.on_connect_failure(rs, result)

    def drop(self, rs: RealServerRuntime) -> None:
        rs.active -= 1
        rs.counters.conn_current -= 1
        self.counters.conn_current -= 1
        (self.backup if rs.backup else self.primary).dropped(rs)
        if rs.successor is not None:
            _carried(rs.successor, -1, 0)

    def tunnel_opened(self, rs: RealServerRuntime) -> None:
        rs.tunnels += 1
        if rs.successor is not None:
            _carried(rs.successor, 0, 1)

    def tunnel_closed(self, rs: RealServerRuntime) -> None:
        rs.tunnels -= 1
        if rs.successor is not None:
            _carried(rs.successor, 0, -1)

    def carry(self, rs: RealServerRuntime, prev: RealServerRuntime) -> None:
        """`rs` takes over the live sessions of `prev`, the same real server in the pool a
        reload replaced: they count on `rs` (its `max_connections`, least-conn, the admin
        view), and when they end, on `prev`, `rs` hears of it."""
        rs.active += prev.active
        rs.tunnels += prev.tunnels
        prev.successor = rs
        (self.backup if rs.backup else self.primary).taken(rs)

    # ------------------------------------------------------------------ persistence

    @property
    def persistence_type(self) -> str | None:
        return None if self.config.persistence is None else self.config.persistence.type

    @property
    def cookie_name(self) -> str | None:
        """Name of the persistence cookie the Layer-7 engine honours and sets, or None."""
        return None if self.cookies is None else self.cookies.cookie_name

    def persist_lookup(self, ctx: PickContext, cookie_value: str | None = None) -> RealServerRuntime | None:
        """The server this client is bound to, if it may take traffic now; else None.

        cookie persistence: `cookie_value` (or, when None, `ctx.cookie(cookie_name)`).
        source-ip persistence: `ctx.client_ip`.
        """
        name = None
        if self.cookies is not None:
            if cookie_value is None and ctx.cookie is not None:
                cookie_value = ctx.cookie(self.cookies.cookie_name)
            name = self.cookies.server_for(cookie_value)
        elif self.source_table is not None and ctx.client_ip:
            name = self.source_table.lookup(ctx.client_ip)
        if name is None:
            return None
        rs = self.servers.get(name)
        if rs is None or not rs.usable:
            return None
        if rs.backup and self._primary_usable():
            return None  # a primary is back: leave the backup
        return rs

    def persist_record(self, ctx: PickContext, rs: RealServerRuntime) -> None:
        """Remember that this client uses `rs` (source-ip; cookie persistence needs `cookie_for`)."""
        if self.source_table is not None and ctx.client_ip:
            self.source_table.record(ctx.client_ip, rs.name)

    def cookie_for(self, rs: RealServerRuntime, current: str | None = None) -> str | None:
        """The Set-Cookie value binding a client to `rs` ("NAME=id; Path=/; HttpOnly").

        None when the pool has no cookie persistence, or when `current` (the value the
        request carried) already names `rs`.
        """
        if self.cookies is None:
            return None
        return self.cookies.set_cookie(rs.name, current)

    def _primary_usable(self) -> bool:
        return any(s.usable for s in self.servers.values() if not s.backup)

    # ------------------------------------------------------------------ state changes (one place)

    def changed(self, rs: RealServerRuntime | None = None) -> None:
        """Rebuild the balancers' indexes (only the group of `rs` when given)."""
        if rs is None or not rs.backup:
            self.primary.rebuild()
        if rs is None or rs.backup:
            self.backup.rebuild()

    def set_state(self, name: str, state: ServerState) -> RealServerRuntime:
        rs = self.servers[name]
        if rs.state is not state:
            log.info("pool %s server %s: state %s -> %s", self.name, name, rs.state.value, state.value)
            if state is ServerState.ENABLED and rs.state is ServerState.DISABLED and rs.healthy:
                self._start_ramp(rs)
            elif state is not ServerState.ENABLED:
                self._stop_ramp(rs)
            rs.state = state
            self.changed(rs)
        return rs

    def set_weight(self, name: str, weight: int) -> RealServerRuntime:
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        rs = self.servers[name]
        rs.weight = weight
        self._update_effective(rs, self.clock())
        self.changed(rs)
        return rs

    def set_health(self, name: str, up: bool, result: CheckResult | None = None, *, initial: bool = False) -> bool:
        """Record a health verdict; returns True when the server changed up/down.

        `initial=True` (carrying state over a reload) never starts a slow start.
        """
        rs = self.servers[name]
        if result is not None:
            rs.last_check = result
        if rs.healthy == up:
            return False
        rs.healthy = up
        if up and not initial:
            self._start_ramp(rs)
        else:
            self._stop_ramp(rs)
        self.changed(rs)
        return True

    # ------------------------------------------------------------------ slow start

    def _start_ramp(self, rs: RealServerRuntime) -> None:
        if self.config.slow_start <= 0:
            return
        now = self.clock()
        rs.up_since = now
        self._ramping.add(rs)
        self._update_effective(rs, now)
        self._next_ramp = now

    def _stop_ramp(self, rs: RealServerRuntime) -> None:
        self._ramping.discard(rs)
        rs.up_since = None
        rs.eweight = rs.weight * WEIGHT_SCALE

    def _update_effective(self, rs: RealServerRuntime, now: float) -> None:
        full = rs.weight * WEIGHT_SCALE
        if rs.up_since is not None:
            elapsed = now - rs.up_since
            window = self.config.slow_start
            if elapsed >= window:
                self._ramping.discard(rs)
                rs.up_since = None
                rs.eweight = full
            else:
                rs.eweight = max(1, int(full * max(elapsed, 0.0) / window)) if full else 0
        else:
            rs.eweight = full

    def _ramp(self) -> None:
        now = self.clock()
        self._next_ramp = now + self.config.slow_start / RAMP_STEPS
        changed = False
        for rs in list(self._ramping):
            before = rs.eweight
            self._update_effective(rs, now)
            changed = changed or rs.eweight != before
        if changed:
            self.changed()

    def tick(self) -> None:
        """Advance slow-start ramps now (picks do this lazily; the health monitor calls it too)."""
        if self._ramping:
            self._ramp()

    def view(self) -> dict[str, Any]:
        if self._ramping and self.clock() >= self._next_ramp:
            self._ramp()  # effective weights are current even when no traffic arrives
        return {
            "name": self.name,
            "method": self.config.method,
            "hash_on": self.config.hash_on if self.config.method == "maglev" else None,
            "server_ssl": self.config.server_ssl,
            "health": None if self.config.health is None else self.config.health.type,
            "persistence": self.persistence_type,
            "slow_start": self.config.slow_start,
            "servers": [rs.view() for rs in self.servers.values()],
        }
