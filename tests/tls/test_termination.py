"""The TLS layer of https listeners (adc.tls.termination) over real TLS on loopback.

What it owes its protocol (a transport's contract: flow control both ways, the end of the
client's input, one connection_lost) and what it owes operators (every failed handshake
reported with the client's address, port checks not reported, the handshake bounded).
"""

from __future__ import annotations

import asyncio
import ssl

import pytest

from adc.config.model import CertificatePair, ClientSSL
from adc.tls.contexts import build_client_ssl, handshake_failure_reason
from adc.tls.termination import TLSLayer, terminating
from tests.tls.conftest import bio_client

IO_TIMEOUT = 5.0
CHUNK = 64 * 1024


class Recorder:
    """A protocol that records what its transport does to it; it can pause its reading."""

    def __init__(self, made: list["Recorder"], pause_after: int = 0) -> None:
        made.append(self)
        self.transport: TLSLayer | None = None
        self.events: list[str] = []
        self.data = bytearray()
        self.pause_after = pause_after  # pause reading once this many bytes arrived (0: never)
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: TLSLayer) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data
        assert self.transport is not None
        if self.pause_after and len(self.data) >= self.pause_after and self.transport.is_reading():
            self.transport.pause_reading()
            self.events.append("paused")

    def eof_received(self) -> bool:
        self.events.append("eof")
        return False

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.fixture
async def layer_server(pki):
    """`await start(handshake_timeout=5.0) -> (port, made, failures)`: a listener behind TLSLayer."""
    servers = []

    async def start(handshake_timeout: float = 5.0, pause_after: int = 0):
        loop = asyncio.get_running_loop()
        failures: list[tuple[str, str]] = []
        cfg = ClientSSL(certificates=(CertificatePair(*pki.server),))
        ctx = build_client_ssl(
            cfg, on_handshake_error=lambda exc, layer: failures.append((handshake_failure_reason(exc, layer), layer.peer))
        )
        made: list[Recorder] = []
        server = await loop.create_server(
            terminating(lambda: Recorder(made, pause_after), ctx, loop, handshake_timeout), "127.0.0.1", 0
        )
        servers.append(server)
        return server.sockets[0].getsockname()[1], made, failures

    yield start
    for s in servers:
        s.close()


def client_context(pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


async def tls_connection(port: int, pki) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, ssl=client_context(pki), server_hostname="localhost")


async def until(predicate, what: str) -> None:
    for _ in range(500):  # bounded: 5 s
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_failed_handshake_is_reported_with_the_client_address(layer_server):
    port, made, failures = await layer_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    local = "127.0.0.1:%d" % writer.get_extra_info("sockname")[1]
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.read(), IO_TIMEOUT)  # the appliance closes
    writer.close()
    await until(lambda: failures, "the failure report")
    assert failures == [("plain HTTP request on a TLS port", local)]
    assert made[0].events == []  # the protocol never saw the connection


async def test_a_port_check_is_not_a_failed_handshake(layer_server):
    port, made, failures = await layer_server()
    for _ in range(3):
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
    # and one that starts a handshake, then leaves: reported
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x16\x03\x01\x00\x40partial client hello")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    await until(lambda: failures, "the failure report")
    await asyncio.sleep(0.05)
    assert [reason for reason, _ in failures] in (
        ["connection closed during handshake"],
        ["connection reset during handshake"],
    )


async def test_handshake_timeout_closes_and_is_reported(layer_server):
    port, _made, failures = await layer_server(handshake_timeout=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x16\x03\x01")  # a handshake that never finishes
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(reader.read(), IO_TIMEOUT) == b""
    assert 0.15 < asyncio.get_running_loop().time() - started < 2.0
    writer.close()
    assert [reason for reason, _ in failures] == ["handshake timed out"]


async def test_write_flow_control_is_the_tcp_transports(layer_server, pki):
    """A client that does not read: the protocol is paused, the buffer stays bounded, then resumed."""
    port, made, _ = await layer_server()
    reader, writer = await tls_connection(port, pki)
    writer.write(b"go")
    await until(lambda: made and made[0].data == b"go", "the request")
    layer = made[0].transport
    assert layer is not None
    layer.set_write_buffer_limits(high=256 * 1024, low=64 * 1024)
    sent = 0
    for _ in range(400):  # bounded: at most 25 MiB
        if "pause_writing" in made[0].events:
            break
        layer.write(b"x" * CHUNK)
        sent += CHUNK
        await asyncio.sleep(0)
    assert "pause_writing" in made[0].events
    assert layer.get_write_buffer_size() < 256 * 1024 + CHUNK + 1024  # one chunk's records over the mark
    got = 0
    while got < sent:
        got += len(await asyncio.wait_for(reader.read(1 << 20), IO_TIMEOUT))
    assert got == sent
    await until(lambda: "resume_writing" in made[0].events, "resume_writing")
    writer.close()
    await asyncio.wait_for(made[0].lost, IO_TIMEOUT)


async def test_paused_reading_holds_the_records_and_loses_none(layer_server, pki):
    port, made, _ = await layer_server(pause_after=1)
    _reader, writer = await tls_connection(port, pki)
    payload = bytes(range(256)) * 4096  # 1 MiB in many records
    writer.write(payload)
    await until(lambda: made and "paused" in made[0].events, "the pause")
    await asyncio.sleep(0.1)
    held = len(made[0].data)
    assert held < len(payload)  # nothing is delivered while paused ...
    await asyncio.sleep(0.1)
    assert len(made[0].data) == held
    layer = made[0].transport
    assert layer is not None
    made[0].pause_after = 0
    layer.resume_reading()  # ... and everything after
    await until(lambda: len(made[0].data) == len(payload), "the rest of the payload")
    assert bytes(made[0].data) == payload
    writer.close()
    await asyncio.wait_for(made[0].lost, IO_TIMEOUT)


async def test_the_end_of_input_waits_for_the_records_before_it(layer_server, pki):
    """The client sends, then closes, while the protocol has paused reading: all of it, then EOF."""
    port, made, _ = await layer_server(pause_after=1)
    _reader, writer = await tls_connection(port, pki)
    payload = bytes(range(256)) * 2048  # 512 KiB
    writer.write(payload)
    writer.close()  # close_notify and FIN right behind the data
    await until(lambda: made and "paused" in made[0].events, "the pause")
    await asyncio.sleep(0.2)
    assert "eof" not in made[0].events and len(made[0].data) < len(payload)
    layer = made[0].transport
    assert layer is not None
    made[0].pause_after = 0
    layer.resume_reading()
    assert await asyncio.wait_for(made[0].lost, IO_TIMEOUT) is None
    assert bytes(made[0].data) == payload
    assert made[0].events == ["made", "paused", "eof", "lost"]


async def test_close_notify_ends_the_input_then_the_connection(layer_server, pki):
    port, made, _ = await layer_server()
    reader, writer = await tls_connection(port, pki)
    writer.write(b"last words")
    await until(lambda: made and made[0].data == b"last words", "the data")
    layer = made[0].transport
    assert layer is not None
    assert layer.get_extra_info("peercert") is None  # no client certificate asked for
    assert layer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    assert layer.get_extra_info("peername")[0] == "127.0.0.1"
    writer.close()  # close_notify, then FIN
    assert await asyncio.wait_for(made[0].lost, IO_TIMEOUT) is None
    assert made[0].events == ["made", "eof", "lost"]
    assert layer.is_closing()


async def test_write_eof_sends_close_notify_and_reading_goes_on(layer_server, pki):
    port, made, _ = await layer_server()
    client, incoming, outgoing, reader, writer = await bio_client(port, pki)
    writer.write(outgoing.read())  # TLS 1.3: the client's Finished
    await until(lambda: made and "made" in made[0].events, "the connection")
    layer = made[0].transport
    assert layer.can_write_eof()
    layer.write(b"last answer")
    layer.write_eof()
    layer.write(b"dropped")  # nothing goes out after the half-close
    received = b""
    for _ in range(20):  # bounded: the answer, then close_notify
        incoming.write(await asyncio.wait_for(reader.read(65536), IO_TIMEOUT))
        try:
            while chunk := client.read(4096):
                received += chunk
        except ssl.SSLWantReadError:
            continue
        break  # read() returned b"": close_notify
    assert received == b"last answer"
    client.write(b"the client goes on")  # TLS 1.3: its direction is still open
    writer.write(outgoing.read())
    await until(lambda: bytes(made[0].data) == b"the client goes on", "the client's bytes")
    assert not layer.is_closing() and "lost" not in made[0].events
    layer.close()
    assert await asyncio.wait_for(made[0].lost, IO_TIMEOUT) is None
    writer.close()


async def test_a_record_cut_short_by_the_fin_ends_the_input(layer_server, pki):
    port, made, _ = await layer_server()
    client, incoming, outgoing, reader, writer = await bio_client(port, pki)
    client.write(b"whole")
    whole = outgoing.read()
    client.write(b"cut short")
    cut = outgoing.read()
    writer.write(whole + cut[:-3])
    writer.write_eof()  # FIN inside the second record
    assert await asyncio.wait_for(made[0].lost, IO_TIMEOUT) is None  # the appliance closes, unprompted
    assert bytes(made[0].data) == b"whole"
    assert made[0].events == ["made", "eof", "lost"]
    writer.close()


async def test_the_first_answer_carries_the_tls13_tickets(layer_server, pki):
    """Under TLS 1.3 nothing follows the handshake until the answer; resumption still works."""
    port, made, _ = await layer_server()
    client, incoming, outgoing, reader, writer = await bio_client(port, pki)
    assert client.version() == "TLSv1.3"
    writer.write(outgoing.read())  # the client's Finished
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reader.read(65536), 0.2)  # no lone packet of tickets
    client.write(b"question")
    writer.write(outgoing.read())
    await until(lambda: made and made[0].data == b"question", "the question")
    assert made[0].transport is not None
    made[0].transport.write(b"answer")
    incoming.write(await asyncio.wait_for(reader.read(65536), IO_TIMEOUT))
    assert client.read(100) == b"answer"
    assert client.session is not None and client.session.has_ticket  # the tickets came with it
    writer.close()
