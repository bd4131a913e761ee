"""Persistence: source-ip table and cookie ids, through the pool's pick path. Pure, no sockets."""

from __future__ import annotations

import pytest
from pool_helpers import Clock, make_pool, server

from adc.config.model import Persistence, ServerState
from adc.pools.balancers import PickContext
from adc.pools.persistence import SourceIpTable, server_cookie_id

METHODS = ["round-robin", "least-conn", "random-two", "maglev"]


def test_source_ip_table_expires_idle_entries():
    clock = Clock()
    table = SourceIpTable(timeout=10.0, max_entries=100, clock=clock)
    table.record("1.1.1.1", "a")
    clock.advance(9.0)
    assert table.lookup("1.1.1.1") == "a"
    table.record("1.1.1.1", "a")  # use refreshes the lifetime
    clock.advance(9.0)
    assert table.lookup("1.1.1.1") == "a"
    clock.advance(1.0)
    assert table.lookup("1.1.1.1") is None
    assert len(table) == 0


def test_source_ip_table_is_bounded_lru():
    clock = Clock()
    table = SourceIpTable(timeout=600.0, max_entries=3, clock=clock)
    for ip in ("1", "2", "3"):
        table.record(ip, "a")
    table.record("1", "b")  # 1 is now the most recent
    table.record("4", "c")
    assert len(table) == 3
    assert table.lookup("2") is None
    assert table.lookup("1") == "b" and table.lookup("4") == "c"


def test_source_ip_table_drops_expired_entries_as_it_goes():
    clock = Clock()
    table = SourceIpTable(timeout=1.0, max_entries=10_000, clock=clock)
    for i in range(100):
        table.record(f"10.0.0.{i}", "a")
    clock.advance(2.0)
    for i in range(30):
        table.record(f"10.1.0.{i}", "a")
    assert len(table) <= 100 + 30 - 30 * 4 + 30


@pytest.mark.parametrize("method", METHODS)
def test_source_ip_persistence_through_pick(method):
    clock = Clock()
    pool = make_pool(4, method, clock=clock, persistence=Persistence(type="source-ip", timeout=60.0))
    first = {}
    for i in range(50):
        c = PickContext(client_ip=f"10.0.0.{i}")
        rs = pool.pick(c)
        pool.take(rs)
        first[i] = rs.name
    for _ in range(3):
        for i in range(50):
            assert pool.pick(PickContext(client_ip=f"10.0.0.{i}")).name == first[i]
    # the remembered server leaves: the client moves, and stays on the new one
    victim = first[0]
    pool.set_state(victim, ServerState.DRAINING)
    moved = pool.pick(PickContext(client_ip="10.0.0.0"))
    assert moved.name != victim
    pool.set_state(victim, ServerState.ENABLED)
    assert pool.pick(PickContext(client_ip="10.0.0.0")).name == moved.name
    # exclude (a failed connect) wins over persistence
    assert pool.pick(PickContext(client_ip="10.0.0.0"), {moved.name}).name != moved.name
    clock.advance(61.0)
    assert pool.source_table.lookup("10.0.0.1") is None


def test_cookie_ids_are_opaque_and_stable():
    sid = server_cookie_id("web", "web1", server("web1", 9001).address)
    assert "web1" not in sid and "9001" not in sid and len(sid) == 16
    assert sid == server_cookie_id("web", "web1", server("web1", 9001).address)
    assert sid != server_cookie_id("web", "web2", server("web2", 9002).address)
    a = make_pool([server("x", 9001), server("y", 9002)], persistence=Persistence(type="cookie", name="SRV"))
    b = make_pool([server("y", 9002), server("x", 9001)], persistence=Persistence(type="cookie", name="SRV"))
    assert a.cookie_for(a.servers["x"]) == b.cookie_for(b.servers["x"])


def test_cookie_persistence_api():
    pool = make_pool(3, "round-robin", persistence=Persistence(type="cookie", name="ADCSRV"))
    assert pool.cookie_name == "ADCSRV" and pool.persistence_type == "cookie"
    s1 = pool.servers["s1"]
    header = pool.cookie_for(s1)
    assert header.startswith("ADCSRV=") and header.endswith("; Path=/; HttpOnly")
    value = header.split(";", 1)[0].split("=", 1)[1]
    assert pool.cookie_for(s1, current=value) is None  # the client already has it
    assert pool.cookie_for(pool.servers["s2"], current=value) is not None
    assert pool.persist_lookup(PickContext(), value) is s1
    assert pool.persist_lookup(PickContext(), "garbage") is None
    assert pool.persist_lookup(PickContext(), None) is None
    # pick() honours the cookie when the context can read cookies
    jar = {"ADCSRV": value}
    assert all(pool.pick(PickContext(cookie=jar.get)) is s1 for _ in range(20))
    # fall back cleanly: down, disabled, draining
    for change in (lambda: pool.set_health("s1", False), lambda: pool.set_state("s1", ServerState.DISABLED),
                   lambda: pool.set_state("s1", ServerState.DRAINING)):
        change()
        assert pool.persist_lookup(PickContext(), value) is None
        other = pool.pick(PickContext(cookie=jar.get))
        assert other is not None and other is not s1
        assert pool.cookie_for(other, current=value) is not None  # the engine re-binds the client
        pool.set_health("s1", True)
        pool.set_state("s1", ServerState.ENABLED)
    assert pool.persist_lookup(PickContext(), value) is s1


def test_persistence_leaves_a_backup_once_a_primary_is_back():
    pool = make_pool([server("p"), server("b", backup=True)], persistence=Persistence(type="cookie"))
    pool.set_health("p", False)
    rs = pool.pick(PickContext())
    assert rs.name == "b"
    value = pool.cookie_for(rs).split(";")[0].split("=")[1]
    assert pool.persist_lookup(PickContext(), value) is rs
    pool.set_health("p", True)
    assert pool.persist_lookup(PickContext(), value) is None
    assert pool.pick(PickContext(cookie={"ADCSRV": value}.get)).name == "p"


def test_no_persistence():
    pool = make_pool(2)
    assert pool.cookie_for(pool.servers["s0"]) is None
    assert pool.persist_lookup(PickContext(client_ip="1.2.3.4")) is None
    assert pool.cookie_name is None and pool.persistence_type is None
    pool.persist_record(PickContext(client_ip="1.2.3.4"), pool.servers["s0"])  # a no-op
