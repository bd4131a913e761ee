"""Rise/fall counting (pure) and the health monitor against real servers on loopback."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest
from health_helpers import Spot, pool_for

from adc.config.model import Address, HealthCheck, Pool, RealServer
from adc.health.monitor import HealthMonitor, RiseFall, probe_interval
from adc.pools.balancers import PickContext
from adc.pools.pool import CheckResult, PoolRuntime
from adc.runtime.events import EventLog
from adc.runtime.stats import Stats

# ------------------------------------------------------------------ pure rise/fall


def run(rf: RiseFall, results: str) -> list[tuple[bool, bool]]:
    return [(rf.record(c == "+"), rf.up) for c in results]


def test_down_after_fall_failures_in_a_row():
    rf = RiseFall(rise=2, fall=3)
    assert run(rf, "--+--") == [(False, True)] * 5  # a success in between resets the count
    assert run(rf, "-") == [(True, False)]


def test_up_after_rise_successes_in_a_row():
    rf = RiseFall(rise=2, fall=1, up=False)
    assert run(rf, "+-+") == [(False, False)] * 3
    assert run(rf, "+") == [(True, True)]
    assert run(rf, "+++") == [(False, True)] * 3
    assert run(rf, "-") == [(True, False)]


@pytest.mark.parametrize("rise,fall", [(1, 1), (3, 2), (5, 5)])
def test_transitions_alternate(rise, fall):
    rf = RiseFall(rise, fall)
    flips = []
    for i in range(200):
        ok = (i // 7) % 2 == 0
        if rf.record(ok):
            flips.append(rf.up)
    assert flips == [False, True] * (len(flips) // 2) + ([False] if len(flips) % 2 else [])


def test_probe_interval_follows_the_verdict():
    check = HealthCheck(interval=2.0, fast_interval=0.5, down_interval=10.0, rise=2, fall=3)
    rf = RiseFall(rise=2, fall=3)
    seen = []
    for result in "+--" "-" "+" "-" "+" "+":
        rf.record(result == "+")
        seen.append(probe_interval(check, rf))
    # up; failing; failing; down; answering; down again; answering; up
    assert seen == [2.0, 0.5, 0.5, 10.0, 0.5, 10.0, 0.5, 2.0]
    plain = HealthCheck(interval=2.0)  # neither set: always `interval`, as before
    assert probe_interval(plain, RiseFall(2, 3)) == 2.0
    assert probe_interval(plain, RiseFall(2, 3, up=False)) == 2.0
    failing = RiseFall(2, 3)
    failing.record(False)
    assert probe_interval(plain, failing) == 2.0


class NoJitter(random.Random):
    """First probe at once, every interval in full: a schedule a test can time."""

    def random(self) -> float:
        return 0.0


async def test_probes_come_faster_while_a_verdict_changes_and_at_their_own_pace_while_down():
    script = list("+--++")
    times: list[float] = []

    async def probe(check, pool, rs):
        times.append(time.monotonic())
        ok = script.pop(0) == "+" if script else True
        return CheckResult(ok, "scripted")

    check = HealthCheck(type="tcp", interval=0.3, fast_interval=0.02, down_interval=0.12, rise=2, fall=2)
    pool = make_runtime([("a", 1)], check)
    monitor = HealthMonitor({"p": pool}, EventLog(), probe=probe, rng=NoJitter())
    monitor.start()
    try:
        await wait_for(lambda: len(times) >= 6, 3.0)
    finally:
        await monitor.stop()
    gaps = [b - a for a, b in zip(times, times[1:])][:5]
    # after: up, 1st failure, down (2nd failure), 1st success while down, up again
    expected = [0.3, 0.02, 0.12, 0.02, 0.3]
    for gap, want in zip(gaps, expected):
        assert want - 0.005 <= gap < want + 0.07, (gaps, expected)
    assert pool.servers["a"].healthy


@pytest.mark.parametrize("fast", [0.02, None])
async def test_a_live_failure_brings_the_next_probe_forward_to_fast_interval(fast):
    times: list[float] = []

    async def probe(check, pool, rs):
        times.append(time.monotonic())
        return CheckResult(True, "scripted")

    check = HealthCheck(type="tcp", interval=5.0, fast_interval=fast, rise=1, fall=3)
    pool = make_runtime([("a", 1)], check)
    monitor = HealthMonitor({"p": pool}, EventLog(), probe=probe, rng=NoJitter())
    monitor.start()
    rs = pool.servers["a"]
    try:
        await wait_for(lambda: len(times) == 1, 1.0)
        pool.connect_failed(rs, CheckResult(False, "live traffic: connection refused"))
        assert rs.healthy and monitor.watches[("p", "a")].state.failures == 1
        if fast is None:  # no fast_interval: the schedule stays at `interval`
            await asyncio.sleep(0.3)
            assert len(times) == 1
            return
        await wait_for(lambda: len(times) == 2, 0.5)
        assert times[1] - times[0] < 0.25
        assert monitor.watches[("p", "a")].state.failures == 0  # the probe passed: back to `interval`
        await asyncio.sleep(0.3)
        assert len(times) == 2
    finally:
        await monitor.stop()


# ------------------------------------------------------------------ the monitor, real sockets

FAST = HealthCheck(type="tcp", interval=0.1, timeout=0.1, rise=2, fall=2)


async def wait_for(predicate, limit: float) -> float:
    """Seconds until predicate() held (polled every 10 ms), or fail after `limit`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit:
            raise AssertionError(f"not within {limit}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_killed_server_goes_down_and_comes_back(spots, caplog):
    caplog.set_level(logging.INFO, logger="adc.health")
    spot: Spot = await spots()
    other: Spot = await spots()
    pool = pool_for([spot.address, other.address], FAST)
    events = EventLog()
    monitor = HealthMonitor({"p": pool}, events)
    monitor.start()
    rs = pool.servers["s0"]
    try:
        await wait_for(lambda: rs.last_check is not None, 1.0)
        assert rs.healthy and rs.last_check.ok and rs.last_check.reason == "tcp connect"
        await spot.stop()
        bound = FAST.fall * FAST.interval + FAST.timeout
        took = await wait_for(lambda: not rs.healthy, bound + 0.15)  # + polling and scheduling slack
        assert not rs.usable
        assert all(pool.pick(PickContext()).name == "s1" for _ in range(10))
        down = events.recent()[0]
        assert down["kind"] == "health" and down["level"] == "warning"
        assert down["pool"] == "p" and down["server"] == "s0" and down["reason"] == "connection refused"
        assert "is DOWN" in down["message"] and "connection refused" in down["message"]
        assert any("is DOWN" in r.getMessage() for r in caplog.records)
        await spot.start()  # same port
        took = await wait_for(lambda: rs.healthy, FAST.rise * FAST.interval + FAST.timeout + 0.15)
        up = events.recent()[0]
        assert up["level"] == "info" and "is UP" in up["message"] and up["reason"] == "tcp connect"
        assert took >= 0
        assert pool.servers["s1"].healthy and len(events.recent()) == 2
    finally:
        await monitor.stop()
    assert all(w.task is None or w.task.done() for w in monitor.watches.values())


async def test_http_monitor_marks_a_500_server_down(spots):
    good = await spots(status=200)
    bad = await spots(status=500)
    check = HealthCheck(type="http", interval=0.05, timeout=0.2, rise=1, fall=1)
    pool = pool_for([good.address, bad.address], check)
    events = EventLog()
    monitor = HealthMonitor({"p": pool}, events)
    monitor.start()
    try:
        await wait_for(lambda: not pool.servers["s1"].healthy, 1.0)
        assert pool.servers["s1"].last_check.reason == "HTTP 500 (expected 200)"
        bad.status = 200
        await wait_for(lambda: pool.servers["s1"].healthy, 1.0)
        assert pool.servers["s0"].healthy
    finally:
        await monitor.stop()


async def never(check, pool, rs):
    await asyncio.Event().wait()  # a probe that never finishes: only live traffic counts
    raise AssertionError


async def test_live_connect_failures_count_against_a_server():
    pool = pool_for([Address("127.0.0.1", 1)], HealthCheck(type="tcp", rise=1, fall=3))
    events = EventLog()
    monitor = HealthMonitor({"p": pool}, events, probe=never)
    monitor.start()
    rs = pool.servers["s0"]
    try:
        assert pool.on_connect_failure is not None
        for i in range(3):
            assert rs.healthy
            pool.connect_failed(rs, CheckResult(False, "live traffic: connection refused"))
        assert not rs.healthy
        assert events.recent()[0]["reason"] == "live traffic: connection refused"
        assert rs.last_check.reason == "live traffic: connection refused"
    finally:
        await monitor.stop()
    assert pool.on_connect_failure is None


async def test_a_local_failure_is_no_verdict(caplog):
    # failures of the appliance's own resources say nothing about the server: no count, a log line
    script = ["local"] * 3 + ["-"] * 2
    seen: list[str] = []

    async def probe(check, pool, rs):
        if not script:
            await asyncio.Event().wait()  # no more results: the counts stay as they are
        kind = script.pop(0)
        seen.append(kind)
        if kind == "local":
            return CheckResult(False, "Too many open files (a local resource, not the server)", local=True)
        return CheckResult(False, "scripted")

    pool = make_runtime([("a", 1)], HealthCheck(type="tcp", interval=0.01, rise=1, fall=3))
    monitor = HealthMonitor({"p": pool}, EventLog(), probe=probe, rng=NoJitter())
    caplog.set_level(logging.WARNING, "adc.health")
    monitor.start()
    try:
        await wait_for(lambda: monitor.view()["p/a"]["failures"] == 2, 3.0)
        assert seen == ["local"] * 3 + ["-"] * 2
        rs = pool.servers["a"]
        assert rs.healthy  # two failures of the three `fall` needs: the local ones did not count
        assert rs.last_check is not None and rs.last_check.reason == "scripted"
        assert "health check not run: Too many open files (a local resource, not the server)" in caplog.text
    finally:
        await monitor.stop()


def make_runtime(servers: list[tuple[str, int]], check: HealthCheck | None, name: str = "p") -> PoolRuntime:
    cfg = Pool(name=name, servers=tuple(RealServer(n, Address("127.0.0.1", port)) for n, port in servers), health=check)
    return PoolRuntime(cfg, Stats())


async def test_replace_pools_keeps_unchanged_servers_and_restarts_changed_ones():
    probes: list[str] = []
    verdict = {"a": False, "b": True, "c": True, "d": True}

    async def probe(check, pool, rs):
        probes.append(rs.name)
        await asyncio.sleep(0)
        return CheckResult(verdict[rs.name], "scripted")

    check = HealthCheck(type="tcp", interval=0.02, timeout=0.1, rise=1, fall=1)
    first = make_runtime([("a", 1001), ("b", 1002), ("c", 1003)], check)
    events = EventLog()
    monitor = HealthMonitor({"p": first}, events, probe=probe)
    monitor.start()
    try:
        await wait_for(lambda: not first.servers["a"].healthy, 1.0)
        task_a = monitor.watches[("p", "a")].task
        task_c = monitor.watches[("p", "c")].task
        # reload: a unchanged (new runtime objects), b moved to another port, c removed, d added
        second = make_runtime([("a", 1001), ("b", 2002), ("d", 1004)], check)
        assert second.servers["a"].healthy  # a new object starts presumed up ...
        monitor.replace_pools({"p": second})
        assert not second.servers["a"].healthy  # ... but the verdict was carried over
        assert monitor.watches[("p", "a")].task is task_a and monitor.watches[("p", "a")].rs is second.servers["a"]
        assert ("p", "c") not in monitor.watches
        await asyncio.sleep(0)
        assert task_c.cancelled() or task_c.done()
        assert first.on_connect_failure is None and second.on_connect_failure is not None
        probes.clear()
        await wait_for(lambda: {"a", "b", "d"} <= set(probes), 1.0)
        assert "c" not in probes
        verdict["a"] = True
        await wait_for(lambda: second.servers["a"].healthy, 1.0)
        # the pool loses its health check: probes stop, servers are up
        verdict["b"] = False
        await wait_for(lambda: not second.servers["b"].healthy, 1.0)
        third = make_runtime([("a", 1001), ("b", 2002)], None)
        monitor.replace_pools({"p": third})
        assert monitor.watches == {}
        assert all(rs.healthy for rs in third.servers.values())
    finally:
        await monitor.stop()


async def test_stop_before_any_probe_and_view():
    pool = make_runtime([("a", 1)], HealthCheck(type="tcp", interval=60.0))
    monitor = HealthMonitor({"p": pool}, EventLog())
    monitor.start()
    assert set(monitor.view()) == {"p/a"}
    await monitor.stop()
    assert monitor.watches == {}
