"""Microseconds per pick for each balancing method with 2, 16 and 256 real servers.

    python bench/picks.py [--picks N]

Each pick is followed by take() and, for half of them, a later drop(), so least-conn's
index sees realistic churn. Keys vary per pick (client address, URI), as with real
traffic. Also times a rebuild (what a state or weight change costs). Not a test.
"""

from __future__ import annotations

import argparse
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


def rebuild_ms(pool: PoolRuntime) -> float:
    name = next(iter(pool.servers))
    start = time.perf_counter()
    pool.set_state(name, ServerState.DISABLED)
    pool.set_state(name, ServerState.ENABLED)
    return (time.perf_counter() - start) / 2 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picks", type=int, default=100_000)
    args = parser.parse_args()
    rows = []
    for method in METHODS:
        rows.append((method, [per_pick(make(method, n), args.picks) for n in SIZES],
                     [rebuild_ms(make(method, n)) for n in SIZES]))
    rows.append(("rr + source-ip", [per_pick(make("round-robin", n, Persistence("source-ip")), args.picks)
                                     for n in SIZES], [rebuild_ms(make("round-robin", n)) for n in SIZES]))
    head = f"{'method':<16}" + "".join(f"{f'{n} srv µs/pick':>16}" for n in SIZES)
    head += "".join(f"{f'{n} srv rebuild ms':>19}" for n in SIZES)
    print(head)
    print("-" * len(head))
    for method, picks, rebuilds in rows:
        print(f"{method:<16}" + "".join(f"{v:>16.2f}" for v in picks) + "".join(f"{v:>19.2f}" for v in rebuilds))
    print(f"\n({args.picks} picks per cell, each with take(), half dropped at once; weights 1..3)")


if __name__ == "__main__":
    main()
