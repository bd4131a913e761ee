"""Load-balancing methods behind one interface.

Like HAProxy's `lb_ops`, a balancer keeps its own index and is told about changes
(`rebuild` after state/weight/health changes, `taken`/`dropped` as connections come
and go) instead of rescanning every server on every pick. `pick` still checks that
the chosen server is usable (per-server `max_connections`, `exclude` after a failed
connect) and moves on when it is not.

Weights are handled internally as `RealServerRuntime.eweight`, the configured weight
times `WEIGHT_SCALE` (as HAProxy does), so a server of weight 1 can still ramp up
smoothly during slow start.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import zlib
from bisect import bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

if TYPE_CHECKING:
    from adc.config.model import Pool
    from adc.pools.pool import RealServerRuntime

WEIGHT_SCALE = 16  # internal weight units per configured weight unit
MAX_SCHEDULE = 4096  # round-robin schedule length bound
NGINX_SCHEDULE_WORK = 65536  # above this (schedule length x servers) the schedule is built with a heap
MAX_HASH_SLOTS = 4096  # source-hash / uri-hash map length bound
MAGLEV_TABLE_SIZE = 65537  # prime; the Maglev paper wants it well above 100 x the server count
MAGLEV_PROBES = 64  # table entries tried after an unusable server before a plain scan


@dataclass(slots=True, init=False)
class PickContext:
    """What a balancer may hash on. Layer 4 fills only `client_ip`."""

    client_ip: str = ""
    uri: str = ""
    host: str = ""
    header: Callable[[str], str | None] | None = None
    cookie: Callable[[str], str | None] | None = None

    def __init__(self, client_ip: str = "", uri: str = "", host: str = "",
                 header: Callable[[str], str | None] | None = None,
                 cookie: Callable[[str], str | None] | None = None) -> None:
        self.client_ip = client_ip
        self.uri = uri
        self.host = host
        self.header = header
        self.cookie = cookie


class Balancer(Protocol):
    def rebuild(self) -> None: ...
    def pick(self, ctx: PickContext, exclude: frozenset[str] | set[str]) -> "RealServerRuntime | None": ...
    def taken(self, rs: "RealServerRuntime") -> None: ...
    def dropped(self, rs: "RealServerRuntime") -> None: ...


# --------------------------------------------------------------------------- hashing


def key_hash(text: str) -> int:
    """A well-mixed 32-bit hash of a key (CRC32, then a multiplicative mix of the bits)."""
    h = zlib.crc32(text.encode("utf-8", "surrogateescape"))
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    return h ^ (h >> 16)


def _path_only(uri: str) -> str:
    q = uri.find("?")
    return uri if q < 0 else uri[:q]


def key_function(hash_on: str) -> Callable[[PickContext], str]:
    """The key a hashing balancer uses: source | uri | host | header:NAME | cookie:NAME.

    When the request has no such header or cookie (or Layer 4 has no request at all)
    the key falls back to the client address, so the choice stays stable per client.
    """
    if hash_on == "uri":
        return lambda ctx: _path_only(ctx.uri) if ctx.uri else ctx.client_ip
    if hash_on == "host":
        return lambda ctx: ctx.host.lower() if ctx.host else ctx.client_ip
    if hash_on.startswith("header:"):
        name = hash_on.split(":", 1)[1]

        def header_key(ctx: PickContext) -> str:
            value = ctx.header(name) if ctx.header is not None else None
            return value if value else ctx.client_ip

        return header_key
    if hash_on.startswith("cookie:"):
        name = hash_on.split(":", 1)[1]

        def cookie_key(ctx: PickContext) -> str:
            value = ctx.cookie(name) if ctx.cookie is not None else None
            return value if value else ctx.client_ip

        return cookie_key
    return lambda ctx: ctx.client_ip


def _reduced(weights: list[int], bound: int) -> list[int]:
    """Weights divided by their gcd, then scaled down (keeping every one >= 1) to sum <= bound."""
    if not weights:
        return []
    g = math.gcd(*weights) or 1
    weights = [w // g for w in weights]
    total = sum(weights)
    if total > bound:
        scale = bound / total
        weights = [max(1, int(w * scale)) for w in weights]
    return weights


def _scan(servers: Sequence["RealServerRuntime"], start: int, exclude: frozenset[str] | set[str]) -> "RealServerRuntime | None":
    n = len(servers)
    for k in range(n):
        rs = servers[(start + k) % n]
        if rs.usable and rs.name not in exclude:
            return rs
    return None


class _Base:
    def __init__(self, servers: Sequence["RealServerRuntime"]):
        self.servers = list(servers)

    def taken(self, rs: "RealServerRuntime") -> None:
        pass

    def dropped(self, rs: "RealServerRuntime") -> None:
        pass


# --------------------------------------------------------------------------- round-robin


class RoundRobin(_Base):
    """Smooth weighted round-robin, precomputed as a schedule.

    The schedule interleaves servers in proportion to their weights (nginx's smooth
    weighted round-robin, so weights 5:1:1 give a a b a c a a rather than a a a a a b c;
    for very large pools an earliest-deadline-first heap builds a similar one). It
    is rebuilt only when weights or states change, so a pick is O(1) unless servers in
    the schedule are momentarily unusable (max_connections, exclude).
    """

    def __init__(self, servers: Sequence["RealServerRuntime"]):
        super().__init__(servers)
        self.schedule: list["RealServerRuntime"] = []
        self.pos = 0
        self.rebuild()

    def rebuild(self) -> None:
        live = [s for s in self.servers if s.available]
        weights = _reduced([s.eweight for s in live], MAX_SCHEDULE)
        total = sum(weights)
        schedule: list["RealServerRuntime"] = []
        if total * len(weights) <= NGINX_SCHEDULE_WORK:
            # nginx's smooth weighted round-robin: 5:1:1 gives a a b a c a a
            current = [0] * len(weights)
            for _ in range(total):
                best = 0
                for i, w in enumerate(weights):
                    current[i] += w
                    if current[i] > current[best]:
                        best = i
                current[best] -= total
                schedule.append(live[best])
        else:
            # many servers: earliest virtual deadline first, O(total log n)
            heap = [(0.5 / w, i) for i, w in enumerate(weights)]
            heapq.heapify(heap)
            for _ in range(total):
                deadline, i = heapq.heappop(heap)
                schedule.append(live[i])
                heapq.heappush(heap, (deadline + 1.0 / weights[i], i))
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


# --------------------------------------------------------------------------- least-conn


class LeastConn(_Base):
    """Fewest active connections relative to weight; ties go to the least recently changed.

    A heap keyed by (active + 1) / eweight with lazy updates: `taken`/`dropped` push a
    fresh entry for the server and bump its version, and stale entries are discarded
    when they reach the top. `active` counts live tunnels too.
    """

    def __init__(self, servers: Sequence["RealServerRuntime"]):
        super().__init__(servers)
        self.heap: list[tuple[float, int, int, "RealServerRuntime"]] = []
        self.version: dict[str, int] = {}
        self.live: dict[str, "RealServerRuntime"] = {}
        self.seq = itertools.count()
        self.rebuild()

    def rebuild(self) -> None:
        self.live = {s.name: s for s in self.servers if s.available}
        self.heap = []
        self.version = {}
        for rs in self.live.values():
            self._push(rs)

    def _push(self, rs: "RealServerRuntime") -> None:
        v = self.version.get(rs.name, 0) + 1
        self.version[rs.name] = v
        heapq.heappush(self.heap, ((rs.active + 1) / rs.eweight, next(self.seq), v, rs))

    def _update(self, rs: "RealServerRuntime") -> None:
        if self.live.get(rs.name) is not rs:
            return
        self._push(rs)
        if len(self.heap) > 4 * len(self.live) + 64:
            self.rebuild()

    def taken(self, rs: "RealServerRuntime") -> None:
        self._update(rs)

    def dropped(self, rs: "RealServerRuntime") -> None:
        self._update(rs)

    def pick(self, ctx: PickContext, exclude: frozenset[str] | set[str]) -> "RealServerRuntime | None":
        heap = self.heap
        version = self.version
        skipped = []
        found = None
        while heap:
            key, _seq, v, rs = heap[0]
            if version.get(rs.name) != v:
                heapq.heappop(heap)
                continue
            if key != (rs.active + 1) / rs.eweight:  # changed without taken/dropped: re-key
                heapq.heappop(heap)
                self._push(rs)
                continue
            if rs.usable and rs.name not in exclude:
                found = rs
                break
            skipped.append(heapq.heappop(heap))
        for entry in skipped:
            heapq.heappush(heap, entry)
        return found


# --------------------------------------------------------------------------- random-two


class RandomTwo(_Base):
    """Power of two choices: two servers drawn at random (weighted); the one with fewer
    connections per unit of weight wins, the first drawn on a tie (as HAProxy's `random(2)`)."""

    def __init__(self, servers: Sequence["RealServerRuntime"], rng: random.Random | None = None):
        super().__init__(servers)
        self.random = (rng or random.Random()).random
        self.live: list["RealServerRuntime"] = []
        self.cumulative: list[int] = []
        self.total = 0
        self.rebuild()

    def rebuild(self) -> None:
        self.live = [s for s in self.servers if s.available]
        self.cumulative = list(itertools.accumulate(s.eweight for s in self.live))
        self.total = self.cumulative[-1] if self.cumulative else 0

    def _draw(self) -> "RealServerRuntime":
        i = bisect_right(self.cumulative, self.random() * self.total)
        return self.live[min(i, len(self.live) - 1)]

    def pick(self, ctx: PickContext, exclude: frozenset[str] | set[str]) -> "RealServerRuntime | None":
        if not self.live:
            return None
        a = self._draw()
        b = self._draw()
        a_ok = a.usable and a.name not in exclude
        b_ok = b.usable and b.name not in exclude
        if a_ok and b_ok:
            return b if b.active * a.eweight < a.active * b.eweight else a  # HAProxy's comparison
        if a_ok:
            return a
        if b_ok:
            return b
        return _scan(self.live, int(self.random() * len(self.live)), exclude)


# --------------------------------------------------------------------------- hash map (source-hash, uri-hash)


class HashMap(_Base):
    """Hash of a key over a weighted map of the available servers (HAProxy's map-based hash).

    Cheap and even, but not consistent: a change in the server set moves many keys
    (about 30% when one of 10 servers leaves, where a consistent hash moves 10%).
    `hash_type = "consistent"` (or the `maglev` method) is for where that matters.
    """

    def __init__(self, servers: Sequence["RealServerRuntime"], key: Callable[[PickContext], str] | None = None):
        super().__init__(servers)
        self.key = key or (lambda ctx: ctx.client_ip)
        self.slots: list["RealServerRuntime"] = []
        self.rebuild()

    def rebuild(self) -> None:
        live = [s for s in self.servers if s.available]
        weights = _reduced([s.eweight for s in live], MAX_HASH_SLOTS)
        # interleave so that probing past an unusable server spreads over the others
        slots: list["RealServerRuntime"] = []
        left = list(weights)
        while any(left):
            for i, w in enumerate(left):
                if w:
                    slots.append(live[i])
                    left[i] = w - 1
        self.slots = slots

    def pick(self, ctx: PickContext, exclude: frozenset[str] | set[str]) -> "RealServerRuntime | None":
        slots = self.slots
        if not slots:
            return None
        i = (key_hash(self.key(ctx)) * len(slots)) >> 32
        rs = slots[i]
        if rs.usable and rs.name not in exclude:
            return rs
        return _scan(slots, i + 1, exclude)


SourceHash = HashMap


# --------------------------------------------------------------------------- maglev


def _name_hashes(name: str, size: int) -> tuple[int, int]:
    offset = key_hash("maglev-offset:" + name) % size
    skip = key_hash("maglev-skip:" + name) % (size - 1) + 1
    return offset, skip


class MaglevBuild:
    """A Maglev lookup table (Eisenbud et al., NSDI 2016), weighted as Envoy does it, built in steps.

    Each server walks its own permutation of the table (offset + j * skip mod size, both
    from its name) and claims the first free entry on its turn; a server of weight w
    takes a turn on w/max(weights) of the rounds. `table` maps entry -> index into
    `names`. It depends only on names and weights, so every appliance builds the same one.

    Filling 65537 entries takes some half a million probes (several milliseconds):
    `step(budget)` does at most about `budget` of them and says whether the table is
    complete, so an event loop can build it between other work (see `Maglev`).
    """

    __slots__ = ("size", "weights", "pos", "skips", "target", "maxw", "table", "filled", "iteration", "turn")

    def __init__(self, names: Sequence[str], weights: Sequence[int], size: int = MAGLEV_TABLE_SIZE) -> None:
        self.size = size
        self.weights = list(weights)
        self.table = [-1] * size
        self.pos: list[int] = []
        self.skips: list[int] = []
        for name in names:
            offset, skip = _name_hashes(name, size)
            self.pos.append(offset)
            self.skips.append(skip)
        self.maxw = max(self.weights) if self.weights else 0
        self.target = [0] * len(self.weights)
        self.filled = 0 if self.weights else size  # no server: nothing to fill
        self.iteration = 1
        self.turn = 0  # the next server to take a turn in this round

    @property
    def done(self) -> bool:
        return self.filled == self.size

    def step(self, budget: int) -> bool:
        """Fill entries until about `budget` probes are spent; True once the table is complete."""
        size = self.size
        n = len(self.weights)
        table, pos, skips, target, weights = self.table, self.pos, self.skips, self.target, self.weights
        maxw = self.maxw
        filled = self.filled
        iteration = self.iteration
        i = self.turn
        spent = 0
        while filled < size and spent < budget:
            if i == n:
                i = 0
                iteration += 1
            if iteration * weights[i] < target[i]:  # not this server's round (weights)
                i += 1
                spent += 1
                continue
            target[i] += maxw
            c = pos[i]
            skip = skips[i]
            while table[c] >= 0:
                c += skip
                if c >= size:
                    c -= size
                spent += 1
            table[c] = i
            c += skip
            pos[i] = c - size if c >= size else c
            filled += 1
            spent += 1
            i += 1
        self.filled = filled
        self.iteration = iteration
        self.turn = i
        return filled == size


def maglev_table(names: Sequence[str], weights: Sequence[int], size: int = MAGLEV_TABLE_SIZE) -> list[int]:
    """The complete `MaglevBuild` table, at once: entry -> index into `names`."""
    build = MaglevBuild(names, weights, size)
    build.step(1 << 62)
    return build.table


MAGLEV_STEP_PROBES = 25_000  # probes per event-loop turn while a table is built (about a millisecond)
# Tables kept by server set and weights: the one in use and the one before (half a MiB each at
# the default size), so a server going down and up again costs no build.
MAGLEV_KEPT_TABLES = 2


class Maglev(_Base):
    """Maglev consistent hashing on `hash_on`; when one of N servers leaves, about 1/N of keys move.

    A change of the server set or of a weight needs a new table. Under a running event
    loop it is built in steps of `MAGLEV_STEP_PROBES` probes, one per loop turn, so a
    state change never holds up traffic for the whole build (a new pool, at start or
    reload, builds its first table at once). Until it is complete the previous table
    serves, and its entries for servers that are no longer usable are passed over as
    any unusable server is. Without a previous table (the first build under a loop after
    every server was down), a plain hash over the available servers serves meanwhile.
    The table before the current one is kept (by server set and weights), so a server
    going down and up again costs no build.
    """

    def __init__(
        self,
        servers: Sequence["RealServerRuntime"],
        key: Callable[[PickContext], str] | None = None,
        size: int = MAGLEV_TABLE_SIZE,
    ):
        super().__init__(servers)
        self.key = key or (lambda ctx: ctx.client_ip)
        self.size = size
        self.live: list["RealServerRuntime"] = []
        self.table: list["RealServerRuntime"] = []
        # signature -> table, the one in use last; oldest first
        self._kept: dict[tuple[tuple[str, int], ...], list["RealServerRuntime"]] = {}
        self._building: tuple[tuple[tuple[str, int], ...], MaglevBuild] | None = None
        self.steps = 0  # loop turns spent on builds (for tests and the curious)
        self._rebuild(at_once=True)  # a new pool (start, reload) serves from its own table at once

    def rebuild(self) -> None:
        self._rebuild(at_once=False)

    def _rebuild(self, at_once: bool) -> None:
        live = sorted((s for s in self.servers if s.available), key=lambda s: s.name)
        self.live = live
        signature = tuple((s.name, s.eweight) for s in live)
        if not live:
            self._building = None
            self.table = []
            return
        kept = self._kept.get(signature)
        if kept is not None:
            self._building = None
            self._use(signature, kept)
            return
        if self._building is not None and self._building[0] == signature:
            return  # already under way
        weights = _reduced([s.eweight for s in live], 1 << 30)
        build = MaglevBuild([s.name for s in live], weights, self.size)
        loop: asyncio.AbstractEventLoop | None = None
        if not at_once:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (tools, tests of the method itself)
                pass
        if loop is None:
            build.step(1 << 62)
            self._building = None
            self._install(signature, build.table)
            return
        self._building = (signature, build)
        loop.call_soon(self._continue, build)

    def _continue(self, build: MaglevBuild) -> None:
        current = self._building
        if current is None or current[1] is not build:
            return  # superseded by a later change
        self.steps += 1
        if not build.done:
            build.step(MAGLEV_STEP_PROBES)
            asyncio.get_running_loop().call_soon(self._continue, build)  # the table is installed a turn later
            return
        self._building = None
        self._install(current[0], build.table)

    def _install(self, signature: tuple[tuple[str, int], ...], indices: list[int]) -> None:
        by_name = {s.name: s for s in self.servers}
        members = [by_name[name] for name, _ in signature]
        self._use(signature, [members[i] for i in indices])

    def _use(self, signature: tuple[tuple[str, int], ...], table: list["RealServerRuntime"]) -> None:
        self.table = table
        kept = self._kept
        kept.pop(signature, None)
        kept[signature] = table
        while len(kept) > MAGLEV_KEPT_TABLES:
            del kept[next(iter(kept))]

    def pick(self, ctx: PickContext, exclude: frozenset[str] | set[str]) -> "RealServerRuntime | None":
        table = self.table
        if not table:
            live = self.live
            if not live:
                return None
            # the first table is still being built: a plain hash over the available servers
            return _scan(live, key_hash(self.key(ctx)) % len(live), exclude)
        i = key_hash(self.key(ctx)) % self.size
        rs = table[i]
        if rs.usable and rs.name not in exclude:
            return rs
        size = self.size
        for k in range(1, MAGLEV_PROBES + 1):
            rs = table[(i + k) % size]
            if rs.usable and rs.name not in exclude:
                return rs
        return _scan(self.live, i, exclude)


# --------------------------------------------------------------------------- factory


def make_balancer(pool: "Pool", servers: Sequence["RealServerRuntime"]) -> Balancer:
    method = pool.method
    if method == "least-conn":
        return LeastConn(servers)
    if method == "random-two":
        return RandomTwo(servers)
    if method in ("source-hash", "uri-hash"):
        key = key_function("source" if method == "source-hash" else "uri")
        if pool.hash_type == "consistent":  # HAProxy's hash-type consistent: few keys move on a change
            return Maglev(servers, key)
        return HashMap(servers, key)
    if method == "maglev":
        return Maglev(servers, key_function(pool.hash_on))
    return RoundRobin(servers)
