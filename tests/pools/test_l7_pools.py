"""Pool behaviour through the Layer-7 engine: draining with live tunnels, cookie persistence.

Real appliance on loopback, real `websockets` servers as real servers (they answer plain
HTTP requests with their name and echo WebSocket messages prefixed with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from http import HTTPStatus

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from adc.config.model import ServerState

IO_TIMEOUT = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def named_backend(name: str):
    async def handler(ws):
        async for message in ws:
            await ws.send(f"{name}:{message}")

    def process_request(connection, request):
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return connection.respond(HTTPStatus.OK, f"{name}\n")
        return None

    return serve(handler, "127.0.0.1", 0, process_request=process_request)


def config(port: int, backends: dict[str, int], method: str = "round-robin", persistence: str = "") -> str:
    servers = ", ".join(f'{{ name = "{n}", address = "127.0.0.1:{p}" }}' for n, p in backends.items())
    return f"""
[virtual_server.web]
listen = "127.0.0.1:{port}"
profile = "http"
pool = "chat"
routes = [{{ path_prefix = "/ws", websocket = true, pool = "chat" }}]

[pool.chat]
method = "{method}"
{persistence}
servers = [{servers}]
"""


async def get(port: int, cookie: str | None = None) -> tuple[str, dict[str, str]]:
    """One GET on a fresh connection: (body, headers)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), IO_TIMEOUT)
    try:
        extra = f"Cookie: other=1; ADCSRV={cookie}\r\n" if cookie else ""
        writer.write(f"GET /api HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].split()[1] == "200", lines[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), IO_TIMEOUT)
        return body.decode().strip(), headers
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def who(ws, text: str) -> str:
    await ws.send(text)
    reply = await asyncio.wait_for(ws.recv(), IO_TIMEOUT)
    name, _, echoed = reply.partition(":")
    assert echoed == text
    return name


async def test_draining_keeps_a_live_tunnel_while_new_tunnels_go_elsewhere(appliance_factory):
    async with named_backend("a") as a, named_backend("b") as b:
        port = free_port()
        ports = {"a": a.sockets[0].getsockname()[1], "b": b.sockets[0].getsockname()[1]}
        appliance = await appliance_factory(config(port, ports, method="least-conn"))
        pool = appliance.engine.pools["chat"]
        async with connect(f"ws://127.0.0.1:{port}/ws/live", open_timeout=IO_TIMEOUT) as live:
            first = await who(live, "hello")
            other = "b" if first == "a" else "a"
            assert pool.servers[first].tunnels == 1
            pool.set_state(first, ServerState.DRAINING)
            for i in range(5):
                async with connect(f"ws://127.0.0.1:{port}/ws/new{i}", open_timeout=IO_TIMEOUT) as fresh:
                    assert await who(fresh, f"new {i}") == other
                assert (await get(port))[0] == other  # plain requests too
            for i in range(20):  # the established tunnel still works, both ways
                assert await who(live, f"still {i}") == first
            assert pool.servers[first].tunnels == 1
        for _ in range(200):
            if pool.servers[first].active == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.servers[first].active == 0 and pool.servers[first].tunnels == 0


async def test_cookie_persistence_is_honoured_across_requests_and_the_upgrade(appliance_factory):
    async with named_backend("a") as a, named_backend("b") as b:
        port = free_port()
        ports = {"a": a.sockets[0].getsockname()[1], "b": b.sockets[0].getsockname()[1]}
        persistence = 'persistence = { type = "cookie", name = "ADCSRV" }'
        appliance = await appliance_factory(config(port, ports, persistence=persistence))
        pool = appliance.engine.pools["chat"]
        cookie = pool.cookie_for(pool.servers["b"]).split(";")[0].split("=", 1)[1]
        without = {(await get(port))[0] for _ in range(6)}
        assert without == {"a", "b"}  # round-robin when no cookie
        for _ in range(100):
            assert (await get(port, cookie))[0] == "b"
        async with connect(f"ws://127.0.0.1:{port}/ws/x", additional_headers={"Cookie": f"ADCSRV={cookie}"},
                           open_timeout=IO_TIMEOUT) as ws:
            for i in range(5):
                assert await who(ws, f"m{i}") == "b"
        # the remembered server drains: clean fall back to another one
        pool.set_state("b", ServerState.DRAINING)
        for _ in range(5):
            assert (await get(port, cookie))[0] == "a"
        pool.set_state("b", ServerState.ENABLED)
        assert (await get(port, cookie))[0] == "b"
        pool.set_health("b", False)
        assert (await get(port, cookie))[0] == "a"


async def test_the_persistence_cookie_is_set_on_responses(appliance_factory):
    async with named_backend("a") as a, named_backend("b") as b:
        port = free_port()
        ports = {"a": a.sockets[0].getsockname()[1], "b": b.sockets[0].getsockname()[1]}
        persistence = 'persistence = { type = "cookie", name = "ADCSRV" }'
        await appliance_factory(config(port, ports, persistence=persistence))
        body, headers = await get(port)
        assert headers["set-cookie"].startswith("ADCSRV=") and headers["set-cookie"].endswith("; Path=/; HttpOnly")
        value = headers["set-cookie"].split(";")[0].split("=", 1)[1]
        for _ in range(100):
            got, h = await get(port, value)
            assert got == body
            assert "set-cookie" not in h  # already bound: not set again
