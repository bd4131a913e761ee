"""Layer-4 virtual servers on real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import pytest

from adc.engine.listener import ListenError, file_name
from tests.conftest import free_port, no_adc_cycles


def l4_config(port: int, servers: str, extra_pool: str = "", extra_vs: str = "", profile: str = "tcp") -> str:
    return f"""
    [virtual_server.l4]
    listen = "127.0.0.1:{port}"
    profile = "{profile}"
    pool = "p"
    {extra_vs}

    [pool.p]
    {extra_pool}
    servers = [{servers}]
    """


async def test_random_bytes_both_ways_are_exact(appliance_factory, backends):
    received = bytearray()
    done = asyncio.Event()

    class Sink(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t
            t.write(payload_down)
            t.write_eof()

        def data_received(self, data):
            received.extend(data)

        def eof_received(self):
            done.set()

    payload_up = os.urandom(1 << 20)
    payload_down = os.urandom(1 << 20)
    backend = await backends(factory=Sink)
    port = free_port()
    await appliance_factory(l4_config(port, f'{{ name = "a", address = "127.0.0.1:{backend.port}" }}'))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload_up)
    writer.write_eof()
    down = await asyncio.wait_for(reader.read(-1), 10)
    await asyncio.wait_for(done.wait(), 10)
    writer.close()
    assert hashlib.sha256(down).hexdigest() == hashlib.sha256(payload_down).hexdigest()
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(payload_up).hexdigest()


async def test_closed_sessions_leave_no_cycles(appliance_factory, backends):
    backend = await backends()
    port = free_port()
    await appliance_factory(l4_config(port, f'{{ name = "a", address = "127.0.0.1:{backend.port}" }}'))
    with no_adc_cycles():
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.2)


async def test_half_close_client_first(appliance_factory, backends):
    """Client half-closes; the server still answers after seeing EOF."""
    backend = await backends()  # echo: answers EOF with EOF after echoing
    port = free_port()
    await appliance_factory(l4_config(port, f'{{ name = "a", address = "127.0.0.1:{backend.port}" }}'))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(-1), 5) == b"hello"
    writer.close()


async def test_half_close_server_first(appliance_factory, backends):
    """The server half-closes first; the client can still send and the server reads it."""
    got = asyncio.Queue()

    class Greeter(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t
            self.buf = b""
            t.write(b"banner")
            t.write_eof()

        def data_received(self, data):
            self.buf += data

        def eof_received(self):
            got.put_nowait(self.buf)

    backend = await backends(factory=Greeter)
    port = free_port()
    await appliance_factory(l4_config(port, f'{{ name = "a", address = "127.0.0.1:{backend.port}" }}'))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(-1), 5) == b"banner"  # EOF from the server arrived
    writer.write(b"still talking")
    writer.write_eof()
    assert await asyncio.wait_for(got.get(), 5) == b"still talking"
    writer.close()


async def test_failover_when_a_server_refuses(appliance_factory, backends):
    backend = await backends()
    dead = free_port()
    port = free_port()
    app = await appliance_factory(
        l4_config(
            port,
            f'{{ name = "dead", address = "127.0.0.1:{dead}" }}, {{ name = "live", address = "127.0.0.1:{backend.port}" }}',
        )
    )
    for i in range(6):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping %d" % i)
        assert await asyncio.wait_for(reader.readexactly(6), 5) == b"ping %d" % i
        writer.close()
    assert backend.accepted == 6
    assert app.stats.server("p", "dead").connect_failures >= 1


async def test_no_server_closes_client_promptly(appliance_factory, caplog):
    port = free_port()
    await appliance_factory(l4_config(port, f'{{ name = "dead", address = "127.0.0.1:{free_port()}" }}'))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        data = await asyncio.wait_for(reader.read(10), 5)
    except ConnectionResetError:
        data = b""
    assert data == b""
    writer.close()
    assert "connection refused" in caplog.text


async def test_weighted_round_robin_over_1000_connections(appliance_factory, backends):
    bs = [await backends() for _ in range(3)]
    port = free_port()
    servers = ", ".join(
        f'{{ name = "s{i}", address = "127.0.0.1:{b.port}", weight = {i + 1} }}' for i, b in enumerate(bs)
    )
    await appliance_factory(l4_config(port, servers))

    async def one(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x")
        await reader.readexactly(1)
        writer.close()

    for batch in range(0, 1000, 50):
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(batch, batch + 50))), 20)
    counts = [b.accepted for b in bs]
    assert sum(counts) == 1000
    for i, c in enumerate(counts):
        expected = 1000 * (i + 1) / 6
        assert abs(c - expected) <= 0.05 * expected, counts


async def test_port_in_use_names_the_file_and_key(appliance_factory, tmp_path):
    holder = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = holder.sockets[0].getsockname()[1]
    free = free_port()
    try:
        with pytest.raises(ListenError) as err:
            await appliance_factory(l4_config(port, '{ name = "a", address = "127.0.0.1:9" }'))
        assert str(err.value) == (
            f"{file_name(tmp_path / 'appliance.toml')}: virtual_server.l4.listen: cannot listen on 127.0.0.1:{port}: "
            "address already in use"
        )
        # of several addresses, the one in use
        text = l4_config(port, '{ name = "a", address = "127.0.0.1:9" }').replace(
            f'listen = "127.0.0.1:{port}"', f'listen = ["127.0.0.1:{free}", "127.0.0.1:{port}"]'
        )
        with pytest.raises(ListenError) as err:
            await appliance_factory(text)
        assert str(err.value).endswith(
            f"appliance.toml: virtual_server.l4.listen[1]: cannot listen on 127.0.0.1:{port}: address already in use"
        )
    finally:
        holder.close()


async def test_graceful_stop_lets_transfer_finish(appliance_factory, backends):
    class Slow(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t
            asyncio.ensure_future(self.send())

        async def send(self):
            for _ in range(10):
                self.t.write(b"x" * 1000)
                await asyncio.sleep(0.05)
            self.t.close()

    backend = await backends(factory=Slow)
    port = free_port()
    app = await appliance_factory(l4_config(port, f'{{ name = "a", address = "127.0.0.1:{backend.port}" }}'))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    first = await asyncio.wait_for(reader.readexactly(1000), 5)
    stop = asyncio.ensure_future(app.stop(grace=5))
    await asyncio.sleep(0.05)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)  # no longer accepting
    rest = await asyncio.wait_for(reader.read(-1), 5)
    assert len(first) + len(rest) == 10_000
    await asyncio.wait_for(stop, 5)
    writer.close()


async def test_grace_expiry_closes_the_rest(appliance_factory, backends):
    backend = await backends()
    port = free_port()
    app = await appliance_factory(l4_config(port, f'{{ name = "a", address = "127.0.0.1:{backend.port}" }}'))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hi")
    await reader.readexactly(2)
    await asyncio.wait_for(app.stop(grace=0.2), 3)
    assert await asyncio.wait_for(reader.read(10), 3) == b""
    writer.close()


async def test_idle_timeout_closes_session(appliance_factory, backends, write_config):
    backend = await backends()
    port = free_port()
    app = await appliance_factory(
        l4_config(port, f'{{ name = "a", address = "127.0.0.1:{backend.port}" }}', profile="fast")
        + '[profile.fast]\ntype = "tcp"\ntimeout_client = "200ms"\ntimeout_server = "200ms"\n'
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hi")
    await reader.readexactly(2)
    assert await asyncio.wait_for(reader.read(10), 3) == b""  # closed by the idle timeout
    assert app.stats.vs("l4").timeouts == 1
    writer.close()


async def test_max_connections_per_virtual_server(appliance_factory, backends, caplog):
    backend = await backends()
    port = free_port()
    app = await appliance_factory(
        l4_config(port, f'{{ name = "a", address = "127.0.0.1:{backend.port}" }}', extra_vs="max_connections = 2")
    )
    held = []
    for _ in range(2):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"a")
        await r.readexactly(1)
        held.append(w)

    async def refused() -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert await asyncio.wait_for(r.read(1), 3) == b""
        except ConnectionResetError:
            pass
        w.close()

    await refused()
    assert app.stats.vs("l4").rejected == 1
    # the refusal is logged; more within REFUSAL_LOG_SECONDS are counted into the next line
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == [
        "virtual_server l4: max_connections (2) reached: 1 connection(s) refused since the last such line"
    ]
    await refused()
    assert app.stats.vs("l4").rejected == 2
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1
    for x in held:
        x.close()


async def test_max_connections_per_real_server_overflows_elsewhere(appliance_factory, backends):
    b1, b2 = await backends(), await backends()
    port = free_port()
    await appliance_factory(
        l4_config(
            port,
            f'{{ name = "a", address = "127.0.0.1:{b1.port}", max_connections = 1 }}, '
            f'{{ name = "b", address = "127.0.0.1:{b2.port}", weight = 1 }}',
        )
    )
    held = []
    for _ in range(3):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"a")
        await r.readexactly(1)
        held.append(w)
    assert (b1.accepted, b2.accepted) == (1, 2)
    for w in held:
        w.close()


async def test_ipv4_and_ipv6_listeners(appliance_factory, backends):
    backend = await backends()
    port = free_port()
    app = await appliance_factory(
        f"""
        [virtual_server.dual]
        listen = ["127.0.0.1:{port}", "[::1]:{port}"]
        profile = "tcp"
        pool = "p"
        [pool.p]
        servers = [{{ name = "a", address = "127.0.0.1:{backend.port}" }}]
        """
    )
    assert sorted(app.engine.virtual_servers["dual"].addresses()) == sorted([f"127.0.0.1:{port}", f"[::1]:{port}"])
    for host in ("127.0.0.1", "::1"):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"v")
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"v"
        writer.close()


async def test_shutdown_write_sends_a_fin_and_declines_a_closed_transport():
    from adc.relay import shutdown_write

    loop = asyncio.get_running_loop()
    eof = loop.create_future()

    class Peer(asyncio.Protocol):
        def eof_received(self):
            eof.set_result(True)

    server = await loop.create_server(Peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    assert shutdown_write(transport) is True
    assert await asyncio.wait_for(eof, 5)  # the peer read the FIN
    transport.close()
    await asyncio.sleep(0.05)
    assert shutdown_write(transport) is False  # no descriptor any more: declined, not raised

    # with the transport's own socket (what the appliance dialled): no view of the descriptor needed
    eof = loop.create_future()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=sock)
    assert shutdown_write(transport, sock) is True
    assert await asyncio.wait_for(eof, 5)
    transport.close()
    await asyncio.sleep(0.05)
    assert sock.fileno() == -1  # the transport detached it: no stale descriptor number to hit
    assert shutdown_write(transport, sock) is False
    server.close()
    await server.wait_closed()


RCVBUF = 128 << 10  # a window well above the loopback MSS (64 KiB): no stalls on the sender's persist timer


def _slow_reader(port: int, size: int, burst: int, pause: float, wait_first: float = 0.0) -> tuple[int, str]:
    """A client with a fixed receive buffer: reads `burst` bytes, sleeps `pause`, and so on
    (after `wait_first` seconds of reading nothing); (bytes read, how it ended). Bounded: 20 s."""
    import time

    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    c.settimeout(5)
    c.connect(("127.0.0.1", port))
    c.sendall(b"go")
    c.shutdown(socket.SHUT_WR)
    got, end, started = 0, "time", time.monotonic()
    time.sleep(wait_first)
    try:
        while got < size and time.monotonic() - started < 20:
            n = 0
            while n < burst and got + n < size:
                data = c.recv(65536)
                if not data:
                    return got + n, "eof"
                n += len(data)
            got += n
            time.sleep(pause)
        end = "all"
    except OSError as exc:
        end = exc.__class__.__name__
    finally:
        c.close()
    return got, end


async def _writer_backend(size: int, close: bool, done: asyncio.Event | None = None):
    """A real server that writes `size` bytes at once when a client's first bytes come, then
    closes (`close`), or stays silent and open (whatever the appliance sends) until `done` (20 s at most)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if await reader.read(2):
                writer.write(b"z" * size)
                await writer.drain()
                if not close and done is not None:
                    await asyncio.wait_for(done.wait(), 20)
        except (asyncio.TimeoutError, asyncio.CancelledError, ConnectionError):
            pass  # (cancelled: the test is over)
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


# a write buffer that takes the whole answer: the appliance reads it (and the real server's FIN,
# if it comes) at once, and what a slow client has not taken yet waits in the appliance
SLOW = ('[profile.slow]\ntype = "tcp"\ntimeout_client = "500ms"\ntimeout_server = "500ms"\n'
        'timeout_client_fin = "500ms"\ntimeout_server_fin = "500ms"\nbuffer_bytes = "16MiB"\n')
SIZE = 12 << 20  # more than the kernel's buffers take at once


async def test_a_slow_but_steady_reader_gets_everything(appliance_factory):
    """Idle means nothing moves: a reader that keeps taking what is buffered for it, more slowly than
    the timeout, is not cut off (HAProxy's timeout client and NGINX's send_timeout count so too)."""
    for close in (False, True):  # the real server silent and open, or gone (the session has ended then)
        done = asyncio.Event()
        server = await _writer_backend(SIZE, close, done)
        port = free_port()
        backend_port = server.sockets[0].getsockname()[1]
        await appliance_factory(l4_config(port, f'{{ name = "a", address = "127.0.0.1:{backend_port}" }}',
                                          profile="slow") + SLOW)
        got, end = await asyncio.to_thread(_slow_reader, port, SIZE, 1 << 20, 0.1)
        assert (got, end) == (SIZE, "all"), close
        done.set()
        await asyncio.sleep(0.05)
        server.close()


async def test_a_session_ended_by_both_sides_does_not_wait_for_a_reader_that_never_reads(appliance_factory):
    """After both sides' FINs, what is still buffered for a client that reads nothing is dropped
    once a timeout passes without it taking anything, with a reset: not kept for ever, uncounted."""
    server = await _writer_backend(SIZE, True)
    port = free_port()
    backend_port = server.sockets[0].getsockname()[1]
    app = await appliance_factory(l4_config(port, f'{{ name = "a", address = "127.0.0.1:{backend_port}" }}',
                                            profile="slow") + SLOW)
    got, end = await asyncio.to_thread(_slow_reader, port, SIZE, 1 << 20, 0.0, 2.0)
    assert got < SIZE and end == "ConnectionResetError", (got, end)
    assert app.stats.vs("l4").conn_current == 0
    server.close()
