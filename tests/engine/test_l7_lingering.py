"""Lingering close: a client still sending when the appliance answers and closes gets the answer.

Closing a socket with unread input answers the client's next bytes with a reset, which can
destroy the answer before the client reads it: a client that sends its whole request before
reading (most do) would see "connection reset" instead of the 403 or 413. The appliance ends
its own direction after the answer and drops what the client still sends, for a bounded time.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

from tests.conftest import free_port
from tests.engine.test_l7_http import config

DENY = '{ path_prefix = "/admin", respond = 403 }'
BODY = 8 << 20  # far more than the kernel's buffers on the way take


def upload_then_read(port: int, body: int, chunk: int = 256 << 10, pause: float = 0.0,
                     tls: ssl.SSLContext | None = None) -> tuple[bytes, str]:
    """Send a request with a `body`-byte body in full (`chunk` bytes every `pause` s; over TLS
    with `tls`), and only then read: (what came back, how it ended). Bounded: 20 s."""
    c = socket.create_connection(("127.0.0.1", port))
    c.settimeout(5)
    started = time.monotonic()
    try:
        if tls is not None:
            c = tls.wrap_socket(c, server_hostname="localhost")
        c.sendall(b"POST /admin/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % body)
        sent = 0
        while sent < body and time.monotonic() - started < 20:
            n = min(chunk, body - sent)
            c.sendall(b"x" * n)
            sent += n
            time.sleep(pause)
        got = b""
        while time.monotonic() - started < 20:
            data = c.recv(65536)
            if not data:
                return got, "eof"
            got += data
        return got, "time"
    except OSError as exc:
        return b"", exc.__class__.__name__
    finally:
        c.close()


async def test_a_client_sending_its_whole_body_before_reading_gets_the_answer(appliance_factory):
    port = free_port()
    app = await appliance_factory(config(port, {"web": [free_port()]}, routes=DENY))
    got, end = await asyncio.to_thread(upload_then_read, port, BODY)
    assert got.startswith(b"HTTP/1.1 403 Forbidden\r\n") and end == "eof", (got[:40], end)
    assert b"Connection: close\r\n" in got
    assert app.stats.vs("web").bytes_in >= BODY  # read, and dropped
    for _ in range(100):
        if app.stats.vs("web").conn_current == 0:
            break
        await asyncio.sleep(0.02)
    assert app.stats.vs("web").conn_current == 0


async def test_lingering_is_bounded_for_a_client_that_never_stops_sending(appliance_factory):
    # timeout_client (when shorter) bounds how long the appliance goes on reading
    port = free_port()
    app = await appliance_factory(config(port, {"web": [free_port()]}, routes=DENY, profile="quick")
                                  + '[profile.quick]\ntype = "http"\ntimeout_client = "500ms"\n')
    started = time.monotonic()
    got, end = await asyncio.to_thread(upload_then_read, port, 1 << 40, 4096, 0.01)
    took = time.monotonic() - started
    assert end in ("ConnectionResetError", "BrokenPipeError"), end
    assert 0.4 < took < 3.0, took
    assert app.stats.vs("web").conn_current == 0


async def test_lingering_ends_when_the_client_goes_quiet(appliance_factory):
    port = free_port()
    app = await appliance_factory(config(port, {"web": [free_port()]}, routes=DENY, profile="quick")
                                  + '[profile.quick]\ntype = "http"\ntimeout_client = "300ms"\n')
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /admin HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nxx")  # and no more
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(), 5)  # up to the appliance's FIN
    assert answer.startswith(b"HTTP/1.1 403 ")
    for _ in range(100):
        if app.stats.vs("web").conn_current == 0:
            break
        await asyncio.sleep(0.02)
    assert app.stats.vs("web").conn_current == 0
    assert time.monotonic() - started < 2.0
    writer.close()


async def _silent_server() -> asyncio.AbstractServer:
    """A real server that reads what comes and never answers."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await asyncio.wait_for(reader.read(65536), 20):
                pass
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


STALL_PROFILE = '[profile.stall]\ntype = "http"\ntimeout_client = "300ms"\ntimeout_server = "1500ms"\n'


async def test_a_client_stalling_in_its_body_times_out_as_the_client(appliance_factory, caplog):
    # the real server waits for the rest of the body: the wait is the client's (408, timeout_client),
    # not the server's (504 after timeout_server, and an error counted against it)
    server = await _silent_server()
    port = free_port()
    app = await appliance_factory(config(port, {"web": [server.sockets[0].getsockname()[1]]}, profile="stall")
                                  + STALL_PROFILE)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)  # and stalls
    answer = await asyncio.wait_for(reader.read(), 5)
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:40]
    assert 0.3 < took < 2.0, took
    assert app.stats.server("web", "web0").errors.get("timeout", 0) == 0
    writer.close()
    # with the whole request in, the server's silence is the server's: 504 after timeout_server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n" + b"x" * 10)
    answer = await asyncio.wait_for(reader.read(), 6)
    assert answer.startswith(b"HTTP/1.1 504 ") and time.monotonic() - started > 1.4, answer[:40]
    writer.close()
    # a client waiting for the real server's 100 Continue before its body is not the one stalling
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 6)
    assert answer.startswith(b"HTTP/1.1 504 ") and time.monotonic() - started > 1.4, answer[:40]
    writer.close()
    server.close()
