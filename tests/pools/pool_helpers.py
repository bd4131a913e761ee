"""Building pools for tests from config values (no TOML, no sockets)."""

from __future__ import annotations

from typing import Any, Callable

from adc.config.model import Address, HealthCheck, Persistence, Pool, RealServer, ServerState
from adc.pools.pool import PoolRuntime
from adc.runtime.stats import Stats


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def server(name: str, port: int = 0, **kw: Any) -> RealServer:
    return RealServer(name=name, address=Address("127.0.0.1", port or 10000 + sum(map(ord, name))), **kw)


def make_pool(
    servers: list[RealServer] | int,
    method: str = "round-robin",
    *,
    clock: Callable[[], float] | None = None,
    **kw: Any,
) -> PoolRuntime:
    if isinstance(servers, int):
        servers = [server(f"s{i}", 10000 + i) for i in range(servers)]
    cfg = Pool(name=kw.pop("name", "p"), servers=tuple(servers), method=method, **kw)
    if clock is None:
        return PoolRuntime(cfg, Stats())
    return PoolRuntime(cfg, Stats(), clock=clock)


__all__ = ["Clock", "server", "make_pool", "HealthCheck", "Persistence", "ServerState"]
