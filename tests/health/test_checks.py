"""Real probes against real servers on loopback: tcp, http, tls, websocket."""

from __future__ import annotations

import asyncio
import base64
import os
import resource
import socket
import ssl

import pytest
import websockets
from health_helpers import OpenSSLServer, pool_for, server_context, server_tls

from adc.config.model import Address, HealthCheck
from adc.engine.connect import dial
from adc.health.checks import TLS13_VERDICT_SECONDS, run_check


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def probe(check: HealthCheck, address: Address, pool_ssl=None):
    pool = pool_for([address], check)
    pool.ssl = pool_ssl
    return await run_check(check, pool, pool.servers["s0"])


async def test_tcp_check_listening_and_closed(spots):
    spot = await spots()
    ok = await probe(HealthCheck(type="tcp"), spot.address)
    assert ok.ok and ok.reason == "tcp connect" and ok.latency is not None and ok.latency < 1.0
    bad = await probe(HealthCheck(type="tcp"), Address("127.0.0.1", closed_port()))
    assert not bad.ok and bad.reason == "connection refused"


async def test_http_check_200_passes_500_fails(spots):
    good = await spots(status=200)
    bad = await spots(status=500)
    check = HealthCheck(type="http", path="/healthz", host="svc.test", method="HEAD")
    result = await probe(check, good.address)
    assert result.ok and result.reason == "HTTP 200"
    head = good.requests[0].decode()
    assert head.startswith("HEAD /healthz HTTP/1.1\r\n")
    assert "\r\nHost: svc.test" in head and "Connection: close" in head
    result = await probe(check, bad.address)
    assert not result.ok and result.reason == "HTTP 500 (expected 200)"
    result = await probe(HealthCheck(type="http", expect=(200, 500)), bad.address)
    assert result.ok


async def test_http_check_default_host_is_the_server_address(spots):
    spot = await spots()
    await probe(HealthCheck(type="http"), spot.address)
    assert f"\r\nHost: 127.0.0.1:{spot.port}".encode() in spot.requests[0]


@pytest.mark.parametrize("raw,reason", [
    (b"SSH-2.0-OpenSSH\r\n", "HTTP: malformed status line"),
    (b"", "HTTP: connection closed before a status line"),
])
async def test_http_check_garbage(spots, raw, reason):
    spot = await spots(raw=raw)
    result = await probe(HealthCheck(type="http"), spot.address)
    assert not result.ok and result.reason.startswith(reason)


@pytest.mark.parametrize("check_type", ["http", "websocket"])
async def test_a_reset_is_named_as_such(spots, check_type):
    spot = await spots(reset=True)
    result = await probe(HealthCheck(type=check_type), spot.address)
    assert not result.ok and result.reason.endswith(": connection reset before a " + (
        "status line" if check_type == "http" else "response"))


async def test_http_check_times_out_on_a_silent_server(spots):
    spot = await spots(silent=True)
    result = await probe(HealthCheck(type="http", timeout=0.2), spot.address)
    assert not result.ok and result.reason == "timeout after 0.2s"


async def test_tls_check(spots, pki):
    spot = await spots(server_context(pki.server))
    tls = server_tls(pki.ca)
    result = await probe(HealthCheck(type="tls"), spot.address, tls)
    assert result.ok and result.reason == "tls handshake"
    # untrusted certificate
    rogue = await spots(server_context(pki.rogue_server))
    result = await probe(HealthCheck(type="tls"), rogue.address, tls)
    assert not result.ok and "certificate verify failed" in result.reason
    # no TLS at all on the port
    plain = await spots()
    result = await probe(HealthCheck(type="tls", timeout=0.3), plain.address, tls)
    assert not result.ok and result.reason == "timeout after 0.3s"


@pytest.fixture
def openssl_servers():
    made: list[OpenSSLServer] = []

    def make(ctx: ssl.SSLContext) -> OpenSSLServer:
        made.append(OpenSSLServer(ctx))
        return made[-1]

    yield make
    for server in made:
        server.stop()


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
async def test_tls_check_hears_the_servers_verdict_on_the_client_certificate(openssl_servers, pki, version):
    # Under TLS 1.3 the real server judges the client's certificate after the client's side of
    # the handshake is over: a refusal is an alert that comes next, an acceptance its tickets.
    def requiring(tickets: int = 2) -> OpenSSLServer:
        ctx = server_context(pki.server, client_ca=pki.ca, tickets=tickets)
        ctx.maximum_version = getattr(ssl.TLSVersion, version)
        return openssl_servers(ctx)

    server = requiring()
    result = await probe(HealthCheck(type="tls"), server.address, server_tls(pki.ca, client=pki.client))
    assert result.ok and result.reason == "tls handshake"
    assert result.latency < TLS13_VERDICT_SECONDS  # the tickets said so; no waiting them out
    result = await probe(HealthCheck(type="tls"), server.address, server_tls(pki.ca, client=pki.rogue_client))
    assert not result.ok and result.reason.startswith("TLS: peer does not trust our certificate (unknown CA)"), result.reason
    result = await probe(HealthCheck(type="tls"), server.address, server_tls(pki.ca))
    assert not result.ok and result.reason.startswith("TLS: peer "), result.reason  # (certificate required)
    # a server that sends no tickets says nothing when it accepts: a short wait, then a pass
    quiet = requiring(tickets=0)
    result = await probe(HealthCheck(type="tls"), quiet.address, server_tls(pki.ca, client=pki.client))
    assert result.ok and result.reason == "tls handshake", result.reason
    result = await probe(HealthCheck(type="tls"), quiet.address, server_tls(pki.ca, client=pki.rogue_client))
    assert not result.ok and result.reason.startswith("TLS: peer does not trust our certificate (unknown CA)"), result.reason


async def test_http_check_goes_over_tls_when_the_pool_has_server_ssl(spots, pki):
    spot = await spots(server_context(pki.server), status=204)
    result = await probe(HealthCheck(type="http", expect=(204,)), spot.address, server_tls(pki.ca))
    assert result.ok and result.reason == "HTTP 204"
    assert spot.requests and spot.requests[0].startswith(b"GET / HTTP/1.1")


async def test_checks_and_traffic_share_tls_sessions(spots, pki):
    """A check dials as the engine does: the session it leaves is resumed by traffic to the same real server."""
    spot = await spots(server_context(pki.server))
    check = HealthCheck(type="http")
    pool = pool_for([spot.address], check)
    pool.ssl = server_tls(pki.ca)
    rs = pool.servers["s0"]
    assert (await run_check(check, pool, rs)).ok

    answered = asyncio.get_running_loop().create_future()

    class Request(asyncio.Protocol):
        def connection_made(self, transport):
            transport.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")

        def data_received(self, data):
            answered.done() or answered.set_result(data)

    loop = asyncio.get_running_loop()
    transport, _ = await asyncio.wait_for(dial(
        loop, Request, "127.0.0.1", spot.port, tls=pool.ssl.for_dial(rs.address, None, "127.0.0.1"), tls_timeout=5,
    ), 5)
    try:
        assert (await asyncio.wait_for(answered, 5)).startswith(b"HTTP/1.1 200 ")
        assert transport.get_extra_info("ssl_object").session_reused
    finally:
        transport.close()


async def test_websocket_check_against_a_real_websocket_server():
    seen = []
    closed = asyncio.Event()

    async def handler(ws):
        await ws.wait_closed()
        seen.append((ws.request.path, ws.close_code))
        closed.set()

    async with websockets.serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        result = await probe(HealthCheck(type="websocket", path="/ws"), Address("127.0.0.1", port))
        assert result.ok and result.reason == "websocket 101"
        await asyncio.wait_for(closed.wait(), 2.0)
    assert seen == [("/ws", 1000)]  # a clean close


async def test_websocket_check_over_tls(pki):
    async def handler(ws):
        await ws.wait_closed()

    async with websockets.serve(handler, "127.0.0.1", 0, ssl=server_context(pki.server)) as server:
        port = server.sockets[0].getsockname()[1]
        result = await probe(HealthCheck(type="websocket", path="/"), Address("127.0.0.1", port),
                             server_tls(pki.ca))
        assert result.ok, result.reason


async def test_websocket_check_fails_on_200_instead_of_101(spots):
    spot = await spots(status=200)
    result = await probe(HealthCheck(type="websocket", path="/ws"), spot.address)
    assert not result.ok and result.reason == "websocket: HTTP 200 instead of 101"
    assert b"Upgrade: websocket" in spot.requests[0] and b"Sec-WebSocket-Key: " in spot.requests[0]


async def test_websocket_check_fails_on_a_wrong_accept_key(spots):
    wrong = base64.b64encode(b"x" * 20).decode()
    raw = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {wrong}\r\n\r\n"
    ).encode()
    spot = await spots(raw=raw)
    result = await probe(HealthCheck(type="websocket"), spot.address)
    assert not result.ok and "Sec-WebSocket-Accept" in result.reason


async def test_websocket_check_closed_port():
    result = await probe(HealthCheck(type="websocket"), Address("127.0.0.1", closed_port()))
    assert not result.ok and result.reason == "connection refused"


async def test_tls_check_names_the_server_as_the_server_ssl_profile_says(spots, pki):
    spot = await spots(server_context(pki.server))
    tls = server_tls(pki.ca, sni="@host")  # the check's host plays the request's Host
    result = await probe(HealthCheck(type="tls", host="localhost"), spot.address, tls)
    assert result.ok, result.reason
    result = await probe(HealthCheck(type="tls", host="wrong.test"), spot.address, tls)
    assert not result.ok and "certificate verify failed" in result.reason
    result = await probe(HealthCheck(type="tls", host="wrong.test"), spot.address, server_tls(pki.ca, verify=False))
    assert result.ok


async def test_a_probe_short_of_descriptors_is_no_verdict_on_the_server(spots):
    # The appliance has no descriptor left for the probe's socket (EMFILE): the failure is
    # said to be local, which the monitor counts neither way.
    spot = await spots()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest = os.dup(0)  # the lowest free descriptor: a limit there leaves none for the socket
    os.close(lowest)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
    try:
        result = await probe(HealthCheck(type="tcp"), spot.address)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not result.ok and result.local, result
    assert result.reason == "Too many open files (a local resource, not the server)"
    assert (await probe(HealthCheck(type="tcp"), spot.address)).ok
