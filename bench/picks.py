"""Microseconds per pick for each balancing method with 2, 16 and 256 real servers.

    python bench/picks.py [--picks N]

Each pick is followed by take() and, for half of them, a later drop(), so least-conn's
index sees realistic churn. Keys vary per pick (client address, URI), as with real
traffic. Also times what a state change costs (a server leaving, then coming back): the
longest the event loop is held in one turn, by the change itself or by a step of the
index rebuild it starts (maglev builds its table over several turns). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from adc.config.model import Address, Persistence, Pool, RealServer, ServerState
from adc.pools.balancers import PickContext
from adc.pools.pool import PoolRuntime
from adc.runtime.stats import Stats

METHODS = ("round-robin", "least-conn", "random-two", "source-hash", "uri-hash", "maglev")
SIZES = (2, 16, 256)


def make(method: str, n: int, persistence: Persistence | None = None) -> PoolRuntime:
    servers = tuple(
        RealServer(f"s{i}", Address("10.0.0.1", 10000 + i), weight=1 + i % 3) for i in range(n)
    )
    return PoolRuntime(Pool("bench", servers, method=method, persistence=persistence), Stats())


def per_pick(pool: PoolRuntime, picks: int) -> float:
    contexts = [PickContext(client_ip=f"10.{i >> 8 & 255}.{i & 255}.1", uri=f"/item/{i}") for i in range(1024)]
    held = []
    pick, take, drop = pool.pick, pool.take, pool.drop
    start = time.perf_counter()
    for i in range(picks):
        rs = pick(contexts[i & 1023])
        take(rs)
        if i & 1:
            drop(rs)
        else:
            held.append(rs)
            if len(held) > 64:
                drop(held.pop(0))
    elapsed = time.perf_counter() - start
    return elapsed / picks * 1e6


def longest_hold_ms(method: str, n: int) -> float:
    """The longest event-loop turn a server leaving and coming back costs, in ms."""

    async def run() -> float:
        pool = make(method, n)
        name = next(iter(pool.servers))
        worst = 0.0
        for state in (ServerState.DISABLED, ServerState.ENABLED):
            start = time.perf_counter()
            pool.set_state(name, state)
            worst = max(worst, time.perf_counter() - start)
            for _ in range(10_000):  # the rebuild's steps, one per turn (bounded)
                start = time.perf_counter()
                await asyncio.sleep(0)
                worst = max(worst, time.perf_counter() - start)
                if getattr(pool.primary, "_building", None) is None:
                    break
        return worst * 1000

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picks", type=int, default=100_000)
    args = parser.parse_args()
    rows = []
    for method in METHODS:
        rows.append((method, [per_pick(make(method, n), args.picks) for n in SIZES],
                     [longest_hold_ms(method, n) for n in SIZES]))
    rows.append(("rr + source-ip", [per_pick(make("round-robin", n, Persistence("source-ip")), args.picks)
                                     for n in SIZES], [longest_hold_ms("round-robin", n) for n in SIZES]))
    head = f"{'method':<16}" + "".join(f"{f'{n} srv µs/pick':>16}" for n in SIZES)
    head += "".join(f"{f'{n} srv hold ms':>16}" for n in SIZES)
    print(head)
    print("-" * len(head))
    for method, picks, rebuilds in rows:
        print(f"{method:<16}" + "".join(f"{v:>16.2f}" for v in picks) + "".join(f"{v:>16.2f}" for v in rebuilds))
    print(f"\n({args.picks} picks per cell, each with take(), half dropped at once; weights 1..3;")
    print(" hold: the longest event-loop turn spent on one server leaving and coming back)")


if __name__ == "__main__":
    main()
