"""bench/floor.py, the benchmark's floors (a byte relay; with --http, the least HTTP work): a real
wss client through each to a real ws server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.conftest import free_port
from tests.tls.test_https_engine import client_ctx, echo_ws_server, header_echo_server

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


def _floor(mode: list[str], port: int, bport: int, pki) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(FLOOR), *mode, str(port), str(bport), str(pki.server[0]), str(pki.server[1])],
        stderr=subprocess.PIPE,
    )


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(10)
    if proc.stderr is not None:
        proc.stderr.close()


@pytest.mark.parametrize("mode", [[], ["--http"]], ids=["floor", "floor-http"])
async def test_floor_relays_wss_byte_exact_and_follows_a_close(pki, mode):
    server, bport = await echo_ws_server()
    port = free_port()
    proc = _floor(mode, port, bport, pki)
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
        _stop(proc)


async def test_http_floor_forwards_the_head_rebuilt_with_forwarding_fields(pki):
    """--http parses the request and response heads and rebuilds them, the work every
    Layer-7 proxy does; a body that came with the response head is relayed with it."""
    server, bport = await header_echo_server()
    port = free_port()
    proc = _floor(["--http"], port, bport, pki)
    try:
        await _listening(port, proc)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx(pki),
                                                       server_hostname="localhost")
        writer.write(b"GET /a?b=c HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 OK\r\nContent-Length: ")
        body = await asyncio.wait_for(reader.readexactly(int(head.split(b"\r\n")[1].split(b": ")[1])), 10)
        writer.close()
        assert body.startswith(b"GET /a?b=c HTTP/1.1\r\nHost: localhost\r\n")
        assert b"\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n" in body
    finally:
        server.close()
        _stop(proc)


async def test_http_floor_closes_on_a_malformed_or_endless_head(pki):
    """The HTTP floor keeps at most MAX_HEAD_BYTES of a head, and parses nothing it cannot."""
    server, bport = await header_echo_server()
    port = free_port()
    proc = _floor(["--http"], port, bport, pki)
    try:
        await _listening(port, proc)
        for sent in (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"GET /" + b"a" * 40_000):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx(pki),
                                                           server_hostname="localhost")
            writer.write(sent)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        assert proc.poll() is None
    finally:
        server.close()
        _stop(proc)
