"""A 64 MiB response to a client that stops reading: the appliance's memory stays bounded."""

from __future__ import annotations

import asyncio
import socket

from adc.http.upgrade import accept_key
from tests.conftest import free_port
from tests.engine.l7_servers import HttpBackend
from tests.engine.test_l7_http import AnsweringAtAccept, config

BODY_BYTES = 64 << 20
CHUNK = 256 * 1024
HIGH_WATER = 64 * 1024


class BigResponder(asyncio.Protocol):
    """Answers any request with a 64 MiB body, writing only while its transport accepts more."""

    sent = 0

    def connection_made(self, transport):
        self.transport = transport
        self.remaining = 0
        self.paused = False
        transport.set_write_buffer_limits(high=CHUNK)

    def data_received(self, data):
        if b"\r\n\r\n" in data and self.remaining == 0:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BODY_BYTES)
            self.remaining = BODY_BYTES
            self._fill()

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        self._fill()

    def _fill(self):
        while self.remaining and not self.paused:
            n = min(CHUNK, self.remaining)
            self.transport.write(bytes(n))
            self.remaining -= n
            BigResponder.sent += n


class SlowClient(asyncio.Protocol):
    def __init__(self):
        self.received = 0
        self.head = b""
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if not self.head:
            head, sep, rest = data.partition(b"\r\n\r\n")
            self.head, data = head, rest
        self.received += len(data)
        if self.received >= BODY_BYTES and not self.done.done():
            self.done.set_result(None)


async def test_slow_client_keeps_memory_bounded(appliance_factory):
    loop = asyncio.get_running_loop()
    BigResponder.sent = 0
    backend = await loop.create_server(BigResponder, "127.0.0.1", 0)
    backend_port = backend.sockets[0].getsockname()[1]
    port = free_port()
    text = config(port, {"web": [backend_port]}, profile="small") + """
[profile.small]
type = "http"
buffer_bytes = "64KiB"
"""
    appliance = await appliance_factory(text)
    transport, client = await loop.create_connection(SlowClient, "127.0.0.1", port)
    transport.pause_reading()  # the client reads nothing for a while
    transport.write(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
    vs = appliance.engine.virtual_servers["web"]
    peak = 0
    server_paused = False
    for _ in range(50):  # bounded: up to ~1 s of sampling
        await asyncio.sleep(0.02)
        (conn,) = list(vs.connections)
        peak = max(peak, conn.transport.get_write_buffer_size())
        if conn.server is not None and not conn.server.transport.is_reading():
            server_paused = True
            sent_when_paused = BigResponder.sent
            if _ > 10:
                break
    assert server_paused, "reading from the real server was never paused"
    # The appliance holds at most its high-water mark plus one read chunk per direction.
    assert peak <= HIGH_WATER + CHUNK
    assert conn.server.transport.get_write_buffer_size() == 0
    # The backend could only fill the kernel buffers in between, far from 64 MiB.
    assert sent_when_paused < BODY_BYTES // 2
    # Reading again lets the whole body through, byte-exact in size.
    transport.resume_reading()
    await asyncio.wait_for(client.done, 30)
    assert client.received == BODY_BYTES
    assert client.head.startswith(b"HTTP/1.1 200 OK")
    transport.close()
    backend.close()


async def test_answers_made_by_the_appliance_do_not_pile_up_for_a_client_that_never_reads(appliance_factory):
    import socket as socketlib

    from tests.conftest import free_port

    port = free_port()
    app = await appliance_factory(f"""
        [virtual_server.deny]
        listen = "127.0.0.1:{port}"
        profile = "small"
        routes = [ {{ path_prefix = "/", respond = 403 }} ]
        [profile.small]
        type = "http"
        buffer_bytes = "16KiB"
    """)
    client = socketlib.socket()
    client.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    client.setblocking(False)
    loop = asyncio.get_running_loop()
    request = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    sent = 0
    deadline = loop.time() + 5
    while sent < 4 << 20 and loop.time() < deadline:  # pipeline up to 4 MiB of requests, never read
        try:
            sent += client.send(request * 256)
        except BlockingIOError:
            await asyncio.sleep(0.05)
            if loop.time() > deadline - 4:
                break
    await asyncio.sleep(0.3)
    conns = list(app.engine.virtual_servers["deny"].connections)
    assert len(conns) == 1
    transport = conns[0].transport
    assert transport.get_write_buffer_size() <= 16 * 1024 + 64 * 1024  # high water + one batch of answers
    assert not transport.is_reading()  # the appliance stopped reading the client
    assert sent > 0
    client.close()


class EventStream(asyncio.Protocol):
    """Answers with an endless chunked stream of small pieces (each written on its own, as an
    event stream is), until the connection closes or `limit` seconds pass."""

    def __init__(self, limit: float):
        self.limit = limit
        self.closed = asyncio.get_running_loop().create_future()
        self.paused = False

    def connection_made(self, transport):
        self.transport = transport
        self.loop = asyncio.get_running_loop()

    def data_received(self, data):
        if b"\r\n\r\n" in data:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            self.until = self.loop.time() + self.limit
            self._tick()

    def _tick(self):
        if self.transport.is_closing() or self.loop.time() > self.until:
            self.transport.close()
            return
        if not self.paused:  # small pieces: the appliance defers its writes of them
            self.transport.write(b"fa0\r\n" + b"e" * 4000 + b"\r\n")
        self.loop.call_later(0.001, self._tick)

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(self.loop.time())


async def test_timeout_client_ends_a_stream_whose_client_stopped_reading(appliance_factory):
    # timeout_server off (as for event streams and long polls): only timeout_client can end it
    loop = asyncio.get_running_loop()
    streams: list[EventStream] = []

    def make_stream():
        streams.append(EventStream(limit=8.0))
        return streams[-1]

    server = await loop.create_server(make_stream, "127.0.0.1", 0)
    port = free_port()
    text = config(port, {"web": [server.sockets[0].getsockname()[1]]}, profile="stream")
    await appliance_factory(text + '[profile.stream]\ntype = "http"\ntimeout_server = "0"\ntimeout_client = "1s"\n'
                            'buffer_bytes = 65536\n')
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # its buffers fill in a fraction of a second
    sock.connect(("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    writer.write(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n")
    writer.transport.pause_reading()  # and never reads again
    try:
        started = loop.time()
        closed_at = await asyncio.wait_for(asyncio.shield(_first_stream(streams)), 7.0)
        # the stream ends about timeout_client after the buffers on the way filled, not at its own limit
        assert closed_at - started < 4.0
    finally:
        writer.close()
        server.close()


async def _first_stream(streams):
    while not streams:
        await asyncio.sleep(0.01)
    return await streams[0].closed


WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
WS_REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + WS_KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
GREETING = b"\x81\x05hello"
LATE = b"\x81\x04late"
ANSWER = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: " + accept_key(WS_KEY) + b"\r\n\r\n" + GREETING
)
BIG = 100 * 1024


async def test_tunnel_opened_while_the_client_lags_still_carries_the_servers_later_bytes(appliance_factory):
    """The client pipelines a large download and a WebSocket upgrade and reads nothing for a
    moment. The download leaves the client's write buffer over buffer_bytes, so reading from
    the real servers pauses; the 101 then arrives before its connection's handover and the
    tunnel starts while the client is still behind. Once the client reads, the buffer drains
    and the real server's later frames must flow: the tunnel takes the pause over with the
    transports, and lifts it."""
    loop = asyncio.get_running_loop()
    web = await HttpBackend("web").start()
    web.raw["/big"] = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG + b"b" * BIG

    def send(conn: socket.socket) -> None:
        conn.sendall(ANSWER)
        loop.call_later(0.3, conn.sendall, LATE)  # a frame after the handover

    ws = AnsweringAtAccept(send)
    port = free_port()
    app = await appliance_factory(f"""
[virtual_server.web]
listen = "127.0.0.1:{port}"
profile = "small"
pool = "web"
routes = [{{ path_prefix = "/ws", pool = "ws" }}]
[profile.small]
type = "http"
buffer_bytes = "16KiB"
[pool.web]
servers = [{{ name = "w", address = "127.0.0.1:{web.port}" }}]
[pool.ws]
servers = [{{ name = "s", address = "127.0.0.1:{ws.port}" }}]
""")
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client slow to read: a small window
    client.setblocking(False)
    try:
        await loop.sock_connect(client, ("127.0.0.1", port))
        vs = app.engine.virtual_servers["web"]
        for _ in range(100):  # bounded: the appliance accepts
            if vs.connections:
                break
            await asyncio.sleep(0.01)
        (conn,) = vs.connections
        # a slow path to the client: small kernel buffers on both ends
        conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await loop.sock_sendall(client, b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n" + WS_REQUEST)
        await asyncio.sleep(0.6)  # the download ends, the 101 comes, the late frame is sent
        got = b""
        want = ANSWER.split(b"\r\n\r\n", 1)[1] + LATE  # the greeting and the late frame, after the 101 head
        for _ in range(80):  # bounded: about 4 s
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(client, 65536), 0.05)
            except asyncio.TimeoutError:
                if got.endswith(LATE):
                    break
                await asyncio.sleep(0)
                continue
            if not chunk:
                break
            got += chunk
            if got.endswith(LATE):
                break
        assert b"HTTP/1.1 101 " in got, got[:200]
        tunnel = got.split(b"HTTP/1.1 101 ", 1)[1].split(b"\r\n\r\n", 1)[1]
        assert tunnel == want
    finally:
        client.close()
        ws.close()
        web.stop()


# a buffer that takes the whole answer at once: what a slow client has not taken yet waits in
# the appliance when the answer is over and the connection is to close
CLOSING_PROFILE = ('[profile.closing]\ntype = "http"\ntimeout_client = "300ms"\n'
                   'buffer_bytes = "16MiB"\n')
CLOSING_SIZE = 6 << 20  # more than the kernel's buffers take at once


async def _closing_answerer() -> asyncio.AbstractServer:
    """A real server whose answer ends its connection (`Connection: close`), all written at once."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % CLOSING_SIZE)
            writer.write(b"z" * CLOSING_SIZE)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def _slow_download(port: int, burst: int, pause: float, wait_first: float = 0.0) -> tuple[int, str]:
    """A client with a small receive buffer that asks for the answer, then takes `burst` bytes
    every `pause` s (after `wait_first` s of taking nothing): (body bytes read, how it ended).
    Bounded: 20 s."""
    import time

    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c.settimeout(5)
    c.connect(("127.0.0.1", port))
    c.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
    got, end, started = -1, "time", time.monotonic()
    head = b""
    time.sleep(wait_first)
    try:
        while time.monotonic() - started < 20:
            n = 0
            while n < burst:
                data = c.recv(65536)
                if not data:
                    return got + n, "eof"
                if got < 0:
                    head += data
                    if b"\r\n\r\n" not in head:
                        continue
                    data = head.split(b"\r\n\r\n", 1)[1]
                    got = 0
                n += len(data)
            got += n
            time.sleep(pause)
    except OSError as exc:
        end = exc.__class__.__name__
    finally:
        c.close()
    return got, end


async def test_a_closing_answer_reaches_a_slow_but_steady_reader_in_full(appliance_factory):
    """The answer is over and the connection to close, but a slow client has not taken all of it:
    it gets the rest as long as it keeps reading (a pause shorter than timeout_client each time),
    however much longer than timeout_client that takes."""
    server = await _closing_answerer()
    port = free_port()
    await appliance_factory(config(port, {"web": [server.sockets[0].getsockname()[1]]}, profile="closing")
                            + CLOSING_PROFILE)
    got, end = await asyncio.to_thread(_slow_download, port, 256 << 10, 0.1)
    assert (got, end) == (CLOSING_SIZE, "eof")
    server.close()


async def test_a_closing_answer_does_not_wait_for_a_client_that_reads_nothing(appliance_factory):
    """What is still buffered for a client that takes nothing for timeout_client is dropped, with a
    reset (the client knows it did not get everything), and the connection no longer counted."""
    server = await _closing_answerer()
    port = free_port()
    app = await appliance_factory(config(port, {"web": [server.sockets[0].getsockname()[1]]}, profile="closing")
                                  + CLOSING_PROFILE)
    got, end = await asyncio.to_thread(_slow_download, port, 1 << 20, 0.0, 2.0)
    assert got < CLOSING_SIZE and end == "ConnectionResetError", (got, end)
    assert app.stats.vs("web").conn_current == 0
    server.close()
