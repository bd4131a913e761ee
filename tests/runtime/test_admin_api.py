"""The admin API on real sockets: Unix socket, TCP with a token, state changes, sessions."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import stat

import pytest

from adc import compiled
from adc.runtime.admin_client import AdminClient, AdminUnreachable, admin_address_from_config
from tests.conftest import free_port
from tests.runtime.conftest import echo_roundtrip


def l4(port: int, *servers: int, method: str = "round-robin") -> str:
    listed = ", ".join(f'{{ name = "s{i}", address = "127.0.0.1:{p}" }}' for i, p in enumerate(servers, 1))
    return f"""
    [virtual_server.l4]
    listen = "127.0.0.1:{port}"
    profile = "tcp"
    pool = "p"

    [pool.p]
    method = "{method}"
    servers = [{listed}]
    """


async def raw(address: str, data: bytes) -> bytes:
    """Send raw bytes to a unix admin socket; return everything until close."""
    reader, writer = await asyncio.open_unix_connection(address[5:])
    writer.write(data)
    out = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return out


async def test_unix_socket_owner_only_and_endpoints(harness, backends):
    b = await backends()
    port = free_port()
    app = await harness.start(l4(port, b.port))
    path = app.admin_address[5:]
    assert path == str(harness.path.parent / "run" / "adc.sock")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert admin_address_from_config(str(harness.path)) == (app.admin_address, None)
    c = harness.client()
    code, st = await c.get("/api/v1/status")
    assert code == 200 and st["name"] == "test" and st["generation"] == 1 and st["pid"] == os.getpid()
    assert st["traffic_path"] == compiled.status()
    code, body = await c.get("/api/v1/virtual_servers")
    assert code == 200 and body["virtual_servers"][0]["bound"] == [f"127.0.0.1:{port}"]
    code, body = await c.get("/api/v1/pools/p")
    assert code == 200 and [s["name"] for s in body["servers"]] == ["s1"]
    assert body["servers"][0]["status"] == "up" and "counters" in body["servers"][0]
    code, body = await c.get("/api/v1/pools/p/servers/s1")
    assert code == 200 and body["address"] == f"127.0.0.1:{b.port}"
    code, body = await c.get("/api/v1/events")
    assert code == 200 and body["events"][0]["kind"] == "start"
    code, body = await c.get("/api/v1/certificates")
    assert code == 200 and body["certificates"] == []
    code, text = await c.get("/metrics")
    assert code == 200 and "adc_virtual_server_connections_total" in text
    await app.stop(grace=0)
    assert not os.path.exists(path)  # removed at stop
    with pytest.raises(AdminUnreachable):
        await c.get("/api/v1/status")


async def test_errors_are_json_and_say_what_is_wrong(harness, backends):
    b = await backends()
    app = await harness.start(l4(free_port(), b.port))
    c = harness.client()
    cases = [
        ("GET", "/api/v1/pools/nope", None, 404, "no pool 'nope'"),
        ("GET", "/api/v1/pools/p/servers/zz", None, 404, "has no server 'zz'"),
        ("POST", "/api/v1/pools/p/servers/s1", {"state": "sleeping"}, 400, "state: must be one of"),
        ("POST", "/api/v1/pools/p/servers/s1", {"weight": -1}, 400, "weight: must be an integer"),
        ("POST", "/api/v1/pools/p/servers/s1", {"weight": True}, 400, "weight: must be an integer"),
        ("POST", "/api/v1/pools/p/servers/s1", {"colour": "red"}, 400, "unknown field 'colour'"),
        ("POST", "/api/v1/pools/p/servers/s1", [1, 2], 400, "JSON object"),
        ("DELETE", "/api/v1/sessions/999999", None, 404, "no live session"),
        ("DELETE", "/api/v1/sessions/abc", None, 400, "must be a number"),
        ("GET", "/api/v1/sessions?kind=udp", None, 400, "kind"),
        ("GET", "/api/v1/events?limit=x", None, 400, "limit"),
        ("PUT", "/api/v1/status", None, 405, "not allowed"),
        ("GET", "/api/v2/status", None, 404, "no such endpoint"),
    ]
    for method, path, body, want, text in cases:
        code, answer = await c.request(method, path, body)
        assert code == want, (method, path, answer)
        assert text in answer["error"], (path, answer)
    # malformed JSON, oversized body, garbage request line: raw bytes
    out = await raw(app.admin_address, b"POST /api/v1/pools/p/servers/s1 HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 7\r\nConnection: close\r\n\r\n{state:")
    assert out.startswith(b"HTTP/1.1 400") and b"malformed JSON" in out
    out = await raw(app.admin_address, b"POST /api/v1/reload HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413")
    out = await raw(app.admin_address, b"\x00\x01 nonsense\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")
    out = await raw(app.admin_address, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431")
    # the server is unchanged by all of it
    code, body = await c.get("/api/v1/pools/p/servers/s1")
    assert body["state"] == "enabled" and body["weight"] == 1


async def test_keep_alive_serves_several_requests(harness, backends):
    b = await backends()
    app = await harness.start(l4(free_port(), b.port))
    reader, writer = await asyncio.open_unix_connection(app.admin_address[5:])
    try:
        for _ in range(3):
            writer.write(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
    finally:
        writer.close()


async def test_tcp_admin_requires_the_token(harness, backends):
    b = await backends()
    admin_port = free_port()
    app = await harness.start(l4(free_port(), b.port), admin=f"127.0.0.1:{admin_port}", token="s3cret")
    assert app.admin_address == f"127.0.0.1:{admin_port}"
    assert admin_address_from_config(str(harness.path)) == (f"127.0.0.1:{admin_port}", "s3cret")
    code, body = await harness.client(token=None).get("/api/v1/status")
    assert code == 401 and "Bearer" in body["error"]
    code, body = await harness.client(token="wrong").get("/api/v1/status")
    assert code == 401 and "wrong" in body["error"]
    code, body = await harness.client(token=None).get("/metrics")
    assert code == 401
    code, body = await harness.client().get("/api/v1/status")
    assert code == 200 and body["name"] == "test"


async def test_stale_socket_is_replaced_and_live_one_refused(harness, backends, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(run / "adc.sock"))  # bound, never listening, then closed: stale
    stale.close()
    b = await backends()
    app = await harness.start(l4(free_port(), b.port))
    assert (await harness.client().get("/api/v1/status"))[0] == 200
    # a second appliance with the same admin socket refuses to start
    from adc.appliance import Appliance
    from adc.config.load import load
    from adc.engine.listener import ListenError, file_name

    harness.write(l4(free_port(), b.port))
    other = Appliance(load(harness.path))
    where = re.escape(f"{file_name(harness.path)}: appliance.admin: unix:")
    with pytest.raises(ListenError, match=f"^{where}.*: in use by another running appliance$"):
        await other.start()
    assert not other.engine.virtual_servers  # the admin address comes first: no listener was opened
    assert (await harness.client().get("/api/v1/status"))[0] == 200
    assert app.admin_address


async def test_long_unix_socket_path(harness, backends, tmp_path):
    deep = "d" * 60 + "/" + "e" * 60
    b = await backends()
    app = await harness.start(l4(free_port(), b.port), admin=f"unix:{deep}/adc.sock")
    assert len(app.admin_address) > 110
    code, _ = await harness.client().get("/api/v1/status")
    assert code == 200


async def test_off_disables_the_api(harness, backends):
    b = await backends()
    app = await harness.start(l4(free_port(), b.port), admin="off")
    assert app.admin is None and app.admin_address is None
    with pytest.raises(ValueError, match="off"):
        admin_address_from_config(str(harness.path))


async def test_unreachable_client_errors():
    with pytest.raises(AdminUnreachable, match="not found"):
        await AdminClient("unix:/nonexistent/adc.sock").get("/api/v1/status")
    with pytest.raises(AdminUnreachable, match="refused"):
        await AdminClient(f"127.0.0.1:{free_port()}").get("/api/v1/status")


async def test_drain_moves_new_traffic_while_session_lives(harness, backends):
    b1, b2 = await backends(), await backends()
    port = free_port()
    app = await harness.start(l4(port, b1.port, b2.port))
    c = harness.client()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello")
    assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
    code, body = await c.get("/api/v1/sessions?kind=l4")
    assert code == 200 and len(body["sessions"]) == 1
    session = body["sessions"][0]
    victim = session["server"]
    other = "s2" if victim == "s1" else "s1"
    code, body = await c.post(f"/api/v1/pools/p/servers/{victim}", {"state": "draining", "weight": 3})
    assert code == 200 and body["state"] == "draining" and body["status"] == "draining" and body["weight"] == 3
    ev = (await c.get("/api/v1/events?limit=5"))[1]["events"]
    assert any(f"server {victim}: state enabled -> draining" in e["message"] for e in ev)
    before = {"s1": b1.accepted, "s2": b2.accepted}
    for i in range(6):
        assert await echo_roundtrip(port, b"x%d" % i) == b"x%d" % i
    after = {"s1": b1.accepted, "s2": b2.accepted}
    assert after[victim] == before[victim]
    assert after[other] == before[other] + 6
    # the session on the draining server lives on
    writer.write(b"still here")
    assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still here"
    rs = app.engine.pools["p"].servers[victim]
    assert rs.active == 1
    writer.close()
    code, body = await c.post(f"/api/v1/pools/p/servers/{victim}", {"state": "enabled"})
    assert body["status"] == "up"


async def test_delete_session_closes_both_sides(harness, backends):
    server_closed = asyncio.Event()

    class Watch(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def data_received(self, data):
            self.t.write(data)

        def connection_lost(self, exc):
            server_closed.set()

    b = await backends(factory=Watch)
    port = free_port()
    await harness.start(l4(port, b.port))
    c = harness.client()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"abc")
    assert await asyncio.wait_for(reader.readexactly(3), 5) == b"abc"
    sessions = (await c.get("/api/v1/sessions"))[1]["sessions"]
    assert len(sessions) == 1 and sessions[0]["bytes_in"] == 3 and sessions[0]["bytes_out"] == 3
    sid = sessions[0]["id"]
    code, body = await c.get(f"/api/v1/sessions/{sid}")
    assert code == 200 and body["kind"] == "l4"
    code, body = await c.delete(f"/api/v1/sessions/{sid}")
    assert (code, body) == (200, {"closed": sid})
    assert await asyncio.wait_for(reader.read(), 5) == b""  # client side closed
    await asyncio.wait_for(server_closed.wait(), 5)  # server side closed
    writer.close()
    assert (await c.get("/api/v1/sessions"))[1]["sessions"] == []
    assert (await c.delete(f"/api/v1/sessions/{sid}"))[0] == 404


async def test_unfinished_header_line_is_bounded(harness, backends):
    b = await backends()
    app = await harness.start(l4(free_port(), b.port))
    answer = await raw(app.admin_address, b"GET /api/v1/status HTTP/1.1\r\nX-Long: " + b"v" * (200 * 1024))
    assert answer.startswith(b"HTTP/1.1 431 ")
