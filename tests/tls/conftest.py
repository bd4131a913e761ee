"""TLS test fixtures: a certificate store made once per session, real TLS servers and clients on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvloop

from adc.engine.connect import dial
from adc.tls import certs
from adc.tls.termination import terminating

HANDSHAKE_TIMEOUT = 5.0
IO_TIMEOUT = 5.0


def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": uvloop.new_event_loop}  # the data path's loop


@dataclass(frozen=True)
class PKI:
    """Files of the session's certificate store (all under `base/certs`)."""

    base: Path
    dir: Path
    ca: Path  # dev CA (trusted by the clients of the tests)
    server: tuple[Path, Path]  # localhost, 127.0.0.1, ::1 (+ chain)
    other: tuple[Path, Path]  # api.other.test, *.example.test
    client: tuple[Path, Path]  # client certificate for mTLS
    rogue_ca: Path
    rogue_server: tuple[Path, Path]  # localhost, signed by a CA nobody trusts
    self_signed: tuple[Path, Path]  # localhost, self-signed
    expired: tuple[Path, Path]
    expiring: tuple[Path, Path]  # 10 days left


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    base = tmp_path_factory.mktemp("pki")
    d = base / "certs"
    certs.init(d)
    ca_cert, ca_key = certs.load_ca(d)

    def pair(name: str, names: list[str], **kw) -> tuple[Path, Path]:
        cert, key = certs.issue_cert(ca_cert, ca_key, names, **kw)
        paths = (d / f"{name}.pem", d / f"{name}.key")
        certs.write_pair(*paths, cert, key, chain=(ca_cert,))
        return paths

    other = pair("other", ["api.other.test", "*.example.test"], key_type="rsa")
    client = pair("client", ["client.test"], client=True)
    now = dt.datetime.now(dt.timezone.utc)
    expired = pair("expired", ["localhost"], not_before=now - dt.timedelta(days=40), days=10)
    expiring = pair("expiring", ["localhost"], not_before=now - dt.timedelta(days=1), days=11)

    rogue, rogue_key = certs.make_ca("rogue CA")
    certs.write_pair(d / "rogue-ca.pem", d / "rogue-ca.key", rogue, rogue_key)
    rcert, rkey = certs.issue_cert(rogue, rogue_key, ["localhost", "127.0.0.1"])
    certs.write_pair(d / "rogue.pem", d / "rogue.key", rcert, rkey)
    scert, skey = certs.make_ca("localhost")  # self-signed, used as a server certificate
    certs.write_pair(d / "self.pem", d / "self.key", scert, skey)
    return PKI(
        base=base,
        dir=d,
        ca=d / "ca.pem",
        server=(d / "adc.pem", d / "adc.key"),
        other=other,
        client=client,
        rogue_ca=d / "rogue-ca.pem",
        rogue_server=(d / "rogue.pem", d / "rogue.key"),
        self_signed=(d / "self.pem", d / "self.key"),
        expired=expired,
        expiring=expiring,
    )


def write_crl(path: Path, ca_dir: Path, revoked: list[Path], *, next_update_days: float = 7.0,
              ca: tuple[Path, Path] | None = None) -> None:
    """A CRL revoking the certificates in `revoked` (PEM files), signed by the CA of `ca_dir`
    (or by the `ca` certificate and key files), due for its next update in `next_update_days`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    if ca is None:
        ca_cert, ca_key = certs.load_ca(ca_dir)
    else:
        ca_cert = x509.load_pem_x509_certificate(ca[0].read_bytes())
        ca_key = serialization.load_pem_private_key(ca[1].read_bytes(), password=None)
    now = dt.datetime.now(dt.timezone.utc)
    next_update = now + dt.timedelta(days=next_update_days)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(min(now, next_update) - dt.timedelta(days=1)).next_update(next_update))
    for cert_path in revoked:
        serial = x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - dt.timedelta(hours=1)).build())
    path.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


class Echo(asyncio.Protocol):
    """Echoes bytes back; keeps what the TLS layer agreed on."""

    def __init__(self, seen: list) -> None:
        self.seen = seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.seen.append(transport.get_extra_info("ssl_object"))

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Client(asyncio.Protocol):
    """Sends one payload and collects the echo, or the error that closed the connection."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = bytearray()
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.payload)

    def data_received(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(self.payload) and not self.done.done():
            self.done.set_result(bytes(self.received))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionResetError("closed before the echo"))


@dataclass
class Result:
    ssl_object: ssl.SSLObject
    echo: bytes

    @property
    def peer_names(self) -> tuple[str, ...]:
        from cryptography import x509

        der = self.ssl_object.getpeercert(binary_form=True)
        return certs.cert_names(x509.load_der_x509_certificate(der))


async def _echo(transport, proto: "Client") -> Result:
    """Wait for the echo on a connection just made, then close it."""
    try:
        echo = await asyncio.wait_for(proto.done, IO_TIMEOUT)
        return Result(transport.get_extra_info("ssl_object"), echo)
    finally:
        transport.close()


async def _roundtrip(port: int, ctx, server_hostname: str | None = "localhost", payload: bytes = b"ping") -> Result:
    """Connect with TLS, send a payload, wait for the echo, close. Raises what failed."""
    loop = asyncio.get_running_loop()
    transport, proto = await asyncio.wait_for(
        loop.create_connection(
            lambda: Client(payload),
            "127.0.0.1",
            port,
            ssl=ctx,
            server_hostname=server_hostname,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        ),
        IO_TIMEOUT,
    )
    return await _echo(transport, proto)


async def _dial_roundtrip(port: int, tls, key="s", request_host: str | None = None, payload: bytes = b"ping",
                         server_host: str = "127.0.0.1") -> Result:
    """Dial a real server as the appliance does (adc's TLS layer, `tls` a `ServerTLS`, sessions
    kept under `key`), send a payload, wait for the echo, close. Raises what failed.
    `server_host`: the real server's address as configured (it is dialled on 127.0.0.1)."""
    loop = asyncio.get_running_loop()
    transport, proto = await asyncio.wait_for(
        dial(loop, lambda: Client(payload), "127.0.0.1", port, tls=tls.for_dial(key, request_host, server_host),
             tls_timeout=HANDSHAKE_TIMEOUT),
        IO_TIMEOUT,
    )
    return await _echo(transport, proto)


async def bio_client(port: int, pki):
    """A TLS client over memory BIOs, handshake done: (ssl object, incoming, outgoing, reader, writer).

    Its bytes go out only when the test writes them, so a test can cut them where it likes.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ssl.create_default_context(cafile=str(pki.ca)).wrap_bio(incoming, outgoing, server_hostname="localhost")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(10):  # bounded: a TLS 1.3 handshake takes two rounds
        try:
            client.do_handshake()
            return client, incoming, outgoing, reader, writer
        except ssl.SSLWantReadError:
            writer.write(outgoing.read())
            incoming.write(await asyncio.wait_for(reader.read(65536), IO_TIMEOUT))
    raise AssertionError("no handshake in 10 rounds")


@dataclass
class TLSServer:
    port: int
    accepted: list  # ssl objects of established connections
    server: asyncio.AbstractServer


@pytest.fixture
async def tls_server() -> AsyncIterator[Callable[[ssl.SSLContext], Awaitable[TLSServer]]]:
    """Start echo servers with a given server-side context on 127.0.0.1; all closed at the end."""
    made: list[TLSServer] = []

    async def start(ctx: ssl.SSLContext) -> TLSServer:
        loop = asyncio.get_running_loop()
        accepted: list = []
        # the appliance's own TLS termination, as an https listener runs it
        server = await loop.create_server(
            terminating(lambda: Echo(accepted), ctx, loop, HANDSHAKE_TIMEOUT), "127.0.0.1", 0
        )
        s = TLSServer(server.sockets[0].getsockname()[1], accepted, server)
        made.append(s)
        return s

    yield start
    for s in made:
        s.server.close()
        await asyncio.wait_for(s.server.wait_closed(), IO_TIMEOUT)


def _trusting_client(ca: Path, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A plain client context that trusts the test CA."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


@pytest.fixture
def roundtrip() -> Callable[..., Awaitable[Result]]:
    """`await roundtrip(port, ctx, server_hostname="localhost", payload=b"ping") -> Result`."""
    return _roundtrip


@pytest.fixture
def dial_roundtrip() -> Callable[..., Awaitable[Result]]:
    """`await dial_roundtrip(port, server_tls, key="s", request_host=None, payload=b"ping", server_host=...)`."""
    return _dial_roundtrip


@pytest.fixture
def trusting_client(pki: PKI) -> Callable[..., ssl.SSLContext]:
    """`trusting_client(alpn=None)`: a stock client context that trusts the test CA."""
    return lambda alpn=None: _trusting_client(pki.ca, alpn)
