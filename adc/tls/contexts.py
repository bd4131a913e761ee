"""TLS contexts: the client side of an `https` profile and the server side of a pool.

`build_client_ssl(ClientSSL)` makes the context a listener terminates client TLS with
(`adc.tls.termination`: `terminating(factory, ctx, loop, handshake_timeout)` is the
listener's protocol factory); `build_server_ssl(ServerSSL)`
makes what a pool dials its real servers with (`ServerTLS.for_dial()`, the `tls` argument of
`adc.engine.connect.dial`). `handshake_failure_reason(exc)` turns
a failed handshake into the short reason a log line carries.

Defaults (DESIGN.md "TLS defaults"): TLS 1.2 and 1.3 only; on TLS 1.2 only forward-secret
AEAD suites; no compression; no renegotiation; session tickets on; ALPN `http/1.1` only
(an `h2` entry is dropped: the appliance does not speak HTTP/2); the whole chain in the
certificate file is served. Towards real servers the certificate is verified unless the
operator turns it off, and the host name is checked whenever there is one.

SNI on the client side: each certificate's DNS names (SANs; the common name when there are
none) are indexed; an exact name wins over a `*.` wildcard (one label), an earlier
certificate over a later one, and the first certificate is the default. With `strict_sni`
the default is not used: like HAProxy's `strict-sni` and F5's "SNI Require", a handshake
whose name matches no certificate, *or which carries no SNI at all*, is refused with an
`unrecognized_name` alert.
"""

from __future__ import annotations

import collections
import ipaddress
import re
import ssl
import sys
import time
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

from adc.config.model import ClientSSL, ServerSSL

# TLS 1.2 suites: ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 (Mozilla "intermediate").
# TLS 1.3 suites are all AEAD and forward-secret; OpenSSL's defaults are kept for them.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
ALPN_NEVER = frozenset({"h2", "h2c"})  # protocols the appliance does not speak
MAX_RESUMPTION_KEYS = 1024  # (real server, name) pairs whose last TLS session is kept

TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_VERIFY_CLIENT = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}

HandshakeErrorHook = Callable[[BaseException, Any], None]  # (exception, adc.tls.termination.TLSLayer)


# --------------------------------------------------------------------------- shared settings


def _version(name: str) -> ssl.TLSVersion:
    try:
        return TLS_VERSIONS[name]
    except KeyError:
        raise ValueError(f"unknown TLS version {name!r} (known: {', '.join(TLS_VERSIONS)})") from None


def _harden(ctx: ssl.SSLContext, min_version: str, max_version: str, ciphers: str, alpn: Iterable[str]) -> None:
    ctx.minimum_version = _version(min_version)
    ctx.maximum_version = _version(max_version)
    ctx.set_ciphers(ciphers or TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    # no talking to peers without secure renegotiation (RFC 5746)
    ctx.options &= ~getattr(ssl, "OP_LEGACY_SERVER_CONNECT", 0x4)
    protocols = [p for p in alpn if p not in ALPN_NEVER]
    if protocols:
        ctx.set_alpn_protocols(protocols)


# --------------------------------------------------------------------------- client side (https profile)


class SniRefusal:
    """What the SNI choice of a strict listener refused during the handshake under way.

    OpenSSL calls the SNI callback inside the handshake step that then fails, so the TLS
    layer takes the refusal right after that step (`take()`), for the failure's log line.
    """

    __slots__ = ("name", "no_name")

    def __init__(self) -> None:
        self.name: str | None = None
        self.no_name = False

    def refuse(self, server_name: str | None) -> None:
        if server_name:
            self.name = server_name
        else:
            self.no_name = True

    def take(self) -> tuple[str | None, bool]:
        out = (self.name, self.no_name)
        self.name, self.no_name = None, False
        return out


class ClientSSLContext(ssl.SSLContext):
    """Server-side context of an https profile, terminated by `adc.tls.termination.TLSLayer`.

    `on_handshake_error(exc, layer)` sees each failed handshake (log it with
    `handshake_failure_reason(exc, layer)` and `layer.peer`); `sni_refusal` tells the
    layer what a strict listener refused.
    """

    on_handshake_error: HandshakeErrorHook | None = None
    sni_refusal: SniRefusal | None = None


def _dns_names(cert_file: Path) -> list[str]:
    """The DNS names a certificate answers to: its DNS SANs, or its common name if it has none."""
    from cryptography import x509  # at build time only, never per connection
    from cryptography.x509.oid import NameOID

    certs = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())
    cert = certs[0]
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(n) for n in names.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        dns = []
    if not dns:
        dns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [d.lower().rstrip(".") for d in dns]


class SniIndex:
    """Name -> certificate index: exact names, then `*.` wildcards (exactly one label)."""

    __slots__ = ("exact", "wildcard")

    def __init__(self) -> None:
        self.exact: dict[str, int] = {}
        self.wildcard: dict[str, int] = {}

    def add(self, index: int, names: Iterable[str]) -> None:
        for n in names:
            if n.startswith("*."):
                self.wildcard.setdefault(n[2:], index)
            elif "*" not in n:
                self.exact.setdefault(n, index)

    def lookup(self, server_name: str) -> int | None:
        name = server_name.lower().rstrip(".")
        i = self.exact.get(name)
        if i is None:
            _, dot, parent = name.partition(".")
            if dot:
                i = self.wildcard.get(parent)
        return i


def _client_context(cfg: ClientSSL, pair_index: int) -> ClientSSLContext:
    ctx = ClientSSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx, cfg.min_version, cfg.max_version, cfg.ciphers, cfg.alpn)
    if not cfg.session_tickets:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    pair = cfg.certificates[pair_index]
    ctx.load_cert_chain(str(pair.cert), str(pair.key))
    mode = _VERIFY_CLIENT.get(cfg.verify_client)
    if mode is None:
        raise ValueError(f"unknown verify_client {cfg.verify_client!r} (known: {', '.join(_VERIFY_CLIENT)})")
    if mode != ssl.CERT_NONE:
        if cfg.client_ca is None or str(cfg.client_ca) == "":
            raise ValueError(f"verify_client = {cfg.verify_client!r} needs client_ca")
        ctx.load_verify_locations(cafile=str(cfg.client_ca))
        ctx.verify_mode = mode
        if cfg.client_crl is not None:
            # The leaf's issuer must have a CRL in the file, or every certificate it issued
            # is refused ("unable to get certificate CRL"); so is every one while the CRL is
            # past its next update: `adc check` warns before that day.
            ctx.load_verify_locations(cafile=str(cfg.client_crl))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def build_client_ssl(cfg: ClientSSL, on_handshake_error: HandshakeErrorHook | None = None) -> ClientSSLContext:
    """The context an https listener terminates client TLS with.

    Raises ssl.SSLError / OSError / ValueError when a file is unusable (`adc check` reports
    those first, with clearer words, through `adc.tls.certs.check_pair`).
    """
    if not cfg.certificates:
        raise ValueError("client_ssl needs at least one certificate")
    contexts = [_client_context(cfg, i) for i in range(len(cfg.certificates))]
    default = contexts[0]
    index = SniIndex()
    for i, pair in enumerate(cfg.certificates):
        index.add(i, _dns_names(pair.cert))
    for c in contexts:
        c.on_handshake_error = on_handshake_error
    strict = cfg.strict_sni
    if len(contexts) == 1 and not strict:
        return default  # nothing to choose

    refusal = SniRefusal()
    # the other certificates' contexts; not the default itself, which holds this callback:
    # no reference cycle, so a reload frees the old contexts at once
    others: dict[int, ssl.SSLContext] = dict(enumerate(contexts))
    del others[0]

    def choose_certificate(ssl_object: Any, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        # ssl_object: the C-level TLS connection (its `context` picks the certificate)
        i = index.lookup(server_name) if server_name else None
        if i is None:
            if strict:
                refusal.refuse(server_name)
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            return None  # the default certificate
        if i:
            ssl_object.context = others[i]
        return None

    default.sni_callback = choose_certificate
    default.sni_refusal = refusal
    return default


# --------------------------------------------------------------------------- server side (towards real servers)


class _Resumption:
    """The last resumable TLS session per key (bounded LRU); sessions are small, connections are not."""

    __slots__ = ("sessions",)

    def __init__(self) -> None:
        self.sessions: collections.OrderedDict[Hashable, ssl.SSLSession] = collections.OrderedDict()

    def get(self, key: Hashable) -> ssl.SSLSession | None:
        session = self.sessions.get(key)
        if session is None:
            return None
        if session.time + session.timeout <= time.time():
            del self.sessions[key]
            return None
        self.sessions.move_to_end(key)
        return session

    def put(self, key: Hashable, session: ssl.SSLSession) -> None:
        self.sessions[key] = session
        self.sessions.move_to_end(key)
        if len(self.sessions) > MAX_RESUMPTION_KEYS:
            self.sessions.popitem(last=False)


class ServerSSLContext(ssl.SSLContext):
    """Client-side context towards real servers, with the last resumable session per
    (real server, name): adc's TLS layer resumes from it and fills it (see `ServerTLS.for_dial`)."""

    resumption: _Resumption


_HOSTNAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_])?")


def is_host_name(name: str) -> bool:
    """A lower-case ASCII DNS name the TLS layer can send as SNI and check: labels of 1-63 characters."""
    return _HOSTNAME.fullmatch(name) is not None and all(0 < len(label) <= 63 for label in name.split("."))


def _host_name(host: str | None) -> str | None:
    """A Host header value reduced to a name fit for SNI and verification, or None."""
    if not host:
        return None
    h = host.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        if end < 0:
            return None
        h = h[1:end]
        try:
            return str(ipaddress.IPv6Address(h))
        except ValueError:
            return None
    h = h.rsplit(":", 1)[0] if h.count(":") == 1 else h
    h = h.rstrip(".")
    if ":" in h:
        try:
            return str(ipaddress.IPv6Address(h))
        except ValueError:
            return None
    if not is_host_name(h):
        return None  # an empty or over-long label would make the TLS layer raise later
    return h


class ServerTLS:
    """TLS towards the real servers of one pool (one `[server_ssl.NAME]`).

    Traffic and health checks dial with adc's TLS layer (`for_dial`, see `adc.engine.connect.dial`),
    so both resume the same sessions.
    """

    __slots__ = ("cfg", "context", "chain_only", "files")

    def __init__(self, cfg: ServerSSL, context: ServerSSLContext, files: tuple[bytes, ...] = (),
                 chain_only: ServerSSLContext | None = None) -> None:
        self.cfg = cfg
        self.context = context
        # sni unset, verification on: the context for real servers addressed by name, whose
        # certificate can only be checked by its chain (no name is sent, so none is checked)
        self.chain_only = chain_only
        self.files = files  # what the ca, cert and key files held when the context was made

    def server_hostname(self, request_host: str | None = None, server_host: str | None = None) -> str:
        """The name to send as SNI and check the certificate against ("" = none).

        sni = "NAME": NAME. sni = "@host": the request's Host (without port); when the request has
        no usable Host, the real server's address. sni unset: the real server's address when it is
        an IP address (checked against the certificate's IP SANs; an IP is never sent as SNI),
        else "" (no SNI; the chain alone is verified).
        """
        sni = self.cfg.sni
        if not sni:
            return server_host if server_host and self.cfg.verify and is_ip_address(server_host) else ""
        if sni == "@host":
            return _host_name(request_host) or (server_host or "")
        return sni

    def name_from_request(self, request_host: str | None) -> bool:
        """The name checked comes from the client's request (`sni = "@host"` and a usable Host),
        not from the configuration or the real server's address."""
        return self.cfg.sni == "@host" and bool(_host_name(request_host))

    def for_dial(self, key: Hashable, request_host: str | None, server_host: str | None) -> tuple[
        ServerSSLContext, str | None, ssl.SSLSession | None, tuple[_Resumption, Hashable]
    ]:
        """What adc's TLS layer needs for one connection to a real server (`adc.tls.termination.dialling`):
        (context, server name to send and check or None, session to resume, where to keep the next one).

        Sessions are kept per real server (`key`) and name.
        Raises UnicodeError for a name IDNA cannot encode.
        """
        name = self.server_hostname(request_host, server_host)
        context = self.context if name or self.chain_only is None else self.chain_only
        encoded = context._encode_hostname(name) if name else None  # type: ignore[attr-defined]
        store = context.resumption
        rkey = (key, encoded)
        return context, encoded, store.get(rkey), (store, rkey)


def is_ip_address(host: str) -> bool:
    """An IPv4 or IPv6 address (what a certificate's IP SANs name), not a host name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _server_context(cfg: ServerSSL, check_hostname: bool) -> ServerSSLContext:
    ctx = ServerSSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.resumption = _Resumption()
    _harden(ctx, cfg.min_version, "TLSv1.3", cfg.ciphers, cfg.alpn)
    if cfg.verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if cfg.ca is not None and str(cfg.ca) != "":
            ctx.load_verify_locations(cafile=str(cfg.ca))
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        ctx.check_hostname = check_hostname
        if cfg.crl is not None:
            # the real server's own certificate against its issuer's list (as for client_crl);
            # an issuer without a list in the file has every certificate refused
            ctx.load_verify_locations(cafile=str(cfg.crl))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.cert is not None and cfg.key is not None:
        ctx.load_cert_chain(str(cfg.cert), str(cfg.key))
    return ctx


def build_server_ssl(cfg: ServerSSL) -> ServerTLS:
    """TLS settings towards a pool's real servers (verification on unless `verify = false`).

    With verification on, the certificate is checked against the name sent as SNI, or, with
    `sni` unset, against the real server's IP address (as NGINX's `proxy_ssl_verify` checks
    the upstream's address); a real server addressed by name with `sni` unset is verified by
    its chain alone (`adc check` warns).
    """
    ctx = _server_context(cfg, check_hostname=cfg.verify)
    chain_only = _server_context(cfg, check_hostname=False) if cfg.verify and not cfg.sni else None
    return ServerTLS(cfg, ctx, server_ssl_files(cfg), chain_only)


def server_ssl_files(cfg: ServerSSL) -> tuple[bytes, ...]:
    """The contents of the files a server SSL profile names: a reload compares them to pick up
    certificates renewed in place."""
    out: list[bytes] = []
    for path in (cfg.ca if cfg.verify else None, cfg.crl if cfg.verify else None, cfg.cert, cfg.key):
        if path is not None and str(path) != "":
            with open(path, "rb") as f:
                out.append(f.read())
        else:
            out.append(b"")
    return tuple(out)


# --------------------------------------------------------------------------- reasons for log lines

TLS_REASONS: dict[str, str] = {  # OpenSSL's reason codes in an operator's words
    "WRONG_VERSION_NUMBER": "wrong version number",
    "UNSUPPORTED_PROTOCOL": "unsupported protocol version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "peer refused the protocol version",
    "NO_PROTOCOLS_AVAILABLE": "no protocol version in common",
    "NO_SHARED_CIPHER": "no shared cipher",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "peer aborted the handshake (handshake failure)",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "peer did not return a certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "peer requires a client certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "peer does not trust our certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "peer rejected our certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "peer says our certificate expired",
    "TLSV1_ALERT_DECRYPT_ERROR": "peer reported a decrypt error",
    "TLSV1_UNRECOGNIZED_NAME": "peer does not know the SNI name",
    "TLSV1_ALERT_UNRECOGNIZED_NAME": "peer does not know the SNI name",
    "HTTP_REQUEST": "plain HTTP request on a TLS port",
    "HTTPS_PROXY_REQUEST": "HTTP CONNECT request on a TLS port",
    "NO_APPLICATION_PROTOCOL": "no ALPN protocol in common",
    "TLSV1_ALERT_NO_APPLICATION_PROTOCOL": "no ALPN protocol in common",
    "UNSAFE_LEGACY_RENEGOTIATION_DISABLED": "peer does not support secure renegotiation",
    "TLSV1_ALERT_INTERNAL_ERROR": "peer reported an internal error",
    "UNEXPECTED_EOF_WHILE_READING": "connection closed during handshake",
    "RECORD_LAYER_FAILURE": "record layer failure",
}


def handshake_failure_reason(exc: BaseException, layer: Any = None) -> str:
    """A short human reason for a failed handshake, for a log line.

    `layer` (the TLSLayer given to `on_handshake_error`) adds what only the appliance
    knows, such as the SNI name a strict listener refused.
    """
    refused = getattr(layer, "refused_sni", None)
    if refused is not None:
        return f"unknown SNI name {refused!r}"
    if getattr(layer, "no_sni_refused", False):
        return "no SNI name (strict SNI)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        msg = (exc.verify_message or exc.reason or "").rstrip(".")
        if msg.startswith("Hostname mismatch"):
            msg = "h" + msg[1:]
        return f"certificate verify failed: {msg}" if msg else "certificate verify failed"
    if isinstance(exc, ssl.SSLEOFError):
        return "connection closed during handshake"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason == "CALLBACK_FAILED":  # the TLS layer could not read the name (see quiet_unreadable_sni)
            return "unreadable SNI name (not ASCII)"
        if reason in TLS_REASONS:
            return TLS_REASONS[reason]
        if reason:
            return reason.lower().replace("_", " ")
        return str(exc.args[1] if len(exc.args) > 1 else exc)
    if isinstance(exc, ConnectionAbortedError) and "handshake is taking longer" in str(exc):
        return "handshake timed out"
    if isinstance(exc, TimeoutError):
        return "handshake timed out"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "connection reset during handshake"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _unreadable_sni(unraisable: Any) -> bool:
    """The stdlib's report of a client's SNI name it cannot decode (before the SNI callback runs)."""
    exc = unraisable.exc_value
    return (
        isinstance(exc, UnicodeDecodeError) and exc.encoding == "ascii" and isinstance(unraisable.object, bytes)
        and exc.object == unraisable.object
    )


def quiet_unreadable_sni() -> None:
    """Stop a client's non-ASCII SNI name from printing a traceback on stderr.

    The stdlib cannot decode such a name for the SNI callback: it reports that as an
    "unraisable" exception (a traceback on stderr, each time any client likes) and fails
    the handshake, which the listener then logs in one line like any other failed handshake
    ("unreadable SNI name"). Every other unraisable exception still reaches the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "adc_sni", False):
        return

    def hook(unraisable: Any) -> None:
        if not _unreadable_sni(unraisable):
            previous(unraisable)

    hook.adc_sni = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
