"""The dashboard against a real appliance on loopback, through the real admin API (Unix socket)."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from adc.dashboard.app import DashboardApp
from adc.dashboard.screens import ConfirmScreen
from adc.dashboard.widgets import KeyedTable
from adc.runtime.admin_client import AdminClient
from adc.tls import certs

SIZE = (100, 30)
WAIT_S = 5.0
# the appliance section of every configuration here: the admin API on a Unix socket
APPLIANCE = '[appliance]\nname = "live"\nadmin = "unix:run/adc.sock"\naccess_log = "off"'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def live(appliance_factory, backends):
    db1, web1, web2 = await backends(), await backends(), await backends()
    db_port, web_port = _free_port(), _free_port()
    appliance = await appliance_factory(f"""
        {APPLIANCE}

        [virtual_server.db]
        listen = "127.0.0.1:{db_port}"
        profile = "tcp"
        pool = "db"

        [virtual_server.web]
        listen = "127.0.0.1:{web_port}"
        profile = "http"
        pool = "web"

        [pool.db]
        health = {{ type = "tcp", interval = "1s", timeout = "500ms" }}
        servers = [{{ name = "db1", address = "127.0.0.1:{db1.port}" }}]

        [pool.web]
        health = {{ type = "tcp", interval = "1s", timeout = "500ms" }}
        servers = [
          {{ name = "web1", address = "127.0.0.1:{web1.port}" }},
          {{ name = "web2", address = "127.0.0.1:{web2.port}", weight = 2 }},
        ]
    """)
    return appliance, db_port


async def _until(predicate, pilot, what: str) -> None:
    """Poll the app (bounded in time) until `predicate()` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def test_live_tables_drain_and_disconnect(live):
    appliance, db_port = live
    address = appliance.admin_address
    assert address and address.startswith("unix:")
    app = DashboardApp(AdminClient(address), address=address, interval=0.2)

    # a held Layer-4 session with real traffic through the tcp virtual server
    reader, writer = await asyncio.open_connection("127.0.0.1", db_port)
    writer.write(b"hello through the appliance")
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(27), WAIT_S) == b"hello through the appliance"

    try:
        async with app.run_test(size=SIZE) as pilot:
            vs_table = app.query_one("#vs-table", KeyedTable)
            await _until(lambda: vs_table.keys() == ["db", "web"], pilot, "virtual servers")
            pools = app.query_one("#pool-table", KeyedTable)
            assert {"pool:db", "server:db/db1", "pool:web", "server:web/web1", "server:web/web2"} <= set(pools.keys())
            sessions = app.query_one("#session-table", KeyedTable)
            await _until(lambda: len(sessions.keys()) == 1, pilot, "the live session")
            row = sessions.get_row(sessions.keys()[0])
            assert [str(c) for c in row[1:4]] == ["l4", "db", "db/db1"]
            assert app.query_one("#status-line").render().plain.startswith("live")

            # drain web2 from the Pools screen, confirming in the dialog
            await pilot.press("2")
            pools.move_cursor(row=pools.get_row_index("server:web/web2"))
            await pilot.pause()
            await pilot.press("n")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            client = AdminClient(address)

            async def state() -> str:
                status, body = await client.get("/api/v1/pools/web/servers/web2")
                assert status == 200
                return body["state"]

            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT_S
            while await state() != "draining":
                assert loop.time() < deadline, "drain did not reach the appliance"
                await pilot.pause(0.05)
            await _until(lambda: str(pools.get_row("server:web/web2")[1]) == "DRAIN", pilot, "DRAIN shown")

            # the appliance stops: banner, stale data kept, no traceback
            await appliance.stop(grace=0)
            banner = app.query_one("#banner")
            await _until(lambda: banner.has_class("-visible"), pilot, "the DISCONNECTED banner")
            assert "DISCONNECTED" in str(banner.render())
            assert "server:web/web2" in pools.keys()
            await pilot.press("q")
        assert app.return_code == 0
    finally:
        writer.close()


async def test_live_websocket_tunnel_shown_and_closed(appliance_factory):
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0) as server:
        chat_port = server.sockets[0].getsockname()[1]
        port = _free_port()
        appliance = await appliance_factory(f"""
            {APPLIANCE}

            [virtual_server.web]
            listen = "127.0.0.1:{port}"
            profile = "http"
            routes = [{{ path_prefix = "/ws", websocket = true, pool = "chat" }}]

            [pool.chat]
            health = {{ type = "tcp", interval = "1s", timeout = "500ms" }}
            servers = [{{ name = "chat1", address = "127.0.0.1:{chat_port}" }}]
        """)
        address = appliance.admin_address
        app = DashboardApp(AdminClient(address), address=address, interval=0.2)
        async with connect(f"ws://127.0.0.1:{port}/ws/room") as ws:
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), WAIT_S) == "ping"
            async with app.run_test(size=SIZE) as pilot:
                await pilot.press("3")
                sessions = app.query_one("#session-table", KeyedTable)
                await _until(lambda: len(sessions.keys()) == 1, pilot, "the live tunnel")
                row = sessions.get_row(sessions.keys()[0])
                assert [str(c) for c in row[1:4]] == ["tunnel", "web", "chat/chat1"]
                vs = app.query_one("#vs-table", KeyedTable)
                await _until(lambda: str(vs.get_row("web")[4]) == "1", pilot, "tunnel count on the overview")
                await pilot.press("x")
                assert isinstance(app.screen, ConfirmScreen)
                await pilot.press("y")
                await _until(lambda: sessions.keys() == [], pilot, "the tunnel to disappear")
                await pilot.press("q")
            try:
                await asyncio.wait_for(ws.recv(), WAIT_S)
                raise AssertionError("the tunnel was not closed")
            except ConnectionClosed:
                pass


async def test_another_service_on_the_admin_address_is_named_so_and_asked_once():
    """An operator's slip: --admin pointed at a web service (a virtual server's port, say)."""
    asked: list[bytes] = []

    async def web_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(web_page, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    app = DashboardApp(AdminClient(address, timeout=WAIT_S), address=address, interval=None)
    app.animation_level = "none"
    try:
        async with app.run_test(size=SIZE) as pilot:
            await app.poll_once()
            await pilot.pause()
            banner = app.query_one("#banner")
            assert banner.has_class("-visible")
            assert "not an adc admin API" in str(banner.render())
            assert [a.split(b" ", 2)[1] for a in asked] == [b"/api/v1/status"]  # one request, not one per endpoint
    finally:
        server.close()
        await server.wait_closed()


def _https_get(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None) -> tuple[bytes, ssl.SSLSession, bool]:
    """One request over a new TLS connection (blocking: run in a thread); the status line,
    the session (for the next connection) and whether this one resumed."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"GET /old HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):  # to the end: the session tickets come with the answer
                answer += chunk
            return answer.split(b"\r\n", 1)[0], s.session, s.session_reused


async def test_live_tls_handshakes_of_the_virtual_server_under_the_cursor(appliance_factory, backends, tmp_path):
    """Two real TLS connections, the second resuming the first's session: the Overview
    shows them on the line about the https virtual server."""
    certs.init(tmp_path / "certs")
    web1 = await backends()
    port = _free_port()
    appliance = await appliance_factory(f"""
        {APPLIANCE}

        [virtual_server.secure]
        listen = "127.0.0.1:{port}"
        profile = "tls"
        pool = "web"
        routes = [{{ path_prefix = "/old", redirect = "https://{{host}}/new", redirect_code = 301 }}]

        [profile.tls]
        type = "https"
        client_ssl = {{ certificates = [{{ cert = "{tmp_path}/certs/adc.pem", key = "{tmp_path}/certs/adc.key" }}] }}

        [pool.web]
        servers = [{{ name = "web1", address = "127.0.0.1:{web1.port}" }}]
    """)
    ctx = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.pem"))
    status, session, resumed = await asyncio.to_thread(_https_get, port, ctx, None)
    assert (status, resumed) == (b"HTTP/1.1 301 Moved Permanently", False)
    status, _, resumed = await asyncio.to_thread(_https_get, port, ctx, session)
    assert (status, resumed) == (b"HTTP/1.1 301 Moved Permanently", True)
    address = appliance.admin_address
    app = DashboardApp(AdminClient(address), address=address, interval=0.2)
    async with app.run_test(size=SIZE) as pilot:
        label = app.query_one("#vs-label")
        await _until(lambda: "secure" in str(label.render()), pilot, "the virtual server's line")
        text = " ".join(str(label.render()).split())
        assert text.startswith("secure: profile tls (https) → pool web · TLS "), text
        assert "handshakes/s, 50% resumed, 0 failed" in text and "2 connections, 2 requests" in text, text
        await pilot.press("q")
