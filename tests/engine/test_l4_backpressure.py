"""A slow reader must cost the appliance bounded memory: measured on a real `adc run` process."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.conftest import free_port

FLOOD_BYTES = 64 << 20
CHUNK = 256 << 10


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "adc exited"
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise TimeoutError("adc did not start listening")


async def test_flooding_server_and_idle_client_keep_memory_bounded(tmp_path):
    sent = 0
    flood_paused = asyncio.Event()
    armed = False

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        if not armed:  # the start-up probe connection
            writer.close()
            return
        chunk = os.urandom(CHUNK)
        writer.transport.set_write_buffer_limits(high=CHUNK)
        while sent < FLOOD_BYTES:
            writer.write(chunk)
            sent += len(chunk)
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except asyncio.TimeoutError:
                flood_paused.set()  # the appliance stopped reading from us
                await writer.drain()
        writer.close()

    backend = await asyncio.start_server(flood, "127.0.0.1", 0)
    bport = backend.sockets[0].getsockname()[1]
    port = free_port()
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(textwrap.dedent(f"""
        [appliance]
        admin = "off"
        access_log = "off"
        grace = "1s"
        [virtual_server.l4]
        listen = "127.0.0.1:{port}"
        profile = "tcp"
        pool = "p"
        [pool.p]
        servers = [{{ name = "flood", address = "127.0.0.1:{bport}" }}]
    """))
    proc = subprocess.Popen(
        [sys.executable, "-m", "adc", "run", str(cfg), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        await wait_listening(port, proc)
        await asyncio.sleep(0.2)
        before = rss_bytes(proc.pid)
        armed = True
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        client.connect(("127.0.0.1", port))
        client.setblocking(False)
        await asyncio.sleep(2.0)  # the client reads nothing for 2 s
        grown = rss_bytes(proc.pid) - before
        assert flood_paused.is_set()
        assert sent < FLOOD_BYTES // 4, f"backend sent {sent} bytes to a client that reads nothing"
        assert grown < 8 << 20, f"appliance RSS grew by {grown} bytes"
        # now read it all: nothing was lost
        loop = asyncio.get_running_loop()
        received = 0
        deadline = time.monotonic() + 30
        while received < FLOOD_BYTES and time.monotonic() < deadline:
            data = await asyncio.wait_for(loop.sock_recv(client, 1 << 20), 10)
            if not data:
                break
            received += len(data)
        assert received == FLOOD_BYTES
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)
        backend.close()
