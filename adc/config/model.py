"""The validated configuration: frozen values, no I/O.

`adc.config.load` builds these from TOML; everything downstream (engine, pools,
health checks, admin API) receives them and never sees raw TOML. Durations are
float seconds, where 0.0 means "no timeout"; sizes are int bytes.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path


class ProfileType(str, enum.Enum):
    TCP = "tcp"
    HTTP = "http"
    HTTPS = "https"

    @property
    def layer7(self) -> bool:
        return self is not ProfileType.TCP


class ServerState(str, enum.Enum):
    """Administrative state of a real server (health is tracked separately)."""

    ENABLED = "enabled"
    DISABLED = "disabled"  # no traffic at all
    DRAINING = "draining"  # no new connections or requests; live ones stay


BALANCING_METHODS = ("round-robin", "least-conn", "random-two", "source-hash", "uri-hash", "maglev")
HASH_TYPES = ("map-based", "consistent")
HEALTH_TYPES = ("tcp", "http", "tls", "websocket")
PERSISTENCE_TYPES = ("cookie", "source-ip")
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
VERIFY_CLIENT = ("none", "optional", "required")
MAX_WEIGHT = 1000  # a real server's weight is 0..MAX_WEIGHT (config, admin API, dashboard)


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class CertificatePair:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class ClientSSL:
    """TLS settings of an `https` profile (the client side)."""

    certificates: tuple[CertificatePair, ...]
    min_version: str = "TLSv1.2"
    max_version: str = "TLSv1.3"
    ciphers: str = ""  # TLS 1.2 suites; "" = the appliance's forward-secret AEAD default
    strict_sni: bool = False
    verify_client: str = "none"
    client_ca: Path | None = None
    # certificate revocation lists (PEM) of client_ca's issuing CAs: a revoked client certificate
    # fails the handshake (OpenSSL checks the leaf, like NGINX's ssl_crl and HAProxy's crl-file)
    client_crl: Path | None = None
    alpn: tuple[str, ...] = ("http/1.1",)
    session_tickets: bool = True
    # X-SSL-Client-* fields to the real servers (adc.tls.clientcert); the loader's default
    # is on whenever verify_client asks for a certificate
    forward_client_cert: bool = False


@dataclass(frozen=True, slots=True)
class ServerSSL:
    """TLS from the appliance to the real servers of a pool."""

    name: str
    verify: bool = True
    ca: Path | None = None  # None = the system trust store
    # certificate revocation lists (PEM) of the CAs that issue the real servers' certificates:
    # a revoked one fails the handshake (F5's server SSL CRL, HAProxy's `crl-file` on a server line)
    crl: Path | None = None
    sni: str | None = None  # fixed name, "@host" (the request's Host), or None
    min_version: str = "TLSv1.2"
    cert: Path | None = None
    key: Path | None = None
    ciphers: str = ""
    alpn: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    type: ProfileType
    timeout_client: float = 30.0
    timeout_server: float = 30.0
    timeout_connect: float = 5.0
    timeout_http_request: float = 10.0
    timeout_tunnel: float = 3600.0
    timeout_client_fin: float = 10.0
    timeout_server_fin: float = 10.0
    timeout_tls_handshake: float = 10.0
    timeout_server_idle: float = 60.0  # idle keep-alive connection to a real server
    websocket: bool = True
    x_forwarded_for: bool = True
    x_forwarded_proto: bool = True
    forwarded: bool = False
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    max_request_line: int = 8 * 1024
    max_body_bytes: int = 0  # request body limit (413 beyond); 0 = unlimited
    max_idle_server_connections: int = 64  # per real server
    buffer_bytes: int = 256 * 1024  # per-direction write-buffer high water mark
    connect_retries: int = 3  # other real servers tried after a failed connect
    client_ssl: ClientSSL | None = None
    # the file that defined it, for error messages (the main file's name for a built-in one);
    # not part of what the profile is: a reload compares profiles by their settings
    source: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Route:
    """A Layer-7 content rule; the first matching route of a virtual server wins."""

    host: str | None = None  # exact, or "*.example.com"
    methods: frozenset[str] | None = None
    path_exact: str | None = None
    path_prefix: str | None = None
    path_regex: re.Pattern[str] | None = None
    websocket: bool | None = None  # None = the profile's default
    pool: str | None = None
    respond: int | None = None
    # a redirect answered by the appliance: Location is this template with {host}, {uri}, {path}
    # filled from the request (see adc.http.redirect)
    redirect: str | None = None
    redirect_code: int = 302
    index: int = 0

    def describe(self) -> str:
        parts = []
        if self.host:
            parts.append(f"host={self.host}")
        if self.methods:
            parts.append("methods=" + ",".join(sorted(self.methods)))
        if self.path_exact is not None:
            parts.append(f"path={self.path_exact}")
        if self.path_prefix is not None:
            parts.append(f"prefix={self.path_prefix}")
        if self.path_regex is not None:
            parts.append(f"regex={self.path_regex.pattern}")
        return f"#{self.index}" + (f"({' '.join(parts)})" if parts else "")


@dataclass(frozen=True, slots=True)
class VirtualServer:
    name: str
    listen: tuple[Address, ...]
    profile: str
    pool: str | None = None
    max_connections: int = 0  # 0 = unlimited
    routes: tuple[Route, ...] = ()
    backlog: int = 1024


@dataclass(frozen=True, slots=True)
class HealthCheck:
    type: str = "tcp"
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    # HAProxy's fastinter and downinter; None = `interval`
    fast_interval: float | None = None  # while a verdict is changing (some failures, or some successes)
    down_interval: float | None = None  # while the server is down and nothing points to its return
    path: str = "/"
    host: str | None = None
    method: str = "GET"
    expect: tuple[int, ...] = (200,)


@dataclass(frozen=True, slots=True)
class Persistence:
    type: str  # "cookie" | "source-ip"
    name: str = "ADCSRV"  # cookie name
    timeout: float = 600.0  # source-ip entry lifetime
    max_entries: int = 100_000  # source-ip table bound


@dataclass(frozen=True, slots=True)
class RealServer:
    name: str
    address: Address
    weight: int = 1
    backup: bool = False
    state: ServerState = ServerState.ENABLED
    max_connections: int = 0


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    servers: tuple[RealServer, ...]
    method: str = "round-robin"
    hash_on: str = "source"
    hash_type: str = "map-based"  # source-hash / uri-hash: "map-based" or "consistent" (HAProxy's hash-type)
    server_ssl: str | None = None
    slow_start: float = 0.0
    health: HealthCheck | None = None
    persistence: Persistence | None = None


@dataclass(frozen=True, slots=True)
class ApplianceSettings:
    name: str = "adc"
    admin: str = "unix:run/adc.sock"
    admin_token: str | None = None
    grace: float = 30.0
    access_log: str = "stderr"
    access_log_format: str = "text"
    include: tuple[str, ...] = ("profiles/*.toml",)


@dataclass(frozen=True, slots=True)
class Config:
    source: Path
    appliance: ApplianceSettings
    virtual_servers: dict[str, VirtualServer]
    pools: dict[str, Pool]
    profiles: dict[str, Profile]
    server_ssl: dict[str, ServerSSL] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    display: str = ""  # the main file as the operator named it, for messages (a reload names it so again)

    @property
    def base_dir(self) -> Path:
        return self.source.parent
