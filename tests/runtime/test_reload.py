"""Reload on real sockets: no refused connection, live sessions survive, invalid reload changes nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest

from adc.appliance import Appliance
from adc.config.load import load
from adc.engine.listener import ListenError, file_name
from adc.runtime.loglimit import LineLimit
from tests.conftest import free_port
from tests.runtime.conftest import PlainEcho, echo_roundtrip


def config(vs: dict[str, int], pools: dict[str, list[int]], method: str = "round-robin",
           vs_pool: dict[str, str] | None = None) -> str:
    out = []
    for name, port in vs.items():
        pool = (vs_pool or {}).get(name, "p")
        out.append(f'[virtual_server.{name}]\nlisten = "127.0.0.1:{port}"\nprofile = "tcp"\npool = "{pool}"\n')
    for name, ports in pools.items():
        servers = ", ".join(f'{{ name = "s{p}", address = "127.0.0.1:{p}" }}' for p in ports)
        out.append(f'[pool.{name}]\nmethod = "{method}"\nservers = [{servers}]\n')
    return "\n".join(out)


async def exchange(reader, writer, data: bytes) -> bytes:
    writer.write(data)
    return await asyncio.wait_for(reader.readexactly(len(data)), 5)


async def client_loop(port: int, stop: asyncio.Event, failures: list, max_count: int = 400,
                      max_time: float = 8.0) -> int:
    """Open, exchange, close; until `stop`, `max_count` or `max_time`. Records every failure."""
    done = 0
    deadline = time.monotonic() + max_time
    while not stop.is_set() and done < max_count and time.monotonic() < deadline:
        try:
            got = await echo_roundtrip(port, b"n%d" % done)
            if got != b"n%d" % done:
                failures.append(f"bad echo {got!r}")
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            failures.append(repr(exc))
        done += 1
    return done


async def test_reload_under_load_refuses_nothing_and_sessions_survive(harness, backends):
    b1, b2, b3 = [await backends(factory=None) for _ in range(3)]
    for b in (b1, b2, b3):
        b.server.close()
        await b.start(b.port, factory=lambda b=b: PlainEcho(b))
    port, port2 = free_port(), free_port()
    app = await harness.start(config({"web": port}, {"p": [b1.port]}))
    c = harness.client()
    # a session opened before the reloads
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await exchange(reader, writer, b"before") == b"before"
    stop = asyncio.Event()
    failures: list[str] = []
    loops = [asyncio.ensure_future(client_loop(port, stop, failures)) for _ in range(3)]
    await asyncio.sleep(0.05)
    # 1: the pool changes (servers added, method changed) and a virtual server is added
    harness.write(config({"web": port, "api": port2}, {"p": [b1.port, b2.port]}, method="least-conn"))
    code, body = await c.post("/api/v1/reload")
    assert code == 200 and body["ok"] and body["generation"] == 2, body
    assert any("pool p changed" in line for line in body["changes"])
    assert any("virtual_server api added" in line for line in body["changes"])
    await asyncio.sleep(0.05)
    assert await exchange(reader, writer, b"after-1") == b"after-1"
    assert await echo_roundtrip(port2) == b"ping"
    # 2: the original server is removed from the pool; the old session holds it and lives on
    harness.write(config({"web": port, "api": port2}, {"p": [b2.port, b3.port]}))
    code, body = await c.post("/api/v1/reload")
    assert code == 200 and body["generation"] == 3, body
    await asyncio.sleep(0.05)
    assert await exchange(reader, writer, b"after-2") == b"after-2"
    # 3: no changes at all
    code, body = await c.post("/api/v1/reload")
    assert code == 200 and body["changes"] == [] and body["generation"] == 4
    await asyncio.sleep(0.05)
    stop.set()
    counts = await asyncio.gather(*loops)
    assert failures == []
    assert sum(counts) > 10
    assert await exchange(reader, writer, b"end") == b"end"
    # new connections only go to the new servers
    before = b1.accepted
    for _ in range(4):
        assert await echo_roundtrip(port) == b"ping"
    assert b1.accepted == before
    writer.close()
    # counters of the kept pool carried over (one name, one Counters)
    assert app.stats.pools["p"].conn_total >= sum(counts)
    assert app.generation == 4


async def test_removed_virtual_server_lets_live_session_finish(harness, backends):
    b = await backends()
    port, port2 = free_port(), free_port()
    app = await harness.start(config({"web": port, "old": port2}, {"p": [b.port]}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port2)
    assert await exchange(reader, writer, b"x") == b"x"
    harness.write(config({"web": port}, {"p": [b.port]}))
    ok = await app.reload()
    assert ok["ok"] and any("virtual_server old removed" in line for line in ok["changes"]), ok
    # the listener is gone ...
    try:
        await echo_roundtrip(port2)
        refused = False
    except OSError:
        refused = True
    assert refused
    # ... the session is not
    assert await exchange(reader, writer, b"still") == b"still"
    assert await echo_roundtrip(port) == b"ping"
    writer.close()


async def test_held_back_log_lines_of_what_a_reload_removed_are_counted(harness, backends, caplog):
    """A pool removed by a reload has the count of log lines its flood limits held back
    written at once; a removed virtual server, a session of it still open, when it goes
    (here: when the appliance stops), not lost with the process."""
    b = await backends()
    port, port2 = free_port(), free_port()
    app = await harness.start(config({"web": port, "old": port2}, {"p": [b.port], "q": [b.port]}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port2)
    assert await exchange(reader, writer, b"x") == b"x"
    old = app.engine.virtual_servers["old"]
    caplog.set_level(logging.WARNING, logger="test.retired")
    pool_lines = app.engine.pools["q"].limits["test"] = LineLimit(logging.getLogger("test.retired"), burst=1,
                                                                  window=600)
    for i in range(2):
        pool_lines.log("pool line %d", i)
    harness.write(config({"web": port}, {"p": [b.port]}))
    assert (await app.reload())["ok"]
    assert old in app.engine.retired
    assert [r.getMessage() for r in caplog.records if r.name == "test.retired"] == [
        "pool line 0", "pool line 1 (and 1 more such line(s) in 600s, not written one by one)"
    ]
    caplog.clear()
    held = old.limits["test"] = LineLimit(logging.getLogger("test.retired"), burst=1, window=600)
    for i in range(3):
        held.log("line %d", i)
    await app.stop(grace=0)
    harness.appliance = None
    writer.close()
    assert [r.getMessage() for r in caplog.records if r.name == "test.retired"] == [
        "line 0", "line 2 (and 2 more such line(s) in 600s, not written one by one)"
    ]


async def test_address_moves_to_a_renamed_virtual_server_without_refusal(harness, backends):
    b = await backends()
    port = free_port()
    app = await harness.start(config({"one": port}, {"p": [b.port]}))
    stop = asyncio.Event()
    failures: list[str] = []
    loop_task = asyncio.ensure_future(client_loop(port, stop, failures))
    await asyncio.sleep(0.05)
    harness.write(config({"two": port}, {"p": [b.port]}))
    result = await app.reload()
    assert result["ok"], result
    await asyncio.sleep(0.1)
    stop.set()
    assert await loop_task > 0
    assert failures == []
    assert list(app.engine.virtual_servers) == ["two"]
    assert app.engine.virtual_servers["two"].addresses() == [f"127.0.0.1:{port}"]
    before = app.stats.virtual_servers["two"].conn_total
    assert await echo_roundtrip(port) == b"ping"
    assert app.stats.virtual_servers["two"].conn_total == before + 1


async def test_invalid_reload_keeps_the_running_configuration(harness, backends):
    b = await backends()
    port = free_port()
    app = await harness.start(config({"web": port}, {"p": [b.port]}))
    c = harness.client()
    harness.write(config({"web": port}, {"p": [b.port]}, method="fastest-first"))
    code, body = await c.post("/api/v1/reload")
    assert code == 422 and body["ok"] is False and body["generation"] == 1
    assert any("method" in e for e in body["errors"]), body
    # a new listener that cannot be opened: also nothing changes
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    busy = blocker.sockets[0].getsockname()[1]
    harness.write(config({"web": port, "api": busy}, {"p": [b.port]}, method="least-conn"))
    code, body = await c.post("/api/v1/reload")
    blocker.close()
    assert code == 422 and body["errors"] == [
        f"{file_name(harness.path)}: virtual_server.api.listen: cannot listen on 127.0.0.1:{busy}: address already in use"
    ], body
    assert app.generation == 1
    assert list(app.engine.virtual_servers) == ["web"]
    assert app.engine.pools["p"].config.method == "round-robin"
    assert await echo_roundtrip(port) == b"ping"
    events = (await c.get("/api/v1/events"))[1]["events"]
    assert events[0]["kind"] == "reload" and events[0]["level"] == "error"
    assert app.reloads_failed == 2


async def test_reload_names_the_file_as_at_start_and_lists_only_what_changed(harness, backends):
    b = await backends()
    port, port2 = free_port(), free_port()
    await harness.start(config({"web": port}, {"p": [b.port]}), display="appliance.toml")  # `adc run appliance.toml`
    c = harness.client()
    harness.write(config({"web": port, "api": port2}, {"p": [b.port]}))
    code, body = await c.post("/api/v1/reload")
    # the built-in profile "tcp" is the same profile whatever the file is called
    assert code == 200 and body["changes"] == [f"virtual_server api added (listening on 127.0.0.1:{port2})"], body
    harness.write(config({"web": port, "api": port2}, {"p": [b.port]}, method="fastest-first"))
    code, body = await c.post("/api/v1/reload")
    assert code == 422 and body["errors"] and all(e.startswith("appliance.toml: pool.p.method: ") for e in body["errors"]), body


async def test_reload_keeps_admin_state_of_unchanged_servers(harness, backends):
    b1, b2, b3 = await backends(), await backends(), await backends()
    port = free_port()
    app = await harness.start(config({"web": port}, {"p": [b1.port, b2.port]}))
    c = harness.client()
    await c.post(f"/api/v1/pools/p/servers/s{b1.port}", {"state": "disabled"})
    app.engine.pools["p"].set_health(f"s{b2.port}", False)
    harness.write(config({"web": port}, {"p": [b1.port, b2.port, b3.port]}))
    assert (await c.post("/api/v1/reload"))[0] == 200
    pool = (await c.get("/api/v1/pools/p"))[1]
    status = {s["name"]: s["status"] for s in pool["servers"]}
    assert status == {f"s{b1.port}": "disabled", f"s{b2.port}": "down", f"s{b3.port}": "up"}
    assert app.health is not None or True


async def test_sighup_reloads(harness, backends):
    b = await backends()
    port, port2 = free_port(), free_port()
    app = await harness.start(config({"web": port}, {"p": [b.port]}))
    loop = asyncio.get_running_loop()
    app.install_signal_handlers()
    try:
        harness.write(config({"web": port, "api": port2}, {"p": [b.port]}))
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if app.generation == 2:
                break
            await asyncio.sleep(0.02)
        assert app.generation == 2
        assert await echo_roundtrip(port2) == b"ping"
    finally:
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _capped(port: int, a: int, b: int, b_weight: int) -> str:
    return f"""
[appliance]
name = "test"
admin = "off"
access_log = "off"
[virtual_server.vs]
listen = "127.0.0.1:{port}"
profile = "tcp"
pool = "p"
[pool.p]
servers = [
  {{ name = "a", address = "127.0.0.1:{a}", max_connections = 1 }},
  {{ name = "b", address = "127.0.0.1:{b}", backup = true, weight = {b_weight} }},
]
"""


async def test_live_sessions_still_count_after_a_reload_rebuilds_their_pool(appliance_factory, backends):
    a, b = await backends(), await backends()
    port = free_port()
    appliance = await appliance_factory(_capped(port, a.port, b.port, 1))
    first = await asyncio.open_connection("127.0.0.1", port)
    assert await _echo(first, b"x") == b"x"  # takes a's only slot
    appliance.config.source.write_text(_capped(port, a.port, b.port, 2))  # the pool is rebuilt
    result = await appliance.reload()
    assert result["ok"], result
    servers = appliance.engine.pools["p"].servers
    assert servers["a"].view()["active"] == 1  # the session from before still counts
    second = await asyncio.open_connection("127.0.0.1", port)
    assert await _echo(second, b"y") == b"y"
    assert (a.accepted, b.accepted) == (1, 1)  # a is full: max_connections holds across the reload
    for _, writer in (first, second):
        writer.close()
    for _ in range(100):  # the ends reach the rebuilt pool's servers
        if servers["a"].active == 0 and servers["b"].active == 0:
            break
        await asyncio.sleep(0.02)
    assert (servers["a"].active, servers["b"].active) == (0, 0)


async def _echo(conn, payload: bytes) -> bytes:
    reader, writer = conn
    writer.write(payload)
    return await asyncio.wait_for(reader.readexactly(len(payload)), 5)


async def test_reload_to_an_access_log_that_cannot_be_opened_changes_nothing(harness, backends):
    b = await backends()
    port = free_port()
    app = await harness.start(config({"web": port}, {"p": [b.port]}))
    harness.write(config({"web": port}, {"p": [b.port]}, method="least-conn"))
    harness.path.write_text(harness.path.read_text().replace('access_log = "off"', 'access_log = "no/such/dir/a.log"'))
    result = await app.reload()
    assert result["ok"] is False and any("appliance.access_log: directory" in e for e in result["errors"]), result
    assert app.generation == 1 and app.engine.pools["p"].config.method == "round-robin"
    assert await echo_roundtrip(port) == b"ping"


@pytest.mark.skipif(not os.access("/proc", os.W_OK), reason="needs a path the checks let through: root's /proc")
async def test_an_access_log_the_checks_let_through_but_cannot_open_is_one_clear_line(harness, backends):
    b = await backends()
    port = free_port()
    # os.access says root may write anywhere, but nothing can be created in /proc
    path = f"/proc/adc-test-{os.getpid()}.log"
    line = f"{file_name(harness.path)}: appliance.access_log: cannot open {path}: No such file or directory"
    harness.write(config({"web": port}, {"p": [b.port]}))
    harness.path.write_text(harness.path.read_text().replace('access_log = "off"', f'access_log = "{path}"'))
    with pytest.raises(ListenError) as err:  # `adc run` logs it and exits 1, before anything listens
        Appliance(load(harness.path))
    assert str(err.value) == line
    app = await harness.start(config({"web": port}, {"p": [b.port]}))
    harness.path.write_text(harness.path.read_text().replace('access_log = "off"', f'access_log = "{path}"'))
    result = await app.reload()
    assert result["ok"] is False and result["errors"] == [line], result
