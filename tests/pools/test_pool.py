"""Pool runtime: server states, backup, max_connections, slow start, view. Pure, no sockets."""

from __future__ import annotations

import collections

import pytest
from pool_helpers import Clock, make_pool, server

from adc.config.model import HealthCheck, ServerState
from adc.pools.balancers import WEIGHT_SCALE, PickContext
from adc.pools.pool import CheckResult

METHODS = ["round-robin", "least-conn", "random-two", "source-hash", "uri-hash", "maglev"]


def ctx(i: int) -> PickContext:
    return PickContext(client_ip=f"192.168.{i // 256 % 256}.{i % 256}", uri=f"/u{i}")


def names(pool, picks: int = 400, take: bool = True) -> collections.Counter:
    out: collections.Counter = collections.Counter()
    for i in range(picks):
        rs = pool.pick(ctx(i))
        out[rs.name if rs else None] += 1
        if rs is not None and take:
            pool.take(rs)
    return out


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("state", [ServerState.DISABLED, ServerState.DRAINING])
def test_disabled_and_draining_get_no_new_picks(method, state):
    pool = make_pool(3, method)
    s1 = pool.servers["s1"]
    pool.take(s1)  # an established connection
    pool.set_state("s1", state)
    assert "s1" not in names(pool)
    assert s1.active == 1  # the established one stays
    pool.drop(s1)
    assert s1.active == 0
    pool.set_state("s1", ServerState.ENABLED)
    assert "s1" in names(pool)


@pytest.mark.parametrize("method", METHODS)
def test_backup_only_when_every_primary_is_unusable(method):
    pool = make_pool([server("p1"), server("p2"), server("b1", backup=True), server("b2", backup=True)], method)
    assert set(names(pool)) == {"p1", "p2"}
    pool.set_health("p1", False)
    assert set(names(pool)) == {"p2"}
    pool.set_state("p2", ServerState.DRAINING)
    assert set(names(pool)) == {"b1", "b2"}
    pool.set_health("p1", True)
    assert set(names(pool)) == {"p1"}
    pool.set_health("p1", False)
    pool.set_health("b1", False)
    pool.set_state("b2", ServerState.DISABLED)
    assert names(pool, 5) == {None: 5}


@pytest.mark.parametrize("method", METHODS)
def test_max_connections_sends_overflow_elsewhere(method):
    pool = make_pool([server("a", max_connections=2), server("b"), server("c", backup=True)], method)
    a, b = pool.servers["a"], pool.servers["b"]
    pool.take(a)
    pool.take(a)
    assert not a.usable and a.available
    assert names(pool, 100) == {"b": 100}
    assert b.active == 100
    pool.drop(a)
    counts = names(pool, 200, take=False)
    assert counts["a"] > 0
    # both primaries full: the backup takes the overflow
    pool.set_state("b", ServerState.DISABLED)
    pool.take(a)
    assert names(pool, 10, take=False) == {"c": 10}


def test_set_weight_rejects_negative():
    pool = make_pool(2)
    with pytest.raises(ValueError):
        pool.set_weight("s0", -1)


def test_slow_start_ramps_linearly_after_coming_back():
    clock = Clock()
    pool = make_pool([server("a"), server("b")], "round-robin", clock=clock, slow_start=10.0,
                     health=HealthCheck(type="tcp"))
    a = pool.servers["a"]
    pool.start_healthy()
    assert a.eweight == WEIGHT_SCALE and a.effective_weight == 1 and not a.ramping  # never at process start
    pool.set_health("a", False, CheckResult(False, "refused"))
    assert "a" not in names(pool, 10)
    pool.set_health("a", True, CheckResult(True, "tcp connect"))
    assert a.ramping
    weights = []
    for _ in range(5):
        clock.advance(2.5)
        pool.pick(PickContext())
        weights.append(a.eweight)
    # weight 1 still ramps: 1/4, 2/4, 3/4 of the scaled weight, then full
    assert weights[:3] == [WEIGHT_SCALE // 4, WEIGHT_SCALE // 2, 3 * WEIGHT_SCALE // 4]
    assert weights[3:] == [WEIGHT_SCALE, WEIGHT_SCALE]
    assert not a.ramping and a.view()["effective_weight"] == 1


def test_slow_start_shifts_traffic_gradually():
    clock = Clock()
    pool = make_pool([server("a", weight=4), server("b", weight=4)], "round-robin", clock=clock, slow_start=8.0)
    pool.set_health("a", False)
    pool.set_health("a", True)
    clock.advance(2.0)  # a at 1/4 of its weight: about 1 in 5 picks
    counts = names(pool, 1000, take=False)
    assert 150 <= counts["a"] <= 250, counts
    assert pool.servers["a"].effective_weight == 1
    clock.advance(6.0)
    counts = names(pool, 1000, take=False)
    assert counts["a"] == 500


def test_slow_start_after_enable_and_view():
    clock = Clock()
    pool = make_pool([server("a", weight=3), server("b")], "least-conn", clock=clock, slow_start=4.0)
    pool.set_state("a", ServerState.DISABLED)
    pool.set_state("a", ServerState.ENABLED)
    clock.advance(1.0)
    pool.tick()
    view = pool.view()["servers"][0]
    assert view["slow_start"] is True
    assert view["effective_weight"] == 0.75
    pool.set_state("a", ServerState.DRAINING)  # leaving stops the ramp
    assert pool.servers["a"].eweight == 3 * WEIGHT_SCALE and not pool.servers["a"].ramping


def test_no_slow_start_when_not_configured_or_initial():
    pool = make_pool(2)
    pool.set_health("s0", False)
    pool.set_health("s0", True)
    assert not pool.servers["s0"].ramping
    clock = Clock()
    pool = make_pool(2, clock=clock, slow_start=5.0)
    pool.set_health("s0", False)
    pool.set_health("s0", True, initial=True)  # carried over a reload
    assert not pool.servers["s0"].ramping


def test_set_health_keeps_last_check_and_reports_transitions():
    pool = make_pool(2)
    r1 = CheckResult(True, "HTTP 200", 0.002)
    assert pool.set_health("s0", True, r1) is False
    assert pool.servers["s0"].last_check is r1
    r2 = CheckResult(False, "HTTP 500 (expected 200)", 0.003)
    assert pool.set_health("s0", False, r2) is True
    view = pool.servers["s0"].view()
    assert view["status"] == "down" and view["last_check"]["reason"] == "HTTP 500 (expected 200)"
    assert view["last_check"]["latency_ms"] == 3.0


def test_connect_failed_reaches_the_hook():
    pool = make_pool(2)
    seen = []
    pool.on_connect_failure = lambda rs, result: seen.append((rs.name, result.reason))
    pool.connect_failed(pool.servers["s1"], CheckResult(False, "live traffic: connection refused"))
    assert seen == [("s1", "live traffic: connection refused")]
