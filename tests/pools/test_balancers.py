"""Balancing methods: distribution, weights, exclusion, index maintenance. No sockets."""

from __future__ import annotations

import asyncio
import collections
import random

import pytest
from pool_helpers import make_pool, server

from adc.config.model import ServerState
from adc.pools.balancers import MAGLEV_STEP_PROBES, MAGLEV_TABLE_SIZE, MaglevBuild, PickContext, key_function, maglev_table

METHODS = ["round-robin", "least-conn", "random-two", "source-hash", "uri-hash", "maglev"]


def ctx_for(i: int) -> PickContext:
    return PickContext(client_ip=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", uri=f"/item/{i}?x=1", host=f"h{i}.test")


def spread(pool, picks: int, take: bool = False) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for i in range(picks):
        rs = pool.pick(ctx_for(i))
        assert rs is not None
        counts[rs.name] += 1
        if take:
            pool.take(rs)
    return counts


# ------------------------------------------------------------------ distribution, equal weights


@pytest.mark.parametrize("method,tolerance", [
    ("round-robin", 0.0),  # exact
    ("least-conn", 0.0),  # exact when every pick is taken
    ("random-two", 0.10),
    ("source-hash", 0.10),
    ("uri-hash", 0.10),
    ("maglev", 0.10),
])
def test_equal_weights_spread_evenly(method, tolerance):
    pool = make_pool(4, method)
    picks = 8000
    counts = spread(pool, picks, take=(method == "least-conn"))
    expected = picks / 4
    assert set(counts) == {"s0", "s1", "s2", "s3"}
    for name, n in counts.items():
        assert abs(n - expected) <= tolerance * expected + 1, (name, counts)


@pytest.mark.parametrize("method,tolerance", [
    ("round-robin", 0.0),
    ("least-conn", 0.01),
    ("random-two", 0.10),
    ("source-hash", 0.10),
    ("maglev", 0.10),
])
def test_weights_are_honoured(method, tolerance):
    pool = make_pool([server("a", weight=1), server("b", weight=2), server("c", weight=5)], method)
    picks = 8000
    counts = spread(pool, picks, take=(method == "least-conn"))
    for name, w in (("a", 1), ("b", 2), ("c", 5)):
        expected = picks * w / 8
        assert abs(counts[name] - expected) <= tolerance * expected + 1, counts


def test_round_robin_is_smooth():
    pool = make_pool([server("a", weight=5), server("b", weight=1), server("c", weight=1)])
    seq = "".join(pool.pick(PickContext()).name for _ in range(70))
    assert seq.count("a") == 50 and seq.count("b") == 10 and seq.count("c") == 10
    assert seq[:7] == "aabacaa"  # interleaved (nginx's smooth weighted round-robin), not a burst of five
    assert "aaaaa" not in seq


def test_least_conn_prefers_the_least_loaded():
    pool = make_pool(3, "least-conn")
    s0 = pool.servers["s0"]
    for _ in range(10):
        pool.take(s0)
    counts = spread(pool, 10, take=True)
    assert counts == {"s1": 5, "s2": 5}
    for _ in range(10):
        pool.drop(s0)
    assert pool.pick(PickContext()).name == "s0"


def test_least_conn_reindexes_when_active_changes_behind_its_back():
    pool = make_pool(2, "least-conn")
    pool.servers["s0"].active = 50  # changed without take(): the pick re-keys it
    assert pool.pick(PickContext()).name == "s1"


def test_least_conn_heap_stays_bounded():
    pool = make_pool(4, "least-conn")
    for i in range(5000):
        rs = pool.pick(PickContext())
        pool.take(rs)
        if i % 2:
            pool.drop(rs)
    assert len(pool.primary.heap) <= 4 * 4 + 64


def test_random_two_avoids_loaded_servers():
    pool = make_pool(4, "random-two")
    busy = pool.servers["s0"]
    for _ in range(100):
        pool.take(busy)
    counts = spread(pool, 4000)
    # s0 wins only when drawn twice: about 1/16 of picks
    assert counts["s0"] < 4000 * 0.1


# ------------------------------------------------------------------ hashing


def test_source_hash_is_sticky_per_client():
    pool = make_pool(5, "source-hash")
    for i in range(200):
        first = pool.pick(ctx_for(i)).name
        assert all(pool.pick(ctx_for(i)).name == first for _ in range(3))


def test_uri_hash_ignores_the_query():
    pool = make_pool(5, "uri-hash")
    for i in range(100):
        a = pool.pick(PickContext(uri=f"/p/{i}?a=1")).name
        assert pool.pick(PickContext(uri=f"/p/{i}?b=2", client_ip="1.2.3.4")).name == a


def keys_moved(pool, keys) -> tuple[int, int, list[str]]:
    """(keys that moved, keys s3 had, picks after) when server s3 is disabled."""
    before = [pool.pick(k).name for k in keys]
    pool.set_state("s3", ServerState.DISABLED)
    after = [pool.pick(k).name for k in keys]
    return sum(1 for a, b in zip(before, after) if a != b), sum(1 for a in before if a == "s3"), after


@pytest.mark.parametrize("n", [5, 10, 16, 40])
def test_maglev_moves_few_keys_when_a_server_leaves(n):
    keys = [ctx_for(i) for i in range(20000)]
    moved, gone, after = keys_moved(make_pool(n, "maglev"), keys)
    assert moved >= gone  # every key of the removed server moved
    assert moved <= 1.2 * len(keys) / n, (moved, len(keys) / n)
    assert all(b != "s3" for b in after)


@pytest.mark.parametrize("method", ["source-hash", "uri-hash"])
def test_hash_type_consistent_moves_few_keys_map_based_moves_most(method):
    n, keys = 10, [ctx_for(i) for i in range(20000)]
    moved, gone, after = keys_moved(make_pool(n, method, hash_type="consistent"), keys)
    assert gone <= moved <= 1.2 * len(keys) / n and "s3" not in after
    map_moved, gone, after = keys_moved(make_pool(n, method), keys)  # map-based, the default
    assert map_moved > 2.5 * moved and "s3" not in after  # here about 30% of the keys, against 10%
    # consistent source-hash is the maglev method on the client address
    consistent = make_pool(n, method, hash_type="consistent")
    maglev = make_pool(n, "maglev", hash_on="source" if method == "source-hash" else "uri")
    assert all(consistent.pick(k).name == maglev.pick(k).name for k in keys[:2000])


def test_maglev_table_is_balanced_and_order_independent():
    names = [f"n{i}" for i in range(7)]
    t1 = maglev_table(names, [1] * 7)
    counts = collections.Counter(t1)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert len(t1) == MAGLEV_TABLE_SIZE
    # two appliances listing the servers in another order agree on every key
    a = make_pool([server(f"n{i}", 9000 + i) for i in range(7)], "maglev")
    b = make_pool([server(f"n{i}", 9000 + i) for i in reversed(range(7))], "maglev")
    assert all(a.pick(ctx_for(i)).name == b.pick(ctx_for(i)).name for i in range(2000))


def test_maglev_build_in_steps_equals_the_build_at_once():
    names, weights = [f"n{i}" for i in range(9)], [3, 1, 1, 2, 5, 1, 1, 1, 4]
    build = MaglevBuild(names, weights)
    steps = 1
    while not build.step(MAGLEV_STEP_PROBES):
        steps += 1
        assert 0 < build.filled < MAGLEV_TABLE_SIZE
    assert steps > 2  # a real table does not fit in one step
    assert build.table == maglev_table(names, weights)


async def test_maglev_rebuilds_between_loop_turns_and_serves_meanwhile():
    pool = make_pool(10, "maglev")  # a new pool builds at once, even under a loop
    maglev = pool.primary
    keys = [ctx_for(i) for i in range(3000)]
    before = [pool.pick(k).name for k in keys]
    pool.set_state("s3", ServerState.DISABLED)
    assert maglev._building is not None  # under way, not done in this turn
    during = [pool.pick(k).name for k in keys]
    assert "s3" not in during  # the previous table serves, passing over the disabled server
    assert all(d == b for d, b in zip(during, before) if b != "s3")
    turns = 0
    while maglev._building is not None:
        assert turns < 500
        await asyncio.sleep(0)
        turns += 1
    assert maglev.steps > 2 and turns >= maglev.steps
    reference = make_pool([server(f"s{i}", 10000 + i, state=ServerState.DISABLED if i == 3 else ServerState.ENABLED)
                           for i in range(10)], "maglev")
    assert [pool.pick(k).name for k in keys] == [reference.pick(k).name for k in keys]
    # back again: the table of the full set was kept, so no build
    steps = maglev.steps
    pool.set_state("s3", ServerState.ENABLED)
    assert maglev._building is None and maglev.steps == steps
    assert [pool.pick(k).name for k in keys] == before


async def test_maglev_serves_by_plain_hash_while_its_first_table_is_built():
    pool = make_pool(4, "maglev")
    for i in range(4):
        pool.set_health(f"s{i}", False)
    assert pool.pick(ctx_for(1)) is None
    pool.set_health("s2", True)
    assert pool.primary._building is not None and pool.primary.table == []
    assert all(pool.pick(ctx_for(i)).name == "s2" for i in range(50))
    while pool.primary._building is not None:
        await asyncio.sleep(0)
    assert len(pool.primary.table) == MAGLEV_TABLE_SIZE and pool.pick(ctx_for(1)).name == "s2"


@pytest.mark.parametrize("hash_on,ctx_a,ctx_b", [
    ("uri", PickContext(client_ip="1.1.1.1", uri="/x?1"), PickContext(client_ip="2.2.2.2", uri="/x?2")),
    ("host", PickContext(client_ip="1.1.1.1", host="API.test"), PickContext(client_ip="2.2.2.2", host="api.test")),
    ("header:X-User", PickContext(client_ip="1.1.1.1", header={"X-User": "bob"}.get),
     PickContext(client_ip="2.2.2.2", header={"X-User": "bob"}.get)),
    ("cookie:sid", PickContext(client_ip="1.1.1.1", cookie={"sid": "abc"}.get),
     PickContext(client_ip="2.2.2.2", cookie={"sid": "abc"}.get)),
])
def test_maglev_hash_on(hash_on, ctx_a, ctx_b):
    pool = make_pool(8, "maglev", hash_on=hash_on)
    assert pool.pick(ctx_a) is pool.pick(ctx_b)
    f = key_function(hash_on)
    assert f(ctx_a) == f(ctx_b)


def test_hash_key_falls_back_to_the_client_address():
    f = key_function("header:X-User")
    assert f(PickContext(client_ip="9.9.9.9")) == "9.9.9.9"
    assert f(PickContext(client_ip="9.9.9.9", header=lambda name: None)) == "9.9.9.9"
    assert key_function("cookie:a")(PickContext(client_ip="8.8.8.8", cookie=lambda n: "")) == "8.8.8.8"


# ------------------------------------------------------------------ every method: exclude, weight 0, index updates


@pytest.mark.parametrize("method", METHODS)
def test_exclude_is_respected(method):
    pool = make_pool(3, method)
    for i in range(300):
        rs = pool.pick(ctx_for(i), {"s0", "s1"})
        assert rs is not None and rs.name == "s2"
    assert pool.pick(ctx_for(1), {"s0", "s1", "s2"}) is None


@pytest.mark.parametrize("method", METHODS)
def test_weight_changes_take_effect(method):
    pool = make_pool(3, method)
    pool.set_weight("s1", 0)
    counts = spread(pool, 600, take=True)
    assert "s1" not in counts
    pool.set_weight("s1", 1)
    pool.set_weight("s0", 0)
    pool.set_weight("s2", 0)
    assert spread(pool, 50, take=True) == {"s1": 50}


@pytest.mark.parametrize("method", METHODS)
def test_no_server_gives_none(method):
    pool = make_pool(2, method)
    pool.set_weight("s0", 0)
    pool.set_weight("s1", 0)
    assert pool.pick(PickContext(client_ip="1.2.3.4")) is None


@pytest.mark.parametrize("method", METHODS)
def test_random_churn_keeps_picks_valid(method):
    """Random state, weight, health and load changes: every pick is a usable server or None."""
    rng = random.Random(7)
    from adc.config.model import ServerState

    pool = make_pool([server(f"s{i}", 9100 + i, weight=rng.randint(1, 4), max_connections=rng.choice([0, 3]))
                      for i in range(6)], method)
    taken = []
    for step in range(3000):
        op = rng.random()
        name = f"s{rng.randrange(6)}"
        if op < 0.05:
            pool.set_state(name, rng.choice(list(ServerState)))
        elif op < 0.08:
            pool.set_weight(name, rng.randint(0, 3))
        elif op < 0.12:
            pool.set_health(name, rng.random() < 0.6)
        elif op < 0.5 and taken:
            pool.drop(taken.pop(rng.randrange(len(taken))))
        else:
            rs = pool.pick(ctx_for(step))
            if rs is None:
                assert not any(s.usable for s in pool.servers.values())
            else:
                assert rs.usable
                pool.take(rs)
                taken.append(rs)
