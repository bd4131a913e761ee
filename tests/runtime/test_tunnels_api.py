"""WebSocket tunnels under runtime management: drain, close and reload through the admin API."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from tests.conftest import free_port


async def ws_servers(n: int):
    """Real WebSocket echo servers that prefix each answer with their name."""
    servers, ports = [], []
    for i in range(n):
        async def echo(ws, name=f"s{i}"):
            async for message in ws:
                await ws.send(f"{name}:{message}")

        server = await serve(echo, "127.0.0.1", 0)
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    return servers, ports


def body(port: int, pool_ports: dict[str, list[int]], method: str = "round-robin") -> str:
    pools = ""
    for name, ports in pool_ports.items():
        servers = ", ".join(f'{{ name = "{name}{i}", address = "127.0.0.1:{p}" }}' for i, p in enumerate(ports))
        pools += f'\n[pool.{name}]\nmethod = "{method}"\nservers = [{servers}]\n'
    return f"""
[virtual_server.web]
listen = "127.0.0.1:{port}"
profile = "http"
pool = "chat"
{pools}
"""


async def test_drain_through_api_keeps_live_tunnel_and_moves_new_ones(harness):
    servers, ports = await ws_servers(2)
    port = free_port()
    await harness.start(body(port, {"chat": ports}, method="least-conn"))
    api = harness.client()
    live = await connect(f"ws://127.0.0.1:{port}/ws")
    await live.send("hello")
    first = await asyncio.wait_for(live.recv(), 5)
    served_by = first.split(":")[0]
    name = "chat0" if served_by == "s0" else "chat1"
    status, server = await api.post(f"/api/v1/pools/chat/servers/{name}", {"state": "draining"})
    assert status == 200 and server["state"] == "draining"
    for i in range(5):  # new tunnels avoid the draining server
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send(f"n{i}")
            assert not (await asyncio.wait_for(ws.recv(), 5)).startswith(served_by + ":")
    for i in range(5):  # the established tunnel keeps working
        await live.send(f"m{i}")
        assert await asyncio.wait_for(live.recv(), 5) == f"{served_by}:m{i}"
    status, pools = await api.get("/api/v1/pools/chat")
    drained = next(s for s in pools["servers"] if s["name"] == name)
    assert drained["tunnels"] == 1 and drained["status"] == "draining"
    await live.close()
    for s in servers:
        s.close()


async def test_close_tunnel_through_api_closes_both_sides(harness):
    closed = asyncio.Event()

    async def hold(ws):
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            closed.set()

    server = await serve(hold, "127.0.0.1", 0)
    port = free_port()
    await harness.start(body(port, {"chat": [server.sockets[0].getsockname()[1]]}))
    api = harness.client()
    ws = await connect(f"ws://127.0.0.1:{port}/ws")
    await ws.send("x")
    assert await asyncio.wait_for(ws.recv(), 5) == "x"
    status, listing = await api.get("/api/v1/sessions?kind=tunnel")
    assert status == 200 and len(listing["sessions"]) == 1
    tunnel = listing["sessions"][0]
    assert tunnel["kind"] == "tunnel" and tunnel["server"] == "chat0" and tunnel["bytes_in"] > 0
    status, answer = await api.delete(f"/api/v1/sessions/{tunnel['id']}")
    assert status == 200
    await asyncio.wait_for(ws.wait_closed(), 5)  # the client side is closed
    await asyncio.wait_for(closed.wait(), 5)  # and the real server side
    status, listing = await api.get("/api/v1/sessions")
    assert listing["sessions"] == []
    server.close()


async def test_tunnel_survives_reload_that_changes_its_pool(harness):
    servers, ports = await ws_servers(2)
    port = free_port()
    app = await harness.start(body(port, {"chat": [ports[0]]}))
    ws = await connect(f"ws://127.0.0.1:{port}/ws")
    await ws.send("before")
    assert await asyncio.wait_for(ws.recv(), 5) == "s0:before"
    # the pool now has only the other server, with another method
    harness.write(body(port, {"chat": [ports[1]]}, method="least-conn"))
    result = await app.reload()
    assert result["ok"], result
    for i in range(5):
        await ws.send(f"after{i}")
        assert await asyncio.wait_for(ws.recv(), 5) == f"s0:after{i}"
    async with connect(f"ws://127.0.0.1:{port}/ws") as fresh:  # new tunnels use the new pool
        await fresh.send("new")
        assert await asyncio.wait_for(fresh.recv(), 5) == "s1:new"
    await ws.close()
    for s in servers:
        s.close()
