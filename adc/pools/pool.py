"""Runtime state of real-server pools.

`PoolRuntime` owns the real servers of one pool, their administrative state, health,
effective weight and connection counts, and the balancers that pick among them. All
state changes (admin API, health checks, reload) go through the methods here, which
notify the balancers, so a pick never rescans what has not changed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from adc.config.model import Pool, RealServer, ServerState
from adc.pools.balancers import Balancer, PickContext, make_balancer
from adc.runtime.stats import Counters, Stats

log = logging.getLogger("adc.pool")


@dataclass(slots=True)
class CheckResult:
    """Outcome of one health probe (or of a failed connect on live traffic)."""

    ok: bool
    reason: str
    latency: float | None = None  # seconds
    at: float = field(default_factory=time.time)

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
        "active", "tunnels", "counters", "last_check", "up_since", "slow_start", "effective_weight",
        "on_change", "index",
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
        self.healthy = True  # without a health check a server is presumed up
        self.active = 0  # live client sessions and in-flight requests on this server
        self.tunnels = 0
        self.counters = counters
        self.last_check: CheckResult | None = None
        self.up_since: float | None = None  # monotonic time of the last down -> up transition
        self.slow_start = 0.0
        self.effective_weight = config.weight
        self.index = 0

    @property
    def usable(self) -> bool:
        """May take a new connection or request now."""
        return (
            self.state is ServerState.ENABLED
            and self.healthy
            and self.effective_weight > 0
            and (self.max_connections == 0 or self.active < self.max_connections)
        )

    @property
    def available(self) -> bool:
        """Up and enabled, whatever its current load."""
        return self.state is ServerState.ENABLED and self.healthy and self.effective_weight > 0

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
            "max_connections": self.max_connections,
            "active": self.active,
            "tunnels": self.tunnels,
            "last_check": self.last_check.view() if self.last_check else None,
        }


class PoolRuntime:
    """One pool: its servers, a balancer for the primaries and one for the backups."""

    def __init__(self, config: Pool, stats: Stats, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.name = config.name
        self.clock = clock
        self.counters = stats.pool(config.name)
        self.servers: dict[str, RealServerRuntime] = {}
        for i, sc in enumerate(config.servers):
            rs = RealServerRuntime(sc, self, stats.server(config.name, sc.name))
            rs.index = i
            rs.slow_start = config.slow_start
            if config.health is not None:
                rs.healthy = False  # unknown until the first checks pass ... see start_healthy()
            self.servers[sc.name] = rs
        self.primary: Balancer = make_balancer(config, [s for s in self.servers.values() if not s.backup])
        self.backup: Balancer = make_balancer(config, [s for s in self.servers.values() if s.backup])
        self.ssl: Any = None  # server-side TLS connector, set by the engine when server_ssl is configured
        # called with (server, result) when live traffic fails to connect; the health monitor hooks in here
        self.on_connect_failure: Callable[[RealServerRuntime, CheckResult], None] | None = None
        self._ramping: set[RealServerRuntime] = set()

    def start_healthy(self) -> None:
        """At process start servers are presumed up until checks say otherwise (HAProxy does the same)."""
        for rs in self.servers.values():
            rs.healthy = True
        self.changed()

    # ------------------------------------------------------------------ picking

    def pick(self, ctx: PickContext, exclude: frozenset[str] | set[str] = frozenset()) -> RealServerRuntime | None:
        if self._ramping:
            self._ramp()
        rs = self.primary.pick(ctx, exclude)
        if rs is None:
            rs = self.backup.pick(ctx, exclude)
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

    # ------------------------------------------------------------------ state changes (one place)

    def changed(self) -> None:
        self.primary.rebuild()
        self.backup.rebuild()

    def set_state(self, name: str, state: ServerState) -> RealServerRuntime:
        rs = self.servers[name]
        if rs.state is not state:
            log.info("pool %s server %s: state %s -> %s", self.name, name, rs.state.value, state.value)
            rs.state = state
            self.changed()
        return rs

    def set_weight(self, name: str, weight: int) -> RealServerRuntime:
        rs = self.servers[name]
        rs.weight = weight
        self._update_effective(rs)
        self.changed()
        return rs

    def set_health(self, name: str, up: bool, result: CheckResult | None = None, *, initial: bool = False) -> bool:
        """Record a health verdict; returns True when the server changed up/down."""
        rs = self.servers[name]
        if result is not None:
            rs.last_check = result
        if rs.healthy == up:
            return False
        rs.healthy = up
        if up and not initial and self.config.slow_start > 0:
            rs.up_since = self.clock()
            self._ramping.add(rs)
        self._update_effective(rs)
        self.changed()
        return True

    def _update_effective(self, rs: RealServerRuntime) -> None:
        if rs in self._ramping and rs.up_since is not None:
            elapsed = self.clock() - rs.up_since
            if elapsed >= self.config.slow_start:
                self._ramping.discard(rs)
                rs.effective_weight = rs.weight
            else:
                rs.effective_weight = max(1, int(rs.weight * elapsed / self.config.slow_start)) if rs.weight else 0
        else:
            rs.effective_weight = rs.weight

    def _ramp(self) -> None:
        before = [(rs, rs.effective_weight) for rs in self._ramping]
        for rs, _ in before:
            self._update_effective(rs)
        if any(rs.effective_weight != w for rs, w in before):
            self.changed()

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.config.method,
            "server_ssl": self.config.server_ssl,
            "health": None if self.config.health is None else self.config.health.type,
            "servers": [rs.view() for rs in self.servers.values()],
        }
