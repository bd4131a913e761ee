"""`dial`: connecting to a real server, at once when the handshake is already over."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from adc.engine.connect import dial
from tests.conftest import free_port
from tests.engine.test_l7_http import unanswering_listener


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class Collect(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.got = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data
        self.got.set()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_dial_by_address_and_by_name(host):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        transport, proto = await dial(loop, Collect, host, port)
        try:
            assert transport.get_extra_info("peername")[:2] == ("127.0.0.1", port)
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            transport.write(b"ping")
            await asyncio.wait_for(proto.got.wait(), 5)
            assert bytes(proto.data) == b"ping"
        finally:
            transport.close()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_first_data_leaves_first_once_connected(host):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    calls = []
    try:
        transport, proto = await dial(loop, Collect, host, port, b"first,", lambda: calls.append("connected"),
                                      lambda: calls.append("waiting"))
        try:
            transport.write(b"then")
            deadline = loop.time() + 5
            while bytes(proto.data) != b"first,then" and loop.time() < deadline:
                proto.got.clear()
                await asyncio.wait_for(proto.got.wait(), 5)
            assert bytes(proto.data) == b"first,then"
            # by address the data leave with the TCP connection, once it is up; on loopback
            # it is up when connect() returns, so nothing waited (no connect deadline armed);
            # a name is resolved, which waits
            assert calls == (["connected"] if host == "127.0.0.1" else ["waiting"])
        finally:
            transport.close()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("host, family", [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)])
async def test_the_event_loop_detaches_the_dialled_socket_instead_of_closing_it_twice(host, family):
    """uvloop closes a transport's descriptor itself. A `socket.socket` it was given is then
    detached; any other socket object is closed a second time, on a descriptor number that
    another thread (a name lookup) may already have been given again. dial gives it a
    `socket.socket`, whose family and type (plain attributes there) are the real ones."""
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6")
    loop = asyncio.get_running_loop()
    given = []

    class Loop:  # the running loop, noting the socket dial gives it
        def __getattr__(self, name):
            return getattr(loop, name)

        async def create_connection(self, *args, **kwargs):
            given.append(kwargs.get("sock"))
            return await loop.create_connection(*args, **kwargs)

    try:
        server = await loop.create_server(Echo, host, 0)
    except OSError:
        pytest.skip(f"cannot listen on {host}")
    port = server.sockets[0].getsockname()[1]
    try:
        transport, _ = await dial(Loop(), Collect, host, port)
        [sock] = given
        assert isinstance(sock, socket.socket)
        assert (sock.family, sock.type) == (family, socket.SOCK_STREAM)
        probe = socket.socket(fileno=os.dup(sock.fileno()))  # what the kernel says
        try:
            assert (probe.family, probe.type) == (family, socket.SOCK_STREAM)
        finally:
            probe.close()
        assert transport.get_extra_info("peername")[1] == port
        assert sock.gettimeout() == 0.0 and not os.get_blocking(sock.fileno())  # and the kernel agrees
        transport.close()
        for _ in range(3):
            await asyncio.sleep(0)
        assert transport.is_closing() and sock.fileno() == -1  # let go of by the event loop
    finally:
        server.close()
        await server.wait_closed()


def test_the_dialled_sockets_blocking_mode_is_what_was_asked():
    """dial's socket skips setblocking(False)'s system call when it is non-blocking already;
    every other change still reaches the kernel."""
    from adc.engine.connect import _NONBLOCK, _Socket4

    sock = _Socket4(socket.AF_INET, socket.SOCK_STREAM | _NONBLOCK)
    try:
        sock.setblocking(False)
        assert sock.gettimeout() == 0.0 and not os.get_blocking(sock.fileno())
        sock.setblocking(True)
        assert sock.gettimeout() is None and os.get_blocking(sock.fileno())
        sock.setblocking(False)
        assert sock.gettimeout() == 0.0 and not os.get_blocking(sock.fileno())
    finally:
        sock.close()


async def test_refused_is_connection_refused_and_leaks_no_descriptor():
    loop = asyncio.get_running_loop()
    port = free_port()  # nothing listens there
    before = open_fds()
    for _ in range(20):
        with pytest.raises(ConnectionRefusedError):
            await dial(loop, Collect, "127.0.0.1", port)
    assert open_fds() == before


async def test_a_pending_connect_waits_and_can_be_cancelled_without_a_leak():
    loop = asyncio.get_running_loop()
    lst, fillers, port = unanswering_listener()
    try:
        before = open_fds()
        task = asyncio.ensure_future(dial(loop, Collect, "127.0.0.1", port))
        await asyncio.sleep(0.2)
        assert not task.done()  # the SYN went unanswered: still waiting to be writable
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert open_fds() == before
    finally:
        for s in fillers:
            s.close()
        lst.close()


@pytest.mark.parametrize("first", [b"", b"first bytes"])
async def test_a_connect_that_completes_later_is_waited_for(first):
    loop = asyncio.get_running_loop()
    lst, fillers, port = unanswering_listener()
    calls = []
    try:
        task = asyncio.ensure_future(dial(
            loop, Collect, "127.0.0.1", port, first, lambda: calls.append("connected"), lambda: calls.append("waiting")
        ))
        await asyncio.sleep(0.1)
        assert not task.done() and calls == ["waiting"]  # (trying the first bytes did not pass for connected)
        # make room in the accept queue: the kernel answers the client's next SYN retry
        lst.setblocking(False)
        accepted = []
        deadline = loop.time() + 10
        while not task.done() and loop.time() < deadline:
            try:
                conn, _ = lst.accept()
                accepted.append(conn)
            except BlockingIOError:
                pass
            await asyncio.sleep(0.05)
        transport, _ = await asyncio.wait_for(task, 1)
        assert transport.get_extra_info("peername")[1] == port
        assert calls == (["waiting", "connected"] if first else ["waiting"])
        if first:
            mine = transport.get_extra_info("sockname")
            lst.settimeout(5)
            for _ in range(len(fillers) + 1):  # it may still wait in the accept queue
                if any(c.getpeername() == mine for c in accepted):
                    break
                accepted.append(lst.accept()[0])
            [ours] = [c for c in accepted if c.getpeername() == mine]
            ours.settimeout(5)
            assert ours.recv(100) == first
        transport.close()
        for c in accepted:
            c.close()
    finally:
        for s in fillers:
            s.close()
        lst.close()
