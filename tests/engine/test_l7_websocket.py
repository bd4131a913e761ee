"""WebSocket through a Layer-7 virtual server: real `websockets` peers on both sides."""

from __future__ import annotations

import asyncio
import hashlib
import random

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from tests.conftest import free_port, no_adc_cycles
from tests.engine.test_l7_http import config, read_response

TOTAL_BYTES = 8 << 20  # per direction; keeps the test to a few seconds
MESSAGES = 3000


def payloads(seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    out, total = [], 0
    for _ in range(MESSAGES):
        size = min(rnd.choice((1, 7, 125, 126, 4096, 65535, 65536, 300_000, 1 << 20)), TOTAL_BYTES - total)
        if size <= 0:
            break
        out.append(rnd.randbytes(size))
        total += size
    return out


async def test_websocket_messages_both_ways_byte_exact(appliance_factory):
    down = payloads(2)
    received_by_server: list[bytes] = []

    async def handler(ws):
        async def send_down():
            for message in down:
                await ws.send(message if len(message) % 2 else message.hex())  # binary and text frames

        sender = asyncio.ensure_future(send_down())
        async for message in ws:
            received_by_server.append(message)
            if message == b"done":
                break
        await sender

    async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
        backend_port = server.sockets[0].getsockname()[1]
        port = free_port()
        routes = '{ path_prefix = "/ws", websocket = true, pool = "web" }'
        appliance = await appliance_factory(config(port, {"web": [backend_port]}, routes))
        up = payloads(1)
        got_down: list = []
        async with connect(f"ws://127.0.0.1:{port}/ws/chat", max_size=None) as ws:
            async def send_up():
                for message in up:
                    await ws.send(message)
                await ws.send(b"done")

            sender = asyncio.ensure_future(send_up())
            for _ in range(len(down)):
                got_down.append(await asyncio.wait_for(ws.recv(), 10))
            await asyncio.wait_for(sender, 10)
        assert len(got_down) == len(down)
        for got, want in zip(got_down, down):
            assert got == (want if len(want) % 2 else want.hex())
        deadline = asyncio.get_running_loop().time() + 5
        while len(received_by_server) < len(up) + 1 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert hashlib.sha256(b"".join(received_by_server[:-1])).digest() == hashlib.sha256(b"".join(up)).digest()
        assert [len(m) for m in received_by_server[:-1]] == [len(m) for m in up]
        counters = appliance.stats.vs("web")
        assert counters.upgrades_accepted == 1 and counters.tunnels_total == 1


async def test_tunnel_passes_the_clients_half_close_to_the_real_server(appliance_factory):
    """After the 101 the client half-closes: the real server reads a FIN (from the socket the
    appliance dialled) and can still answer until it closes in turn."""
    from adc.http.upgrade import accept_key

    loop = asyncio.get_running_loop()
    server_saw_eof = loop.create_future()

    class RealServer(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.buf, self.upgraded = transport, b"", False

        def data_received(self, data):
            self.buf += data
            if not self.upgraded and b"\r\n\r\n" in self.buf:
                head, _, self.buf = self.buf.partition(b"\r\n\r\n")
                key = [line.split(b":", 1)[1] for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:")][0]
                self.upgraded = True
                self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n")

        def eof_received(self):
            server_saw_eof.set_result(self.buf)
            self.transport.write(b"after your FIN")  # the other direction still flows
            self.transport.close()

    server = await loop.create_server(RealServer, "127.0.0.1", 0)
    port = free_port()
    routes = '{ path_prefix = "/ws", websocket = true, pool = "web" }'
    await appliance_factory(config(port, {"web": [server.sockets[0].getsockname()[1]]}, routes))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    status, _, _ = await read_response(reader, head_only=True)
    assert status == 101
    writer.write(b"tunnel bytes")
    writer.write_eof()
    assert await asyncio.wait_for(server_saw_eof, 5) == b"tunnel bytes"
    assert await asyncio.wait_for(reader.read(-1), 5) == b"after your FIN"  # then the real server's close
    writer.close()
    server.close()
    await server.wait_closed()


async def test_websocket_off_route_gets_plain_http(appliance_factory):
    async def handler(ws):
        await ws.send("hello")

    async with serve(handler, "127.0.0.1", 0) as server:
        backend_port = server.sockets[0].getsockname()[1]
        port = free_port()
        routes = '{ path_prefix = "/ws", websocket = false, pool = "web" }'
        appliance = await appliance_factory(config(port, {"web": [backend_port]}, routes))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        status, _, _ = await read_response(reader)
        # The websockets server refuses a request without the upgrade headers.
        assert status in (400, 426)
        writer.close()
        assert appliance.stats.vs("web").upgrades_stripped == 1


async def test_closed_connections_and_tunnels_leave_no_cycles(appliance_factory):
    """Keep-alive requests, refused and accepted upgrades, tunnels closed by either side:
    everything the appliance made for them is freed when they end, not by the collector."""

    async def handler(ws):
        async for message in ws:
            await ws.send(message)
            if message == b"bye":
                await ws.close()

    async with serve(handler, "127.0.0.1", 0) as server:
        backend_port = server.sockets[0].getsockname()[1]
        port = free_port()
        routes = '{ path_prefix = "/ws", websocket = true, pool = "web" }'
        await appliance_factory(config(port, {"web": [backend_port]}, routes))
        with no_adc_cycles():
            for i in range(5):
                async with connect(f"ws://127.0.0.1:{port}/ws/{i}") as ws:
                    await ws.send(b"hello")
                    assert await asyncio.wait_for(ws.recv(), 5) == b"hello"
                    if i % 2:  # the real server ends the tunnel
                        await ws.send(b"bye")
                        await asyncio.wait_for(ws.recv(), 5)
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                for _ in range(3):  # plain HTTP to the websocket server: it answers 426, the connection stays HTTP
                    writer.write(b"GET /ws/x HTTP/1.1\r\nHost: a\r\n\r\n")
                    status, _, _ = await read_response(reader)
                    assert status == 426
                writer.close()
                await writer.wait_closed()
            await asyncio.sleep(0.2)  # let both sides of every connection be reported lost
