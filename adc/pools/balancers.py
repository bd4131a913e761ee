"""Load-balancing methods behind one interface.

Like HAProxy's `lb_ops`, a balancer keeps its own index and is told about changes
(`rebuild` after state/weight/health changes, `taken`/`dropped` as connections come
and go) instead of rescanning every server on every pick. `pick` still checks the
chosen server is usable (per-server `max_connections`) and moves on when it is not.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

if TYPE_CHECKING:
    from adc.config.model import Pool
    from adc.pools.pool import RealServerRuntime


@dataclass(slots=True)
class PickContext:
    """What a balancer may hash on. Layer 4 fills only `client_ip`."""

    client_ip: str = ""
    uri: str = ""
    host: str = ""
    header: Callable[[str], str | None] | None = None
    cookie: Callable[[str], str | None] | None = None


class Balancer(Protocol):
    def rebuild(self) -> None: ...
    def pick(self, ctx: PickContext, exclude: frozenset[str] | set[str]) -> "RealServerRuntime | None": ...
    def taken(self, rs: "RealServerRuntime") -> None: ...
    def dropped(self, rs: "RealServerRuntime") -> None: ...


def _hash(text: str) -> int:
    return zlib.crc32(text.encode()) & 0xFFFFFFFF


class RoundRobin:
    """Smooth weighted round-robin (nginx's algorithm), precomputed as a schedule.

    The schedule is rebuilt only when weights or states change, so a pick is O(1)
    unless servers in the schedule are momentarily unusable (max_connections).
    """

    MAX_SCHEDULE = 4096

    def __init__(self, servers: Sequence["RealServerRuntime"]):
        self.servers = list(servers)
        self.schedule: list["RealServerRuntime"] = []
        self.pos = 0
        self.rebuild()

    def rebuild(self) -> None:
        live = [s for s in self.servers if s.available]
        weights = [s.effective_weight for s in live]
        total = sum(weights)
        if total > self.MAX_SCHEDULE:  # keep proportions, bound the schedule
            scale = self.MAX_SCHEDULE / total
            weights = [max(1, int(w * scale)) for w in weights]
            total = sum(weights)
        current = [0] * len(live)
        schedule: list["RealServerRuntime"] = []
        for _ in range(total):
            best = -1
            for i, w in enumerate(weights):
                current[i] += w
                if best < 0 or current[i] > current[best]:
                    best = i
            current[best] -= total
            schedule.append(live[best])
        self.schedule = schedule
        if self.pos >= len(schedule):
            self.pos = 0

    def pick(self, ctx: PickContext, exclude: frozenset[str] | set[str]) -> "RealServerRuntime | None":
        schedule = self.schedule
        n = len(schedule)
        for _ in range(n):
            rs = schedule[self.pos]
            self.pos += 1
            if self.pos >= n:
                self.pos = 0
            if rs.usable and rs.name not in exclude:
                return rs
        return None

    def taken(self, rs: "RealServerRuntime") -> None:
        pass

    def dropped(self, rs: "RealServerRuntime") -> None:
        pass


class LeastConn:
    """Fewest active connections relative to weight; ties go round-robin."""

    def __init__(self, servers: Sequence["RealServerRuntime"]):
        self.servers = list(servers)
        self.live: list["RealServerRuntime"] = []
        self.turn = 0
        self.rebuild()

    def rebuild(self) -> None:
        self.live = [s for s in self.servers if s.available]

    def pick(self, ctx: PickContext, exclude: frozenset[str] | set[str]) -> "RealServerRuntime | None":
        best = None
        best_load = 0.0
        live = self.live
        n = len(live)
        self.turn += 1
        for k in range(n):
            rs = live[(self.turn + k) % n]
            if not rs.usable or rs.name in exclude:
                continue
            load = (rs.active + 1) / rs.effective_weight
            if best is None or load < best_load:
                best, best_load = rs, load
        return best

    def taken(self, rs: "RealServerRuntime") -> None:
        pass

    def dropped(self, rs: "RealServerRuntime") -> None:
        pass


class SourceHash:
    """Hash of the client address over the available servers, weighted."""

    def __init__(self, servers: Sequence["RealServerRuntime"], key: Callable[[PickContext], str] | None = None):
        self.servers = list(servers)
        self.slots: list["RealServerRuntime"] = []
        self.key = key or (lambda ctx: ctx.client_ip)
        self.rebuild()

    def rebuild(self) -> None:
        self.slots = [s for s in self.servers if s.available for _ in range(s.effective_weight)]

    def pick(self, ctx: PickContext, exclude: frozenset[str] | set[str]) -> "RealServerRuntime | None":
        slots = self.slots
        if not slots:
            return None
        h = _hash(self.key(ctx))
        n = len(slots)
        for k in range(n):
            rs = slots[(h + k) % n]
            if rs.usable and rs.name not in exclude:
                return rs
        return None

    def taken(self, rs: "RealServerRuntime") -> None:
        pass

    def dropped(self, rs: "RealServerRuntime") -> None:
        pass


def make_balancer(pool: "Pool", servers: Sequence["RealServerRuntime"]) -> Balancer:
    method = pool.method
    if method == "least-conn":
        return LeastConn(servers)
    if method == "source-hash":
        return SourceHash(servers)
    if method == "uri-hash":
        return SourceHash(servers, key=lambda ctx: ctx.uri)
    return RoundRobin(servers)
