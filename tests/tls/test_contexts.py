"""Client SSL (https listener) and server SSL (towards real servers) over real TLS on loopback."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from adc.config.model import CertificatePair, ClientSSL, ServerSSL
from adc.tls.contexts import (
    SniIndex,
    build_client_ssl,
    build_server_ssl,
    handshake_failure_reason,
)
from adc.tls.termination import terminating
from tests.tls.conftest import _dial_roundtrip


def client_ssl(pki, *pairs, **kw) -> ClientSSL:
    pairs = pairs or (pki.server,)
    return ClientSSL(certificates=tuple(CertificatePair(c, k) for c, k in pairs), **kw)


def collecting(failures: list[str]):
    return lambda exc, obj: failures.append(handshake_failure_reason(exc, obj))


async def settle(failures: list, n: int = 1) -> None:
    """Let the listener's side of a refused handshake run (bounded)."""
    for _ in range(100):
        if len(failures) >= n:
            return
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- client SSL: certificates and SNI


async def test_sni_picks_the_certificate_by_san(pki, tls_server, roundtrip, trusting_client):
    srv = await tls_server(build_client_ssl(client_ssl(pki, pki.server, pki.other)))
    r = await roundtrip(srv.port, trusting_client(), "localhost")
    assert "localhost" in r.peer_names and r.echo == b"ping"
    r = await roundtrip(srv.port, trusting_client(), "api.other.test")
    assert "api.other.test" in r.peer_names
    r = await roundtrip(srv.port, trusting_client(), "www.example.test")  # wildcard
    assert "*.example.test" in r.peer_names


async def test_unknown_name_gets_the_first_certificate(pki, tls_server, roundtrip, trusting_client):
    srv = await tls_server(build_client_ssl(client_ssl(pki, pki.server, pki.other)))
    ctx = trusting_client()
    ctx.check_hostname = False
    r = await roundtrip(srv.port, ctx, "nothing.test")
    assert "localhost" in r.peer_names
    r = await roundtrip(srv.port, ctx, "")  # no SNI at all
    assert "localhost" in r.peer_names


async def test_full_chain_is_served(pki, tls_server, roundtrip, trusting_client):
    srv = await tls_server(build_client_ssl(client_ssl(pki)))
    r = await roundtrip(srv.port, trusting_client(), "localhost")
    # the store's adc.pem holds the leaf and the CA: both go on the wire
    get_chain = getattr(r.ssl_object._sslobj, "get_unverified_chain", None)
    if get_chain is None:
        pytest.skip("this Python cannot show the chain a peer sent")
    assert len(get_chain()) == 2


async def test_strict_sni_refuses_unknown_name(pki, tls_server, roundtrip, trusting_client):
    failures: list[str] = []
    ctx = build_client_ssl(client_ssl(pki, pki.server, pki.other, strict_sni=True), on_handshake_error=collecting(failures))
    srv = await tls_server(ctx)
    assert "api.other.test" in (await roundtrip(srv.port, trusting_client(), "api.other.test")).peer_names
    client = trusting_client()
    client.check_hostname = False
    with pytest.raises(ssl.SSLError) as e:
        await roundtrip(srv.port, client, "unknown.test")
    assert handshake_failure_reason(e.value) == "peer does not know the SNI name"
    await settle(failures)
    assert failures == ["unknown SNI name 'unknown.test'"]


async def test_strict_sni_refuses_a_handshake_without_sni(pki, tls_server, roundtrip, trusting_client):
    failures: list[str] = []
    ctx = build_client_ssl(client_ssl(pki, strict_sni=True), on_handshake_error=collecting(failures))
    srv = await tls_server(ctx)
    client = trusting_client()
    client.check_hostname = False
    with pytest.raises(ssl.SSLError):
        await roundtrip(srv.port, client, "")
    await settle(failures)
    assert failures == ["no SNI name (strict SNI)"]


async def test_an_unreadable_sni_name_is_one_log_line_not_a_traceback(pki, tls_server, capfd, monkeypatch):
    import sys

    from adc.tls.contexts import quiet_unreadable_sni

    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after the test
    quiet_unreadable_sni()
    failures: list[str] = []
    srv = await tls_server(build_client_ssl(client_ssl(pki, pki.server, pki.other), on_handshake_error=collecting(failures)))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    hello = ssl._create_unverified_context().wrap_bio(incoming, outgoing, server_hostname="zzzzzzzz.test")
    with pytest.raises(ssl.SSLWantReadError):
        hello.do_handshake()
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(outgoing.read().replace(b"zzzzzzzz.test", b"zzzz\xffzzz.test"))  # not ASCII
    assert await asyncio.wait_for(reader.read(), 5)  # an alert, then the close
    writer.close()
    await settle(failures)
    assert failures == ["unreadable SNI name (not ASCII)"]
    assert "Traceback" not in capfd.readouterr().err


def test_sni_index_wildcard_is_one_label():
    idx = SniIndex()
    idx.add(0, ["localhost"])
    idx.add(1, ["*.example.test", "exact.example.test"])
    idx.add(2, ["exact.example.test", "a.example.test"])
    assert idx.lookup("LOCALHOST.") == 0
    assert idx.lookup("a.example.test") == 2  # exact beats wildcard
    assert idx.lookup("exact.example.test") == 1  # earlier certificate wins
    assert idx.lookup("b.example.test") == 1
    assert idx.lookup("x.b.example.test") is None
    assert idx.lookup("example.test") is None


# --------------------------------------------------------------------------- client SSL: versions, suites, ALPN


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls11_client_is_refused(pki, tls_server, roundtrip):
    failures: list[str] = []
    srv = await tls_server(build_client_ssl(client_ssl(pki), on_handshake_error=collecting(failures)))
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError) as e:
        await roundtrip(srv.port, old, "localhost")
    # the client hears the protocol_version alert (not just a reset), the listener logs why
    assert handshake_failure_reason(e.value) == "peer refused the protocol version"
    await settle(failures)
    assert failures == ["unsupported protocol version"]


async def test_tls12_gets_only_forward_secret_aead_suites(pki, tls_server, roundtrip, trusting_client):
    srv = await tls_server(build_client_ssl(client_ssl(pki)))
    c = trusting_client()
    c.maximum_version = ssl.TLSVersion.TLSv1_2
    r = await roundtrip(srv.port, c, "localhost")
    name, version, _ = r.ssl_object.cipher()
    assert version == "TLSv1.2" and name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name)
    assert r.ssl_object.compression() is None
    cbc = trusting_client()
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:AES128-SHA")
    with pytest.raises(ssl.SSLError) as e:
        await roundtrip(srv.port, cbc, "localhost")
    assert handshake_failure_reason(e.value) == "peer aborted the handshake (handshake failure)"


async def test_tls13_by_default_and_max_version(pki, tls_server, roundtrip, trusting_client):
    srv = await tls_server(build_client_ssl(client_ssl(pki)))
    assert (await roundtrip(srv.port, trusting_client(), "localhost")).ssl_object.version() == "TLSv1.3"
    srv12 = await tls_server(build_client_ssl(client_ssl(pki, max_version="TLSv1.2")))
    assert (await roundtrip(srv12.port, trusting_client(), "localhost")).ssl_object.version() == "TLSv1.2"


async def test_alpn_is_http11_only(pki, tls_server, roundtrip, trusting_client):
    srv = await tls_server(build_client_ssl(client_ssl(pki, alpn=("h2", "http/1.1"))))
    r = await roundtrip(srv.port, trusting_client(["h2", "http/1.1"]), "localhost")
    assert r.ssl_object.selected_alpn_protocol() == "http/1.1"
    r = await roundtrip(srv.port, trusting_client(["h2"]), "localhost")
    assert r.ssl_object.selected_alpn_protocol() is None  # no h2, ever; the handshake still succeeds
    assert srv.accepted[-1].selected_alpn_protocol() is None


async def test_renegotiation_is_off(pki):
    ctx = build_client_ssl(client_ssl(pki))
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert not ctx.options & ssl.OP_NO_TICKET
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    no_tickets = build_client_ssl(client_ssl(pki, session_tickets=False))
    assert no_tickets.options & ssl.OP_NO_TICKET


# --------------------------------------------------------------------------- client SSL: mTLS


async def test_mtls_required(pki, tls_server, roundtrip, trusting_client):
    failures: list[str] = []
    ctx = build_client_ssl(
        client_ssl(pki, verify_client="required", client_ca=pki.ca), on_handshake_error=collecting(failures)
    )
    srv = await tls_server(ctx)
    with pytest.raises(ssl.SSLError) as e:
        await roundtrip(srv.port, trusting_client(), "localhost")
    assert handshake_failure_reason(e.value) == "peer requires a client certificate"
    await settle(failures)
    assert failures == ["peer did not return a certificate"]

    with_cert = trusting_client()
    with_cert.load_cert_chain(*map(str, pki.client))
    r = await roundtrip(srv.port, with_cert, "localhost")
    assert r.echo == b"ping"
    assert srv.accepted[-1].getpeercert()["subject"] == ((("commonName", "client.test"),),)


async def test_mtls_optional_accepts_both(pki, tls_server, roundtrip, trusting_client):
    srv = await tls_server(build_client_ssl(client_ssl(pki, verify_client="optional", client_ca=pki.ca)))
    await roundtrip(srv.port, trusting_client(), "localhost")
    assert srv.accepted[-1].getpeercert() in (None, {})
    c = trusting_client()
    c.load_cert_chain(*map(str, pki.client))
    await roundtrip(srv.port, c, "localhost")
    assert srv.accepted[-1].getpeercert()["subject"] == ((("commonName", "client.test"),),)


async def test_mtls_rejects_certificate_of_unknown_ca(pki, tls_server, roundtrip, trusting_client):
    failures: list[str] = []
    ctx = build_client_ssl(
        client_ssl(pki, verify_client="required", client_ca=pki.ca), on_handshake_error=collecting(failures)
    )
    srv = await tls_server(ctx)
    c = trusting_client()
    c.load_cert_chain(*map(str, pki.rogue_server))
    with pytest.raises(ssl.SSLError) as e:
        await roundtrip(srv.port, c, "localhost")
    assert handshake_failure_reason(e.value) == "peer does not trust our certificate (unknown CA)"
    await settle(failures)
    assert failures == ["certificate verify failed: unable to get local issuer certificate"]


def test_mtls_needs_client_ca(pki):
    with pytest.raises(ValueError, match="needs client_ca"):
        build_client_ssl(client_ssl(pki, verify_client="required"))


# --------------------------------------------------------------------------- server SSL (towards real servers)


async def test_server_ssl_verifies_against_ca(pki, tls_server, dial_roundtrip):
    srv = await tls_server(build_client_ssl(client_ssl(pki)))
    tls = build_server_ssl(ServerSSL(name="internal", ca=pki.ca, sni="localhost"))
    r = await dial_roundtrip(srv.port, tls, ("127.0.0.1", srv.port))
    assert r.echo == b"ping"
    assert r.ssl_object.getpeercert()["subjectAltName"][0] == ("DNS", "localhost")


@pytest.mark.parametrize(
    ("which", "sni", "reason"),
    [
        ("rogue_server", "localhost", "certificate verify failed: unable to get local issuer certificate"),
        ("self_signed", "localhost", "certificate verify failed: self-signed certificate"),
        ("server", "wrong.test", "certificate verify failed: hostname mismatch, certificate is not valid for 'wrong.test'"),
        ("expired", "localhost", "certificate verify failed: certificate has expired"),
    ],
)
async def test_server_ssl_refuses_untrusted_certificate(pki, tls_server, dial_roundtrip, which, sni, reason):
    srv = await tls_server(build_client_ssl(client_ssl(pki, getattr(pki, which))))
    tls = build_server_ssl(ServerSSL(name="internal", ca=pki.ca, sni=sni))
    with pytest.raises(ssl.SSLCertVerificationError) as e:
        await dial_roundtrip(srv.port, tls, "s1")
    assert handshake_failure_reason(e.value) == reason


async def test_server_ssl_without_sni_checks_the_address(pki, tls_server, dial_roundtrip):
    tls = build_server_ssl(ServerSSL(name="internal", ca=pki.ca))
    assert tls.server_hostname("ignored.test", "127.0.0.1") == "127.0.0.1"  # checked, never sent as SNI
    assert tls.server_hostname("ignored.test", "backend.test") == ""
    # a certificate for 127.0.0.1 (adc.pem: localhost, 127.0.0.1, ::1) from the trusted CA
    srv = await tls_server(build_client_ssl(client_ssl(pki, pki.server)))
    r = await dial_roundtrip(srv.port, tls, "s1", "ignored.test")
    assert r.echo == b"ping"
    # a trusted certificate for other names: refused, whatever the chain
    other = await tls_server(build_client_ssl(client_ssl(pki, pki.other)))  # api.other.test, *.example.test
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        await dial_roundtrip(other.port, tls, "s2")
    # a real server addressed by name, no sni: no name is sent, so the chain alone is checked
    assert (await dial_roundtrip(other.port, tls, "s3", server_host="backend.test")).echo == b"ping"
    rogue = await tls_server(build_client_ssl(client_ssl(pki, pki.rogue_server)))
    with pytest.raises(ssl.SSLCertVerificationError):
        await dial_roundtrip(rogue.port, tls, "s4", server_host="backend.test")
    with pytest.raises(ssl.SSLCertVerificationError):
        await dial_roundtrip(rogue.port, tls, "s5")


async def test_server_ssl_verify_off(pki, tls_server, dial_roundtrip):
    srv = await tls_server(build_client_ssl(client_ssl(pki, pki.self_signed)))
    tls = build_server_ssl(ServerSSL(name="lax", verify=False, sni="whatever.test"))
    assert (await dial_roundtrip(srv.port, tls, "s")).echo == b"ping"


async def test_server_ssl_sends_sni_and_client_certificate(pki, tls_server, dial_roundtrip):
    # the real server wants a client certificate and serves two names
    srv = await tls_server(
        build_client_ssl(client_ssl(pki, pki.server, pki.other, verify_client="required", client_ca=pki.ca))
    )
    tls = build_server_ssl(
        ServerSSL(name="mtls", ca=pki.ca, sni="@host", cert=pki.client[0], key=pki.client[1])
    )
    name = tls.server_hostname("API.other.test:8443", "127.0.0.1")
    assert name == "api.other.test"
    r = await dial_roundtrip(srv.port, tls, "s", "API.other.test:8443")
    assert "api.other.test" in r.peer_names
    assert srv.accepted[-1].getpeercert()["subject"] == ((("commonName", "client.test"),),)


def test_server_hostname_choices(pki):
    fixed = build_server_ssl(ServerSSL(name="a", ca=pki.ca, sni="backend.internal"))
    assert fixed.server_hostname("example.com", "10.0.0.1") == "backend.internal"
    host = build_server_ssl(ServerSSL(name="b", ca=pki.ca, sni="@host"))
    assert host.server_hostname("Example.COM.:443", "10.0.0.1") == "example.com"
    assert host.server_hostname("[::1]:8443", "10.0.0.1") == "::1"
    assert host.server_hostname(None, "10.0.0.1") == "10.0.0.1"
    assert host.server_hostname("bad host/\x00", "10.0.0.1") == "10.0.0.1"
    # whose fault a verification failure is: the client's when its Host named the server, else the server's
    assert host.name_from_request("Example.COM.:443")
    assert not host.name_from_request(None) and not host.name_from_request("bad host/\x00")
    assert not fixed.name_from_request("example.com")
    none = build_server_ssl(ServerSSL(name="c", ca=pki.ca))
    assert none.server_hostname("example.com", "10.0.0.1") == "10.0.0.1"  # the address, checked
    assert none.server_hostname("example.com", "backend.internal") == ""  # no name sent: chain only
    assert none.context.check_hostname and none.context.verify_mode == ssl.CERT_REQUIRED
    assert none.chain_only is not None and not none.chain_only.check_hostname
    assert none.for_dial("s", None, "backend.internal")[0] is none.chain_only
    unverified = build_server_ssl(ServerSSL(name="d", verify=False))
    assert unverified.server_hostname("example.com", "10.0.0.1") == "" and unverified.chain_only is None
    assert fixed.context.check_hostname
    assert fixed.context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("max_version", ["TLSv1.3", "TLSv1.2"])
async def test_server_ssl_resumes_sessions_per_real_server(pki, tls_server, dial_roundtrip, max_version):
    srv = await tls_server(build_client_ssl(client_ssl(pki, max_version=max_version)))
    other = await tls_server(build_client_ssl(client_ssl(pki, max_version=max_version)))
    tls = build_server_ssl(ServerSSL(name="internal", ca=pki.ca, sni="localhost"))
    first = await dial_roundtrip(srv.port, tls, ("127.0.0.1", srv.port))
    assert not first.ssl_object.session_reused
    # a different real server has no session yet, and does not spoil the first one's
    elsewhere = await dial_roundtrip(other.port, tls, ("127.0.0.1", other.port))
    assert not elsewhere.ssl_object.session_reused
    for _ in range(3):
        again = await dial_roundtrip(srv.port, tls, ("127.0.0.1", srv.port))
        assert again.ssl_object.session_reused
        assert again.ssl_object.version() == max_version


async def test_sni_listener_resumes_sessions_for_every_certificate(pki, tls_server, dial_roundtrip):
    srv = await tls_server(build_client_ssl(client_ssl(pki, pki.server, pki.other)))
    tls = build_server_ssl(ServerSSL(name="internal", ca=pki.ca, sni="api.other.test"))
    await dial_roundtrip(srv.port, tls, "s")
    r = await dial_roundtrip(srv.port, tls, "s")
    assert r.ssl_object.session_reused and "api.other.test" in r.peer_names


def test_server_ssl_dials_on_the_stock_asyncio_loop(pki):
    """Dialling with a server SSL profile must also work where the asyncio loop runs."""

    async def run():
        assert type(asyncio.get_running_loop()) is asyncio.SelectorEventLoop
        # the appliance's TLS layer serves, the stock loop's TLS does not come into it
        server = await asyncio.get_running_loop().create_server(
            terminating(lambda: _Echo(), build_client_ssl(client_ssl(pki)), asyncio.get_running_loop()),
            "127.0.0.1", 0,
        )
        port = server.sockets[0].getsockname()[1]
        tls = build_server_ssl(ServerSSL(name="internal", ca=pki.ca, sni="localhost"))
        reused = [(await _dial_roundtrip(port, tls)).ssl_object.session_reused for _ in range(2)]
        server.close()
        return reused

    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        assert runner.run(run()) == [False, True]


class _Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


# --------------------------------------------------------------------------- reasons


def test_reasons_for_common_failures():
    assert handshake_failure_reason(ConnectionAbortedError("SSL handshake is taking longer than 5.0 seconds: aborting the connection")) == "handshake timed out"
    assert handshake_failure_reason(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")) == "connection closed during handshake"
    e = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    e.reason = "WRONG_VERSION_NUMBER"
    assert handshake_failure_reason(e) == "wrong version number"
    assert handshake_failure_reason(ConnectionResetError(104, "Connection reset by peer")) == "connection reset during handshake"


async def test_plain_http_on_tls_port_reason(pki, tls_server):
    failures: list[str] = []
    srv = await tls_server(build_client_ssl(client_ssl(pki), on_handshake_error=collecting(failures)))
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", srv.port), 5)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await settle(failures)
    assert failures == ["plain HTTP request on a TLS port"]


async def test_plain_tcp_to_a_tls_real_server_reason(pki, dial_roundtrip):
    """Dialling TLS at a plain TCP server that answers with HTTP: "wrong version number"."""

    async def answer(reader, writer):
        await reader.read(1)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        tls = build_server_ssl(ServerSSL(name="internal", ca=pki.ca, sni="localhost"))
        with pytest.raises(ssl.SSLError) as e:
            await dial_roundtrip(server.sockets[0].getsockname()[1], tls)
        assert handshake_failure_reason(e.value) == "wrong version number"
    finally:
        server.close()


def test_session_cache_is_bounded():
    from adc.tls.contexts import MAX_RESUMPTION_KEYS, _Resumption

    store = _Resumption()
    for i in range(MAX_RESUMPTION_KEYS + 10):
        store.put(i, object())  # type: ignore[arg-type]
    assert len(store.sessions) == MAX_RESUMPTION_KEYS and 0 not in store.sessions
