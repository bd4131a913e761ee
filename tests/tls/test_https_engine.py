"""The https profile and server SSL through the real appliance, with real TLS on loopback."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import re
import os
import socket
import ssl
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

import adc
from adc import compiled
from adc.cli import main as adc_main
from adc.config.model import CertificatePair, ClientSSL
from adc.tls.contexts import build_client_ssl
from adc.tls.termination import terminating
from tests.conftest import free_port, no_adc_cycles
from tests.engine.test_l7_lingering import upload_then_read
from tests.tls.conftest import bio_client, write_crl


def client_ctx(pki, *, alpn=("http/1.1",), cert=None, max_version=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if cert is not None:
        ctx.load_cert_chain(*map(str, cert))
    if max_version is not None:
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = max_version
    return ctx


def https_profile(pki, extra: str = "", certs: str | None = None) -> str:
    certs = certs or f'[ {{ cert = "{pki.server[0]}", key = "{pki.server[1]}" }} ]'
    return f"""
    [profile.tls]
    type = "https"
    [profile.tls.client_ssl]
    certificates = {certs}
    {extra}
    """


def one_vs(port: int, backend_port: int, *, profile: str = "tls", server: str = "c1", server_ssl_ca=None,
           extra: str = "", name: str = "vs", pool: str = "p", server_ssl_extra: str = "") -> str:
    """One virtual server in front of one real server, optionally with a verifying server SSL profile
    (`server_ssl_extra`: more of its lines)."""
    ssl_lines = ""
    if server_ssl_ca is not None:
        ssl_lines = f'server_ssl = "internal"\n[server_ssl.internal]\nca = "{server_ssl_ca}"\nsni = "localhost"\n{server_ssl_extra}'
    head, _, tail = ssl_lines.partition("\n")
    return f"""
[virtual_server.{name}]
listen = "127.0.0.1:{port}"
profile = "{profile}"
pool = "{pool}"
[pool.{pool}]
{head}
servers = [{{ name = "{server}", address = "127.0.0.1:{backend_port}" }}]
{tail}
{extra}
"""


def server_context(pair) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, pair))
    return ctx


async def half_closing_tls_server(protocol_factory, pki):
    """A TLS real server on adc's own TLS layer, whose protocols may half-close and stay open (TLS 1.3)."""
    ctx = build_client_ssl(ClientSSL(certificates=(CertificatePair(*pki.server),)))
    loop = asyncio.get_running_loop()
    return await loop.create_server(terminating(protocol_factory, ctx, loop), "127.0.0.1", 0)


async def status_of_get(port: int) -> bytes:
    """The status code of a plain `GET /` through the appliance on `port`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    return head.split(b" ", 2)[1]


async def echo_ws_server(ssl_ctx=None):
    async def echo(ws):
        async for m in ws:
            await ws.send(m)

    server = await serve(echo, "127.0.0.1", 0, ssl=ssl_ctx, max_size=None)
    return server, server.sockets[0].getsockname()[1]


async def header_echo_server():
    """A minimal HTTP/1.1 real server answering with the request head it received."""

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(head) + head)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def https_get(port: int, ctx: ssl.SSLContext, path: str = "/", host: str = "localhost") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=host)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    return data


async def test_wss_to_plain_ws_real_server_is_byte_exact(appliance_factory, pki):
    server, bport = await echo_ws_server()
    port = free_port()
    await appliance_factory(one_vs(port, bport, extra=https_profile(pki)))
    async with connect(f"wss://localhost:{port}/ws", ssl=client_ctx(pki), max_size=None) as ws:
        for size in (1, 125, 126, 65535, 65536, 300_000):
            payload = os.urandom(size)
            await ws.send(payload)
            assert await asyncio.wait_for(ws.recv(), 10) == payload
        await ws.send("text ✓")
        assert await ws.recv() == "text ✓"
    server.close()


async def test_wss_to_tls_real_server_with_verification(appliance_factory, pki):
    server, bport = await echo_ws_server(server_context(pki.server))
    port = free_port()
    await appliance_factory(one_vs(port, bport, server_ssl_ca=pki.ca, extra=https_profile(pki)))
    with no_adc_cycles():  # TLS on both sides, and yet a closed tunnel is freed at once
        for _ in range(2):
            async with connect(f"wss://localhost:{port}/ws", ssl=client_ctx(pki), max_size=None) as ws:
                for _ in range(20):
                    payload = os.urandom(4096)
                    await ws.send(payload)
                    assert await asyncio.wait_for(ws.recv(), 10) == payload
        await asyncio.sleep(0.2)
    server.close()


@contextlib.contextmanager
def interpreted_adc_calls() -> Iterator[collections.Counter]:
    """Count the calls into interpreted code of the appliance made inside the block.

    The appliance's own functions outside the compiled modules, and the methods Python
    generates as source (a dataclass's or named tuple's `__init__`, `__new__`) for its
    types: on the traffic path each costs an interpreter frame per call.
    """
    calls: collections.Counter = collections.Counter()
    package = str(Path(adc.__file__).parent)

    def hook(frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        if code.co_filename.startswith(package) and not code.co_filename.endswith("demo.py"):  # the test's peers
            calls[f"{code.co_filename[len(package) + 1:]}:{code.co_name}"] += 1
        elif code.co_filename == "<string>":
            owner = frame.f_locals.get("self", frame.f_locals.get("_cls"))
            kind = owner if isinstance(owner, type) else type(owner)
            if kind.__module__.startswith("adc."):
                calls[f"{kind.__qualname__}.{code.co_name} (generated)"] += 1

    sys.setprofile(hook)
    try:
        yield calls
    finally:
        sys.setprofile(None)


@pytest.mark.skipif(not compiled.in_use(), reason="the traffic path is not compiled in this install")
async def test_a_wss_connection_runs_no_interpreted_appliance_code(appliance_factory, pki):
    """What the benchmark measures (TLS, upgrade, echo, close) stays in compiled code: the
    listener's protocol factory, the router, the parsers' sinks and the actions included."""
    server, bport = await echo_ws_server()
    port = free_port()
    await appliance_factory(one_vs(port, bport, extra=https_profile(pki)))
    async with connect(f"wss://localhost:{port}/ws", ssl=client_ctx(pki)) as ws:  # builds what is built once
        await ws.send(b"warm")
        await ws.recv()
    await asyncio.sleep(0.05)
    with interpreted_adc_calls() as calls:
        for _ in range(3):
            async with connect(f"wss://localhost:{port}/ws", ssl=client_ctx(pki)) as ws:
                await ws.send(b"x" * 64)
                assert await asyncio.wait_for(ws.recv(), 10) == b"x" * 64
        await asyncio.sleep(0.05)
    server.close()
    assert dict(calls) == {}


async def test_untrusted_real_server_certificate_is_502_with_reason(appliance_factory, pki, caplog):
    server, bport = await echo_ws_server(server_context(pki.rogue_server))
    port = free_port()
    await appliance_factory(one_vs(port, bport, profile="http", server="rogue", server_ssl_ca=pki.ca))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 502 ")
    writer.close()
    assert "rogue" in caplog.text and "certificate verify failed" in caplog.text
    server.close()


async def test_revoked_real_server_certificate_is_502_with_reason(appliance_factory, pki, caplog, tmp_path):
    """server_ssl crl: a real server whose certificate its CA revoked fails verification: a 502,
    the reason in the log, on the dashboard's list; renewed without it, the list is read on reload."""
    from adc.runtime.admin import certificates_in_use

    crl = tmp_path / "servers-crl.pem"
    write_crl(crl, pki.dir, [pki.server[0]])
    server, bport = await echo_ws_server(server_context(pki.server))
    port = free_port()
    app = await appliance_factory(one_vs(port, bport, profile="http", server="revoked", server_ssl_ca=pki.ca,
                                         server_ssl_extra=f'crl = "{crl}"'))

    assert await status_of_get(port) == b"502"
    assert re.search(r"pool p server revoked \(127\.0\.0\.1:\d+\): TLS: certificate verify failed: certificate revoked",
                     caplog.text)
    (listed,) = [c for c in certificates_in_use(app) if c["file"] == str(crl)]
    assert (listed["used_by"], listed["subject"]) == (["server_ssl internal crl"], "CRL, 1 revoked")
    write_crl(crl, pki.dir, [])  # renewed in place, without the entry
    result = await app.reload()
    assert "pool p: server_ssl internal files changed, read again" in result["changes"], result
    async with connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
        await ws.send("trusted again")
        assert await asyncio.wait_for(ws.recv(), 10) == "trusted again"
    server.close()


async def test_real_server_refusing_after_the_handshake_is_502_with_reason(appliance_factory, pki, caplog):
    """Under TLS 1.3 a real server that wants a client certificate says so with an alert after
    the handshake: the 502 and the log line give that reason, not a bare close."""
    caplog.set_level("INFO", logger="adc")
    ctx = build_client_ssl(ClientSSL(certificates=(CertificatePair(*pki.server),), min_version="TLSv1.3",
                                     verify_client="required", client_ca=pki.ca))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(terminating(asyncio.Protocol, ctx, loop), "127.0.0.1", 0)  # alerts, then closes
    port = free_port()
    await appliance_factory(one_vs(port, server.sockets[0].getsockname()[1], profile="http", server="mtls",
                                   server_ssl_ca=pki.ca))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 502 ")
    writer.close()
    assert re.search(r"pool p server mtls \(127\.0\.0\.1:\d+\): TLS: peer requires a client certificate", caplog.text)
    assert re.search(r"answered 502: pool p server mtls \(127\.0\.0\.1:\d+\): TLS: peer requires a client certificate",
                     caplog.text)
    server.close()


async def test_sni_from_host_reuses_a_connection_only_for_its_own_name(appliance_factory, pki):
    """With sni = "@host" an idle real-server connection was verified for one name: a request
    for another name must not ride on it (it gets its own handshake, and its own verdict)."""
    names: dict[int, str] = {}  # TLS connection -> the SNI its client sent
    seen: list[tuple[int, str, str]] = []  # (TLS connection, its SNI, the request's Host)
    ctx = server_context(pki.other)  # api.other.test, *.example.test
    ctx.sni_callback = lambda obj, name, _ctx: names.__setitem__(id(obj), name)

    async def handle(reader, writer):
        tls = id(writer.get_extra_info("ssl_object"))
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                host = re.search(rb"\r\nhost: *([^\r]*)", head, re.I).group(1).decode()
                seen.append((tls, names.get(tls, ""), host))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    port = free_port()
    await appliance_factory(f"""
        [virtual_server.vs]
        listen = "127.0.0.1:{port}"
        profile = "http"
        pool = "p"
        [pool.p]
        server_ssl = "byhost"
        servers = [{{ name = "s", address = "127.0.0.1:{server.sockets[0].getsockname()[1]}" }}]
        [server_ssl.byhost]
        ca = "{pki.ca}"
        sni = "@host"
    """)

    async def get(host: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
        return data.split(b"\r\n", 1)[0]

    assert await get("a.example.test") == b"HTTP/1.1 200 OK"  # leaves an idle connection verified for it
    assert await get("localhost") == b"HTTP/1.1 502 Bad Gateway"  # not covered: no ride on that connection
    assert await get("b.example.test:80") == b"HTTP/1.1 200 OK"  # a connection of its own
    assert await get("A.example.test") == b"HTTP/1.1 200 OK"  # the same name: the first connection again
    assert [(sni, host) for _, sni, host in seen] == [
        ("a.example.test", "a.example.test"), ("b.example.test", "b.example.test:80"),
        ("a.example.test", "A.example.test"),
    ]
    assert seen[0][0] == seen[2][0] != seen[1][0]
    server.close()


async def test_layer4_pool_with_server_ssl(appliance_factory, pki):
    class Echo(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def data_received(self, d):
            self.t.write(d)

    loop = asyncio.get_running_loop()
    s1 = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_context(pki.server))
    port, bport = free_port(), s1.sockets[0].getsockname()[1]
    await appliance_factory(one_vs(port, bport, profile="tcp", server="tls1", server_ssl_ca=pki.ca))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"plain in, TLS out")
    assert await asyncio.wait_for(reader.readexactly(17), 10) == b"plain in, TLS out"
    writer.close()
    s1.close()


async def test_layer4_server_ssl_passes_the_half_close_on_and_keeps_the_answer(appliance_factory, pki):
    """The client half-closes: the real server hears close_notify and still answers through TLS."""
    loop = asyncio.get_running_loop()
    heard: list[bytes] = []

    class AnswersAtTheEnd(asyncio.Protocol):
        """Reads until the client is done, then answers and closes (TLS 1.3 allows the half-close)."""

        def connection_made(self, t):
            self.t = t

        def data_received(self, d):
            heard.append(d)

        def eof_received(self):
            loop.call_later(0.1, self.answer)
            return True  # keep the connection for the answer

        def answer(self):
            self.t.write(b"answer to " + b"".join(heard))
            self.t.close()

    s1 = await half_closing_tls_server(AnswersAtTheEnd, pki)
    port, bport = free_port(), s1.sockets[0].getsockname()[1]
    await appliance_factory(one_vs(port, bport, profile="l4", server="tls1", server_ssl_ca=pki.ca, extra="""
        [profile.l4]
        type = "tcp"
        timeout_client_fin = "60s"
    """))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"question")
    writer.write_eof()
    # the answer and the end come from the real server, long before the fin timeout
    assert await asyncio.wait_for(reader.read(-1), 10) == b"answer to question"
    writer.close()
    s1.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
async def test_server_ssl_resumes_sessions_and_a_silent_server_times_out(appliance_factory, pki, version, caplog):
    reused: list[bool] = []

    async def handle(reader, writer):
        reused.append(writer.get_extra_info("ssl_object").session_reused)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    ctx = server_context(pki.server)
    ctx.maximum_version = version
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the backlog), never says a word
    port, bport = free_port(), server.sockets[0].getsockname()[1]
    await appliance_factory(f"""
        [virtual_server.vs]
        listen = "127.0.0.1:{port}"
        profile = "web"
        pool = "p"
        routes = [ {{ path_prefix = "/mute", pool = "mute" }} ]
        [profile.web]
        type = "http"
        timeout_connect = "0.5s"
        connect_retries = 0
        [pool.p]
        server_ssl = "internal"
        servers = [{{ name = "s", address = "127.0.0.1:{bport}" }}]
        [pool.mute]
        server_ssl = "internal"
        servers = [{{ name = "m", address = "127.0.0.1:{silent.getsockname()[1]}" }}]
        [server_ssl.internal]
        ca = "{pki.ca}"
        sni = "localhost"
    """)

    async def get(path: str = "/") -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
        return data

    for _ in range(3):
        assert (await get()).endswith(b"\r\n\r\nok")
    assert reused == [False, True, True]  # one full handshake, then resumed sessions
    assert (await get("/mute")).startswith(b"HTTP/1.1 50")  # the TLS handshake never ends: timeout_connect
    # the TCP connection was up: the log says which phase ran out of time
    assert f"pool mute server m (127.0.0.1:{silent.getsockname()[1]}): TLS handshake timeout" in caplog.text
    silent.close()
    server.close()


async def test_real_server_closing_during_the_tls_handshake_is_retried_elsewhere(appliance_factory, pki, caplog):
    async def closes(reader, writer):  # accepts, then a bare FIN: no TLS alert
        writer.close()

    async def ok(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    bad = await asyncio.start_server(closes, "127.0.0.1", 0)
    good = await asyncio.start_server(ok, "127.0.0.1", 0, ssl=server_context(pki.server))
    port = free_port()
    await appliance_factory(f"""
        [virtual_server.vs]
        listen = "127.0.0.1:{port}"
        profile = "web"
        pool = "p"
        [profile.web]
        type = "http"
        timeout_connect = "2s"
        connect_retries = 1
        [pool.p]
        server_ssl = "internal"
        servers = [{{ name = "bad", address = "127.0.0.1:{bad.sockets[0].getsockname()[1]}" }},
                   {{ name = "good", address = "127.0.0.1:{good.sockets[0].getsockname()[1]}" }}]
        [server_ssl.internal]
        ca = "{pki.ca}"
        sni = "localhost"
    """)
    for _ in range(2):  # whichever server round-robin picks first, the answer comes from "good"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(-1), 10)).startswith(b"HTTP/1.1 200 OK")
        writer.close()
    assert "server bad (127.0.0.1:" in caplog.text
    assert "TLS: connection closed during the handshake" in caplog.text
    bad.close()
    good.close()


async def test_layer4_real_server_half_closing_over_tls_still_hears_the_client(appliance_factory, pki):
    loop = asyncio.get_running_loop()
    got = bytearray()
    done = asyncio.Event()

    class HalfCloser(asyncio.Protocol):
        """Says goodbye, half-closes (close_notify), and still reads the client's last words."""

        def connection_made(self, t):
            self.t = t
            t.write(b"bye")
            t.write_eof()

        def data_received(self, d):
            got.extend(d)

        def eof_received(self):
            done.set()
            self.t.close()
            return True

    s1 = await half_closing_tls_server(HalfCloser, pki)
    port, bport = free_port(), s1.sockets[0].getsockname()[1]
    await appliance_factory(one_vs(port, bport, profile="tcp", server="tls1", server_ssl_ca=pki.ca))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(-1), 10) == b"bye"  # then the end of the server's bytes
    writer.write(b"after")
    writer.write_eof()
    await asyncio.wait_for(done.wait(), 10)
    assert bytes(got) == b"after"
    writer.close()
    s1.close()


async def test_tunnel_half_closed_by_the_real_server_is_a_close_notify(appliance_factory, pki):
    """The real server half-closes a tunnel: the https client gets close_notify and may still send."""
    got = bytearray()
    done = asyncio.Event()

    async def real_server(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nbye")
        await writer.drain()
        writer.write_eof()
        while len(got) < 5:
            chunk = await asyncio.wait_for(reader.read(100), 10)
            if not chunk:
                break
            got.extend(chunk)
        done.set()
        writer.close()

    server = await asyncio.start_server(real_server, "127.0.0.1", 0)
    port, bport = free_port(), server.sockets[0].getsockname()[1]
    await appliance_factory(one_vs(port, bport, extra=https_profile(pki)))

    def client() -> tuple[bytes, bytes]:
        # a blocking TLS socket: asyncio's TLS transports stop writing once close_notify arrives
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with client_ctx(pki).wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            received = b""
            while not received.endswith(b"bye"):
                chunk = tls.recv(4096)
                assert chunk, received
                received += chunk
            end = tls.recv(4096)  # close_notify: the end of the real server's bytes
            tls.sendall(b"after")
            return received, end

    received, end = await asyncio.wait_for(asyncio.to_thread(client), 15)
    assert received.startswith(b"HTTP/1.1 101 ") and received.endswith(b"\r\n\r\nbye")
    assert end == b""
    await asyncio.wait_for(done.wait(), 10)
    assert bytes(got) == b"after"
    server.close()


async def test_reload_reads_server_ssl_files_renewed_in_place(appliance_factory, pki, tmp_path):
    server, bport = await echo_ws_server(server_context(pki.rogue_server))
    trust = tmp_path / "trust.pem"
    trust.write_bytes(pki.ca.read_bytes())
    port = free_port()
    appliance = await appliance_factory(one_vs(port, bport, profile="http", server="s", server_ssl_ca=trust))

    assert await status_of_get(port) == b"502"  # the real server's CA is not trusted
    result = await appliance.reload()  # nothing changed: the TLS settings stay
    assert result["ok"] and not any("server_ssl" in c for c in result["changes"]), result
    trust.write_bytes(pki.rogue_ca.read_bytes())  # the same file, renewed
    result = await appliance.reload()
    assert result["ok"], result
    assert "pool p: server_ssl internal files changed, read again" in result["changes"]
    async with connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
        await ws.send("verified")
        assert await asyncio.wait_for(ws.recv(), 10) == "verified"
    trust.unlink()  # unreadable now: the reload is refused, the running settings stay
    result = await appliance.reload()
    assert not result["ok"] and "trust.pem" in str(result), result
    async with connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
        await ws.send("still")
        assert await asyncio.wait_for(ws.recv(), 10) == "still"
    server.close()


async def test_request_then_close_notify_still_gets_its_answer(appliance_factory, pki):
    """TLS 1.3 close_notify closes one direction only (RFC 8446 6.1): like a FIN on `http`,
    the answer to the request before it still comes, then the appliance closes."""

    async def slow_ok(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.2)  # the client's close_notify gets there first
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(slow_ok, "127.0.0.1", 0)
    port = free_port()
    await appliance_factory(one_vs(port, server.sockets[0].getsockname()[1], extra=https_profile(pki)))
    tls, incoming, outgoing, reader, writer = await bio_client(port, pki)
    assert tls.version() == "TLSv1.3"
    tls.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.unwrap()  # close_notify after the request; the appliance's is not awaited here
    writer.write(outgoing.read())
    answer = b""
    for _ in range(100):  # bounded: until the appliance's close_notify or its FIN
        data = await asyncio.wait_for(reader.read(65536), 10)
        incoming.write(data) if data else incoming.write_eof()
        try:
            while chunk := tls.read(65536):
                answer += chunk
        except ssl.SSLWantReadError:
            continue
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            pass
        break
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok")
    writer.close()
    server.close()


async def test_forwarded_proto_alpn_and_session_resumption(appliance_factory, pki):
    server, bport = await header_echo_server()
    port = free_port()
    await appliance_factory(f"""
        [virtual_server.web]
        listen = "127.0.0.1:{port}"
        profile = "tls"
        pool = "p"
        [pool.p]
        servers = [{{ name = "a", address = "127.0.0.1:{bport}" }}]
        {https_profile(pki)}
    """)
    ctx = client_ctx(pki, alpn=("h2", "http/1.1"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # sessions are visible right after the handshake
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    sslobj = writer.get_extra_info("ssl_object")
    assert sslobj.selected_alpn_protocol() == "http/1.1"
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    body = await asyncio.wait_for(reader.read(-1), 10)
    assert b"X-Forwarded-Proto: https" in body
    assert b"X-Forwarded-For: 127.0.0.1" in body
    session = sslobj.session
    writer.close()

    def resume() -> bool:  # a blocking client in a thread: the appliance runs on this loop
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            with ctx.wrap_socket(sock, server_hostname="localhost", session=session) as tls:
                return tls.session_reused

    assert await asyncio.to_thread(resume)
    server.close()


async def test_tls_handshakes_counted(appliance_factory, pki, tmp_path, capsys):
    """Full and resumed handshakes, with clients and with real servers: in the counters, the
    metrics and `adc status` (how an operator sees that tickets and session reuse work)."""
    from adc.runtime.metrics import render_metrics

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    real = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context(pki.server))
    port = free_port()
    config = tmp_path / "a.toml"
    config.write_text(f'[appliance]\nname = "t"\nadmin = "unix:{tmp_path}/a.sock"\naccess_log = "off"\n'
                      + one_vs(port, real.sockets[0].getsockname()[1], server_ssl_ca=pki.ca) + https_profile(pki))
    app = await appliance_factory(config.read_text())
    # two connections, the second resuming the first's session; each request dials the real
    # server anew (it closes), the second time resuming adc's session with it
    answer, resumed = await asyncio.to_thread(_resumed_get, port, client_ctx(pki))
    assert answer.endswith(b"\r\n\r\nok") and resumed
    stats = app.engine.stats
    for counters in (stats.vs("vs"), stats.pool("p"), stats.server("p", "c1")):
        assert (counters.tls_handshakes, counters.tls_resumed) == (2, 1)
    metrics = render_metrics(app)
    assert 'adc_virtual_server_tls_handshakes_total{virtual_server="vs"} 2' in metrics
    assert 'adc_server_tls_resumed_total{pool="p",server="c1"} 1' in metrics
    assert await asyncio.to_thread(adc_main, ["status", str(config)]) == 0
    out = capsys.readouterr().out
    tls_table = out.split("\nTLS (", 1)[1].splitlines()[1:]
    assert [line.split() for line in tls_table if not line.startswith("-")] == [
        ["SIDE", "NAME", "HANDSHAKES", "RESUMED", "FAILED"],
        ["client", "vs", "2", "1", "(50%)", "0"],
        ["server", "p/c1", "2", "1", "(50%)", "0"],
    ]
    real.close()


async def test_sni_picks_certificate_and_strict_sni(appliance_factory, pki):
    server, bport = await header_echo_server()
    port, strict_port = free_port(), free_port()
    certs = (
        f'[ {{ cert = "{pki.server[0]}", key = "{pki.server[1]}" }}, '
        f'{{ cert = "{pki.other[0]}", key = "{pki.other[1]}" }} ]'
    )
    await appliance_factory(
        f"""
        [virtual_server.web]
        listen = "127.0.0.1:{port}"
        profile = "tls"
        pool = "p"
        [virtual_server.strict]
        listen = "127.0.0.1:{strict_port}"
        profile = "strict"
        pool = "p"
        [pool.p]
        servers = [{{ name = "a", address = "127.0.0.1:{bport}" }}]
        {https_profile(pki, certs=certs)}
        [profile.strict]
        type = "https"
        client_ssl = {{ certificates = {certs}, strict_sni = true }}
        """
    )

    async def peer_names(p: int, host: str) -> list[str]:
        ctx = client_ctx(pki)
        ctx.check_hostname = False
        reader, writer = await asyncio.open_connection("127.0.0.1", p, ssl=ctx, server_hostname=host)
        cert = writer.get_extra_info("peercert")
        writer.close()
        return [v for k, v in cert.get("subjectAltName", ())]

    assert "localhost" in await peer_names(port, "localhost")
    assert "*.example.test" in await peer_names(port, "www.example.test")
    assert "localhost" in await peer_names(port, "unknown.test")  # the first is the default
    assert "api.other.test" in await peer_names(strict_port, "api.other.test")
    with pytest.raises(ssl.SSLError):
        await peer_names(strict_port, "unknown.test")
    server.close()


async def test_old_tls_and_missing_client_certificate_are_refused(appliance_factory, pki, caplog):
    server, bport = await header_echo_server()
    port, mtls_port = free_port(), free_port()
    await appliance_factory(f"""
        [virtual_server.web]
        listen = "127.0.0.1:{port}"
        profile = "tls"
        pool = "p"
        [virtual_server.mtls]
        listen = "127.0.0.1:{mtls_port}"
        profile = "mtls"
        pool = "p"
        [pool.p]
        servers = [{{ name = "a", address = "127.0.0.1:{bport}" }}]
        {https_profile(pki)}
        [profile.mtls]
        type = "https"
        client_ssl = {{ certificates = [{{ cert = "{pki.server[0]}", key = "{pki.server[1]}" }}], verify_client = "required", client_ca = "{pki.ca}" }}
    """)
    old = client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_1)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await https_get(port, old)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await https_get(mtls_port, client_ctx(pki))
    ok = await https_get(mtls_port, client_ctx(pki, cert=pki.client))
    assert ok.startswith(b"HTTP/1.1 200 ")
    # the appliance still serves normal clients after the refusals
    assert (await https_get(port, client_ctx(pki))).startswith(b"HTTP/1.1 200 ")
    await asyncio.sleep(0.1)
    failed = [r.getMessage() for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert failed and all(re.search(r"\(client 127\.0\.0\.1:\d+\)$", m) for m in failed), failed
    assert any(m.startswith("virtual_server mtls: TLS handshake failed: peer did not return a certificate") for m in failed)
    server.close()


async def test_revoked_client_certificate_is_refused(appliance_factory, pki, caplog, tmp_path):
    """client_crl: a certificate on the CA's revocation list fails the handshake, with the reason
    in the log; the others pass; a renewed list is read on reload."""
    from adc.tls import certs

    ca_cert, ca_key = certs.load_ca(pki.dir)
    cert, key = certs.issue_cert(ca_cert, ca_key, ["revoked.test"], client=True)
    revoked = (tmp_path / "revoked.pem", tmp_path / "revoked.key")
    certs.write_pair(*revoked, cert, key)
    crl = tmp_path / "crl.pem"
    write_crl(crl, pki.dir, [revoked[0]])
    server, bport = await header_echo_server()
    port = free_port()
    app = await appliance_factory(one_vs(port, bport) + https_profile(
        pki, f'verify_client = "required"\n    client_ca = "{pki.ca}"\n    client_crl = "{crl}"'))
    assert (await https_get(port, client_ctx(pki, cert=pki.client))).startswith(b"HTTP/1.1 200 ")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await https_get(port, client_ctx(pki, cert=revoked))
    await _until(lambda: "certificate revoked" in caplog.text)
    assert "virtual_server vs: TLS handshake failed: certificate verify failed: certificate revoked" in caplog.text
    from adc.runtime.admin import certificates_in_use

    (listed,) = [c for c in certificates_in_use(app) if c["file"] == str(crl)]  # the dashboard's list
    assert (listed["used_by"], listed["key_type"], listed["subject"]) == (["profile tls client_crl"], "CRL", "CRL, 1 revoked")
    # the list renewed in place without the entry: the certificate passes after a reload
    write_crl(crl, pki.dir, [])
    changes = await app.reload()
    assert (await https_get(port, client_ctx(pki, cert=revoked))).startswith(b"HTTP/1.1 200 "), changes
    server.close()


def _fields(head: bytes) -> dict[str, str]:
    """The X-SSL-Client-* fields of a request head (as the header echo server returned it)."""
    lines = head.split(b"\r\n\r\n", 1)[1].decode("latin-1").split("\r\n")
    return dict(line.split(": ", 1) for line in lines if line.lower().startswith(("x-ssl-client", "x_ssl_client")))


def _resumed_get(port: int, ctx: ssl.SSLContext) -> tuple[bytes, bool]:
    """Two HTTPS requests on two connections, the second resuming the first's session (blocking)."""
    answers, session, resumed = [], None, False
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
                answers.append(data)
                session, resumed = tls.session, tls.session_reused
    return answers[-1], resumed


async def test_client_certificate_reaches_the_real_server_in_x_ssl_client_fields(appliance_factory, pki):
    """verify_client = optional: the real server learns whether and which certificate was presented,
    and a client cannot forge the fields, not even spelt with underscores."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    server, bport = await header_echo_server()
    subjects: list[str | None] = []

    async def echo(ws):
        subjects.append(ws.request.headers.get("X-SSL-Client-Subject"))
        async for m in ws:
            await ws.send(m)

    ws_server = await serve(echo, "127.0.0.1", 0)
    ws_port = ws_server.sockets[0].getsockname()[1]
    port, ws_vs_port = free_port(), free_port()
    optional = f'verify_client = "optional"\n    client_ca = "{pki.ca}"\n    max_version = "TLSv1.2"'
    await appliance_factory(
        one_vs(port, bport) + one_vs(ws_vs_port, ws_port, name="ws", pool="w") + https_profile(pki, optional)
    )
    pem = pki.client[0].read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    der = cert.public_bytes(Encoding.DER)
    issuer = x509.load_pem_x509_certificate(pki.ca.read_bytes()).subject.rfc4514_string()

    answer = await https_get(port, client_ctx(pki, cert=pki.client))
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert _fields(answer) == {
        "X-SSL-Client-Verify": "SUCCESS",
        "X-SSL-Client-Subject": "CN=client.test",
        "X-SSL-Client-Issuer": issuer,
        "X-SSL-Client-Serial": format(cert.serial_number, "X"),
        "X-SSL-Client-Not-After": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "X-SSL-Client-SHA256": hashlib.sha256(der).hexdigest(),
        "X-SSL-Client-Cert": base64.b64encode(der).decode(),
    }

    # no certificate: NONE, and what the client wrote under those names is gone
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx(pki), server_hostname="localhost")
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-SSL-Client-Verify: SUCCESS\r\n"
                 b"X_SSL_Client_Subject: CN=admin\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    assert _fields(answer) == {"X-SSL-Client-Verify": "NONE"}

    # a resumed TLS 1.2 session still names its certificate
    resumed_answer, resumed = await asyncio.to_thread(_resumed_get, port, client_ctx(pki, cert=pki.client))
    assert resumed
    assert _fields(resumed_answer)["X-SSL-Client-Subject"] == "CN=client.test"

    # the WebSocket upgrade carries them to the real server too
    async with connect(f"wss://localhost:{ws_vs_port}/", ssl=client_ctx(pki, cert=pki.client), open_timeout=10) as ws:
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 10) == "ping"
    assert subjects == ["CN=client.test"]
    server.close()
    ws_server.close()


async def test_access_log_names_the_client_certificate_of_requests_and_tunnels(appliance_factory, pki, tmp_path):
    import json

    server, bport = await header_echo_server()
    ws_server, ws_port = await echo_ws_server()
    port, ws_vs_port = free_port(), free_port()
    log = tmp_path / "access.log"
    optional = f'verify_client = "optional"\n    client_ca = "{pki.ca}"'
    await appliance_factory(
        f'[appliance]\nname = "t"\nadmin = "off"\naccess_log = "{log}"\naccess_log_format = "json"\n'
        + one_vs(port, bport) + one_vs(ws_vs_port, ws_port, name="ws", pool="w") + https_profile(pki, optional)
    )
    assert (await https_get(port, client_ctx(pki, cert=pki.client))).startswith(b"HTTP/1.1 200 ")
    assert (await https_get(port, client_ctx(pki), path="/anonymous")).startswith(b"HTTP/1.1 200 ")
    async with connect(f"wss://localhost:{ws_vs_port}/chat", ssl=client_ctx(pki, cert=pki.client),
                       open_timeout=10) as ws:
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), 10) == "ping"

    def records() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    await _until(lambda: any(r["kind"] == "tunnel" for r in records()))
    seen = {(r["kind"], r["path"]): r for r in records()}
    assert seen[("http", "/")]["client_cert"] == "CN=client.test"
    assert seen[("http", "/anonymous")]["client_cert"] is None
    assert seen[("http", "/chat")]["status"] == 101 and seen[("http", "/chat")]["client_cert"] == "CN=client.test"
    tunnel = seen[("tunnel", "/chat")]
    assert (tunnel["vs"], tunnel["pool"], tunnel["client_cert"]) == ("ws", "w", "CN=client.test")
    for record in seen.values():  # the protocol and cipher suite agreed, as HAProxy's %sslv and %sslc
        assert record["tls_version"] == "TLSv1.3" and record["tls_cipher"].startswith("TLS_AES_")
    server.close()
    ws_server.close()


async def test_a_flood_of_failed_handshakes_is_a_few_log_lines_and_a_count(appliance_factory, pki, caplog,
                                                                           monkeypatch):
    from adc.runtime import loglimit

    monkeypatch.setattr(loglimit, "BURST", 3)
    monkeypatch.setattr(loglimit, "WINDOW_SECONDS", 0.5)
    server, bport = await header_echo_server()
    port = free_port()
    app = await appliance_factory(one_vs(port, bport) + https_profile(pki))
    for _ in range(12):  # plain HTTP to the TLS port: each handshake fails at once
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(reader.read(-1), 10)
        writer.close()

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "TLS handshake failed" in r.getMessage()]

    await _until(lambda: len(lines()) == 4)
    assert all(m.startswith("virtual_server vs: TLS handshake failed: ") for m in lines())
    assert lines()[3].endswith(") (and 9 more such line(s) in 0.5s, not written one by one)")
    assert app.engine.stats.vs("vs").errors["tls"] == 12  # every failure is counted all the same
    assert (await https_get(port, client_ctx(pki))).startswith(b"HTTP/1.1 200 ")
    server.close()


async def _until(condition, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_max_connections_counts_connections_still_in_their_tls_handshake(appliance_factory, pki):
    """Like HAProxy, a slot is taken at accept: a handshake in progress holds it, and a refused
    connection costs no handshake; every way a handshake can end gives the slot back."""
    server, bport = await header_echo_server()
    port = free_port()
    profile = https_profile(pki).replace('type = "https"', 'type = "https"\n    timeout_tls_handshake = "1s"')
    app = await appliance_factory(f"""
        [virtual_server.vs]
        listen = "127.0.0.1:{port}"
        profile = "tls"
        pool = "p"
        max_connections = 1
        [pool.p]
        servers = [{{ name = "a", address = "127.0.0.1:{bport}" }}]
        {profile}
    """)
    counters = app.stats.vs("vs")
    # a client that connects and says nothing holds the only slot
    silent_r, silent_w = await asyncio.open_connection("127.0.0.1", port)
    await _until(lambda: counters.conn_current == 1)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await https_get(port, client_ctx(pki))
    assert counters.rejected == 1 and counters.conn_current == 1
    # its handshake times out: the slot is free again
    assert await asyncio.wait_for(silent_r.read(), 5) == b""
    silent_w.close()
    await _until(lambda: counters.conn_current == 0)
    assert (await https_get(port, client_ctx(pki))).startswith(b"HTTP/1.1 200 ")
    # a failed handshake (a TLS 1.1 client) and a client leaving mid-handshake give it back too
    old = client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_1)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await https_get(port, old)
    _, leaving = await asyncio.open_connection("127.0.0.1", port)
    leaving.write(b"\x16\x03\x01")  # the start of a ClientHello, then gone
    await leaving.drain()
    leaving.close()
    await _until(lambda: counters.conn_current == 0 and not app.engine.virtual_servers["vs"].connections)
    assert (await https_get(port, client_ctx(pki))).startswith(b"HTTP/1.1 200 ")
    assert counters.rejected == 1
    server.close()


async def test_stopping_closes_connections_in_their_tls_handshake(appliance_factory, pki):
    server, bport = await header_echo_server()
    port = free_port()
    app = await appliance_factory(one_vs(port, bport, extra=https_profile(pki)))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _until(lambda: app.stats.vs("vs").conn_current == 1)
    await asyncio.wait_for(app.stop(grace=0), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert app.stats.vs("vs").conn_current == 0
    writer.close()
    server.close()


def test_adc_check_reports_a_server_ssl_crl_out_of_date(tmp_path, pki, capsys):
    """OpenSSL would refuse every real server the CA of a stale list certified: `adc check` says so
    first, in the words of the server SSL profile's settings."""
    crl = tmp_path / "servers-crl.pem"
    write_crl(crl, pki.dir, [], next_update_days=-1)
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(one_vs(free_port(), 9, profile="http", server_ssl_ca=pki.ca, server_ssl_extra=f'crl = "{crl}"'))
    assert adc_main(["check", str(cfg)]) == 1
    day = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)).strftime("%Y-%m-%d")
    assert (f"{cfg}: server_ssl.internal.crl: {crl.name}: the CRL of 'adc development CA' is out of date since {day}:"
            " every certificate it covers is refused until it is renewed") in capsys.readouterr().err.splitlines()
    write_crl(crl, pki.dir, [], ca=(pki.rogue_ca, pki.dir / "rogue-ca.key"))
    assert adc_main(["check", str(cfg)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert (f"{cfg}: server_ssl.internal.crl: {crl.name}: the CRL of 'rogue CA' is not signed by a CA of ca:"
            " it is not used, and the certificates that CA issues are refused") in err
    assert (f"warning: {cfg}: server_ssl.internal.crl: {crl.name}: no CRL of 'adc development CA' (in ca):"
            " the real servers' certificates it issues itself are refused") in err


def test_adc_check_reports_mismatched_key_and_expired_certificate(tmp_path, pki, capsys):
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(textwrap.dedent(f"""
        [appliance]
        admin = "off"
        [virtual_server.a]
        listen = "127.0.0.1:{free_port()}"
        profile = "mismatch"
        pool = "p"
        [virtual_server.b]
        listen = "127.0.0.1:{free_port()}"
        profile = "expired"
        pool = "p"
        [pool.p]
        servers = [{{ name = "a", address = "127.0.0.1:9" }}]
        [profile.mismatch]
        type = "https"
        client_ssl = {{ certificates = [{{ cert = "{pki.server[0]}", key = "{pki.other[1]}" }}] }}
        [profile.expired]
        type = "https"
        client_ssl = {{ certificates = [{{ cert = "{pki.expired[0]}", key = "{pki.expired[1]}" }}] }}
    """))
    assert adc_main(["check", str(cfg)]) == 1
    err = capsys.readouterr().err.splitlines()
    expired_on = [line for line in err if "expired.pem: certificate expired on" in line]
    assert f"{cfg}: profile.mismatch.client_ssl.certificates[0]: {pki.other[1]}: key does not match certificate {pki.server[0]}" in err
    assert len(expired_on) == 1 and expired_on[0].startswith(
        f"{cfg}: profile.expired.client_ssl.certificates[0]: {pki.expired[0]}: certificate expired on 20"
    )


async def test_a_tls_client_sending_its_whole_body_before_reading_gets_the_answer(appliance_factory, pki):
    # lingering close under TLS: close_notify after the answer, the client's records read and dropped
    port = free_port()
    await appliance_factory(textwrap.dedent(https_profile(pki)) + f"""
[virtual_server.vs]
listen = "127.0.0.1:{port}"
profile = "tls"
pool = "p"
routes = [{{ path_prefix = "/admin", respond = 403 }}]
[pool.p]
servers = [{{ name = "c1", address = "127.0.0.1:{free_port()}" }}]
""")
    got, end = await asyncio.to_thread(upload_then_read, port, 8 << 20, tls=client_ctx(pki))
    assert got.startswith(b"HTTP/1.1 403 Forbidden\r\n") and end == "eof", (got[:40], end)
