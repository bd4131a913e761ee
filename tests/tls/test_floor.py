"""bench/floor.py, the benchmark's floor relay: a real wss client through it to a real ws server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from websockets.asyncio.client import connect

from tests.conftest import free_port
from tests.tls.test_https_engine import client_ctx, echo_ws_server

FLOOR = Path(__file__).resolve().parents[2] / "bench" / "floor.py"


async def _listening(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "floor exited"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError(f"bench/floor.py did not listen on {port} within {timeout} s")


async def test_floor_relays_wss_byte_exact_and_follows_a_close(pki):
    server, bport = await echo_ws_server()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(FLOOR), str(port), str(bport), str(pki.server[0]), str(pki.server[1])],
        stderr=subprocess.PIPE,
    )
    try:
        await _listening(port, proc)
        for _ in range(3):  # each connection its own handshake, dial and teardown
            async with connect(f"wss://localhost:{port}/ws", ssl=client_ctx(pki), max_size=None) as ws:
                for size in (1, 65536, 1_000_000):  # the large one fills a write buffer: flow control
                    payload = os.urandom(size)
                    await ws.send(payload)
                    assert await asyncio.wait_for(ws.recv(), 10) == payload
        # the real server going away closes the client's connection
        async with connect(f"wss://localhost:{port}/ws", ssl=client_ctx(pki)) as ws:
            server.close()
            await asyncio.wait_for(ws.wait_closed(), 10)
    finally:
        server.close()
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
