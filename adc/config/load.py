"""TOML -> validated, frozen `Config`.

Every problem is collected (not just the first) as ``FILE: key.path: what is wrong``
and raised together as `ConfigError`. Unknown keys are errors: a typo must never
silently fall back to a default.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
import ssl
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from adc.config.model import (
    BALANCING_METHODS,
    HASH_TYPES,
    HEALTH_TYPES,
    MAX_WEIGHT,
    PERSISTENCE_TYPES,
    TLS_VERSIONS,
    VERIFY_CLIENT,
    Address,
    ApplianceSettings,
    CertificatePair,
    ClientSSL,
    Config,
    HealthCheck,
    Persistence,
    Pool,
    Profile,
    ProfileType,
    RealServer,
    Route,
    ServerSSL,
    ServerState,
    VirtualServer,
)
from adc.http.redirect import CODES as REDIRECT_CODES
from adc.http.redirect import check_template as check_redirect
from adc.tls.contexts import is_host_name, is_ip_address


class ConfigError(Exception):
    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|K|KB|KiB|M|MB|MiB|G|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1,
    "K": 1024, "KiB": 1024, "KB": 1000,
    "M": 1024**2, "MiB": 1024**2, "MB": 1000**2,
    "G": 1024**3, "GiB": 1024**3, "GB": 1000**3,
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_ORIGIN_TARGET = re.compile(r"/[!-~]*")  # a path (and query): visible ASCII, no spaces or controls
_HOST_VALUE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]+)(:[0-9]{1,5})?")


def _sni_problem(sni: str) -> str | None:
    """Why `sni` cannot be sent and checked as a real server's name, or None."""
    if sni == "@host":
        return None
    try:
        ipaddress.ip_address(sni)
        return None  # checked against the certificate's IP addresses (not sent: SNI carries names only)
    except ValueError:
        pass
    try:
        name = sni.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        name = ""
    if not is_host_name(name):
        return f"{sni!r} is not a host name, an IP address or \"@host\""
    return None


def parse_duration(value: Any) -> float:
    """"250ms", "10s", "5m", "1h", "1h30m", "0" -> seconds. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as \"10s\"")
    if isinstance(value, (int, float)) and value == 0:
        return 0.0
    if not isinstance(value, str):
        raise ValueError(f"expected a duration string with a unit such as \"10s\", got {value!r}")
    text = value.strip()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"bad duration {value!r} (use a number and a unit: ms, s, m, h, d; \"0\" = none)")
    return total


def parse_size(value: Any) -> int:
    """65536, "64KiB", "1MiB" -> bytes. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("expected a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return value
    if isinstance(value, str):
        m = _SIZE.fullmatch(value)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    raise ValueError(f"bad size {value!r} (bytes, or a string such as \"64KiB\", \"1MiB\")")


_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _host_problem(host: str) -> str:
    """Why `host` is neither an IPv4 address nor a host name ("" if it is one)."""
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if all(label.isdigit() for label in labels):  # written as an IPv4 address: it must be one
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return "is not an IPv4 address"
        return ""
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return "is not a host name (letters, digits, '-' and '_' between dots) or an IPv4 address"
    return ""


def parse_address(value: Any, *, allow_port_zero: bool = False) -> Address:
    """"host:port" or "[v6]:port" -> Address. Raises ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"expected \"host:port\", got {value!r}")
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"bad address {value!r} (IPv6 is written \"[::1]:8080\")")
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad address {value!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"bad address {value!r} (expected \"host:port\")")
        if ":" in host:
            raise ValueError(f"bad address {value!r} (IPv6 is written \"[::1]:8080\")")
        problem = _host_problem(host)
        if problem:
            raise ValueError(f"bad address {value!r}: {host!r} {problem}")
    if not port_text.isdigit():
        raise ValueError(f"bad address {value!r}: port {port_text!r} is not a number")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"bad address {value!r}: port must be {low}..65535")
    return Address(host, port)


# --------------------------------------------------------------------------------------
# Built-in profiles: always known by name, overridden by profiles/*.toml or inline tables.

BUILTIN_PROFILE_TYPES = {"tcp": ProfileType.TCP, "http": ProfileType.HTTP, "https": ProfileType.HTTPS}


class _Section:
    """Reads one TOML table, recording errors and the keys it consumed."""

    def __init__(self, loader: "_Loader", file: str, path: str, table: dict[str, Any]):
        self.loader, self.file, self.path, self.table = loader, file, path, table
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str | None, message: str) -> None:
        self.loader.errors.append(f"{self.file}: {self.key(name) if name else self.path}: {message}")

    def has(self, name: str) -> bool:
        return name in self.table

    def raw(self, name: str) -> Any:
        self.used.add(name)
        return self.table.get(name)

    def get(self, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            self.error(name, f"expected {_kind_name(kinds)}, got {_type_name(value)}")
            return default
        return value

    def conv(self, name: str, fn: Callable[[Any], Any], default: Any) -> Any:
        self.used.add(name)
        if name not in self.table:
            return default
        try:
            return fn(self.table[name])
        except ValueError as exc:
            self.error(name, str(exc))
            return default

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            self.error(name, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def int_range(self, name: str, default: int, low: int, high: int | None = None) -> int:
        value = self.get(name, int, default)
        if value < low or (high is not None and value > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            self.error(name, f"must be {bound}, got {value}")
            return default
        return value

    def sub(self, name: str, *, required: bool = False) -> "_Section | None":
        self.used.add(name)
        if name not in self.table:
            if required:
                self.error(name, "is required")
            return None
        value = self.table[name]
        if not isinstance(value, dict):
            self.error(name, f"expected a table, got {_type_name(value)}")
            return None
        return _Section(self.loader, self.file, self.key(name), value)

    def path_value(self, name: str, default: Path | None = None) -> Path | None:
        value = self.get(name, str, None)
        if value is None or value == "":
            return default
        return self.loader.resolve(self.file, value)

    def finish(self) -> None:
        for name in self.table:
            if name not in self.used:
                self.error(name, "unknown key")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _known(names: Any) -> str:
    names = sorted(names)
    return f"(known: {', '.join(names)})" if names else "(none are defined)"


class _Loader:
    def __init__(self, source: Path, display: str):
        self.source = source
        self.display = display  # the main file as the user named it
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.files: dict[str, Path] = {display: source}

    def resolve(self, file: str, value: str) -> Path:
        p = Path(value).expanduser()
        if p.is_absolute():
            return p
        return (self.files.get(file, self.source).parent / p).resolve()

    def read_toml(self, path: Path, display: str) -> dict[str, Any] | None:
        self.files[display] = path
        try:
            with open(path, "rb") as f:
                return tomllib.load(f)
        except FileNotFoundError:
            self.errors.append(f"{display}: file not found")
        except OSError as exc:
            self.errors.append(f"{display}: cannot read: {exc.strerror or exc}")
        except tomllib.TOMLDecodeError as exc:
            self.errors.append(f"{display}: invalid TOML: {exc}")
        return None

    # ---------------------------------------------------------------- top level

    def load(self) -> Config:
        doc = self.read_toml(self.source, self.display)
        if doc is None:
            raise ConfigError(self.errors)
        top = _Section(self, self.display, "", doc)

        appliance = self.appliance(top.sub("appliance"))
        profiles_raw: dict[str, tuple[str, dict[str, Any]]] = {}
        for i, pattern in enumerate(appliance.include):
            if not self.include(pattern, profiles_raw) and not any(c in pattern for c in "*?["):
                # a pattern may match nothing (no profiles/ yet); a file named outright must exist
                self.errors.append(f"{self.display}: appliance.include[{i}]: {pattern}: file not found")
        inline = top.sub("profile")
        if inline is not None:
            for name, table in inline.table.items():
                inline.used.add(name)
                _add_profile(inline, name, self.display, table, profiles_raw)
        profiles = self.profiles(profiles_raw)

        server_ssl: dict[str, ServerSSL] = {}
        sect = top.sub("server_ssl")
        if sect is not None:
            for name, table in sect.table.items():
                sect.used.add(name)
                s = self.table_or_error(sect, name, table)
                if s is not None:
                    server_ssl[name] = self.server_ssl(name, s)

        pools: dict[str, Pool] = {}
        sect = top.sub("pool")
        if sect is not None:
            for name, table in sect.table.items():
                sect.used.add(name)
                s = self.table_or_error(sect, name, table)
                if s is not None:
                    pool = self.pool(name, s, server_ssl)
                    if pool is not None:
                        pools[name] = pool

        vss: dict[str, VirtualServer] = {}
        sect = top.sub("virtual_server")
        if sect is not None:
            for name, table in sect.table.items():
                sect.used.add(name)
                s = self.table_or_error(sect, name, table)
                if s is not None:
                    vs = self.virtual_server(name, s, profiles, pools)
                    if vs is not None:
                        vss[name] = vs
        if not vss and not any("virtual_server" in e for e in self.errors):
            self.errors.append(f"{self.display}: virtual_server: no virtual server is defined")
        self.check_listen_conflicts(vss)
        top.finish()

        if self.errors:
            raise ConfigError(self.errors)
        return Config(
            source=self.source,
            appliance=appliance,
            virtual_servers=vss,
            pools=pools,
            profiles=profiles,
            server_ssl=server_ssl,
            warnings=tuple(self.warnings),
            display=self.display,
        )

    def table_or_error(self, parent: _Section, name: str, table: Any) -> _Section | None:
        if not isinstance(table, dict):
            parent.error(name, f"expected a table, got {_type_name(table)}")
            return None
        if not _NAME.fullmatch(name):
            parent.error(name, "names may use letters, digits, '_', '-' and '.'")
        return _Section(self, parent.file, parent.key(name), table)

    def appliance(self, s: _Section | None) -> ApplianceSettings:
        d = ApplianceSettings()
        if s is None:
            return d
        admin = s.get("admin", str, d.admin)
        token = s.get("admin_token", str, None)
        if admin == "unix:":
            s.error("admin", "\"unix:\" needs the socket's path, e.g. \"unix:run/adc.sock\"")
        elif admin and not admin.startswith("unix:") and admin != "off":
            try:
                parse_address(admin)
            except ValueError as exc:
                s.error("admin", f"{exc} (or \"unix:PATH\", or \"off\")")
            else:
                if not token:
                    s.error("admin_token", "is required when admin is a TCP address")
        include = s.get("include", (list, str), list(d.include))
        if isinstance(include, str):
            include = [include]
        if not all(isinstance(i, str) for i in include):
            s.error("include", "expected a list of glob patterns")
            include = list(d.include)
        fmt = s.choice("access_log_format", ("text", "json"), d.access_log_format)
        settings = ApplianceSettings(
            name=s.get("name", str, d.name),
            admin=admin,
            admin_token=token,
            grace=s.conv("grace", parse_duration, d.grace),
            access_log=self._access_log(s, d.access_log),
            access_log_format=fmt,
            include=tuple(include),
        )
        s.finish()
        return settings

    def _access_log(self, s: _Section, default: str) -> str:
        """"stderr", "stdout", "off", or a file (relative to this file) the appliance can append to."""
        value = s.get("access_log", str, default)
        if value in ("stderr", "stdout", "off") or not value:
            return value or default
        path = self.resolve(s.file, value)
        try:
            if path.is_dir():
                s.error("access_log", f"{path} is a directory")
            elif not path.parent.is_dir():
                s.error("access_log", f"directory {path.parent} does not exist")
            elif not os.access(path if path.exists() else path.parent, os.W_OK):
                s.error("access_log", f"{path} is not writable")
        except OSError as exc:
            s.error("access_log", f"{path}: {exc.strerror or exc}")
        return str(path)

    def include(self, pattern: str, out: dict[str, tuple[str, dict[str, Any]]]) -> int:
        """Read the profile files `pattern` matches; returns how many it matched."""
        base = self.source.parent
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        display_base = str(Path(self.display).parent)
        matches = sorted(glob.glob(full))
        for match in matches:
            path = Path(match)
            try:
                rel = path.relative_to(base)
                display = str(Path(display_base) / rel) if display_base not in ("", ".") else str(rel)
            except ValueError:
                display = str(path)
            doc = self.read_toml(path, display)
            if doc is None:
                continue
            top = _Section(self, display, "", doc)
            sect = top.sub("profile")
            if sect is not None:
                for name, table in sect.table.items():
                    sect.used.add(name)
                    _add_profile(sect, name, display, table, out)
            top.finish()
        return len(matches)

    # ---------------------------------------------------------------- profiles

    def profiles(self, raw: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, Profile]:
        profiles: dict[str, Profile] = {}
        for name, kind in BUILTIN_PROFILE_TYPES.items():
            if name not in raw:
                profiles[name] = self.builtin_profile(name, kind)
        for name, (file, table) in raw.items():
            parent = _Section(self, file, "profile", {name: table})
            s = self.table_or_error(parent, name, table)
            if s is not None:
                p = self.profile(name, s)
                if p is not None:
                    profiles[name] = p
        return profiles

    def builtin_profile(self, name: str, kind: ProfileType) -> Profile:
        client_ssl = None
        if kind is ProfileType.HTTPS:
            base = self.source.parent
            client_ssl = ClientSSL(certificates=(CertificatePair((base / "certs/adc.pem").resolve(), (base / "certs/adc.key").resolve()),))
        return Profile(name=name, type=kind, client_ssl=client_ssl, source=self.display)

    def profile(self, name: str, s: _Section) -> Profile | None:
        default_type = BUILTIN_PROFILE_TYPES.get(name)
        type_text = s.get("type", str, default_type.value if default_type else None)
        if type_text is None:
            s.error("type", "is required (tcp, http or https)")
            s.finish()
            return None
        try:
            kind = ProfileType(type_text)
        except ValueError:
            s.error("type", f"must be one of tcp, http, https, got {type_text!r}")
            s.finish()
            return None
        d = Profile(name=name, type=kind)
        dur = lambda key: s.conv(key, parse_duration, getattr(d, key))  # noqa: E731
        values: dict[str, Any] = {}
        for key in (
            "timeout_client", "timeout_server", "timeout_connect", "timeout_http_request",
            "timeout_tunnel", "timeout_client_fin", "timeout_server_fin", "timeout_tls_handshake",
            "timeout_server_idle",
        ):
            values[key] = dur(key)
        for key in ("websocket", "x_forwarded_for", "x_forwarded_proto", "forwarded"):
            values[key] = s.get(key, bool, getattr(d, key))
        values["max_header_bytes"] = s.conv("max_header_bytes", parse_size, d.max_header_bytes)
        values["max_request_line"] = s.conv("max_request_line", parse_size, d.max_request_line)
        values["buffer_bytes"] = s.conv("buffer_bytes", parse_size, d.buffer_bytes)
        values["max_body_bytes"] = s.conv("max_body_bytes", parse_size, d.max_body_bytes)
        values["max_headers"] = s.int_range("max_headers", d.max_headers, 1, 10_000)
        values["max_idle_server_connections"] = s.int_range("max_idle_server_connections", d.max_idle_server_connections, 0)
        values["connect_retries"] = s.int_range("connect_retries", d.connect_retries, 0, 100)
        if values["max_header_bytes"] < 1024:
            s.error("max_header_bytes", "must be at least 1KiB")
            values["max_header_bytes"] = d.max_header_bytes
        if values["max_request_line"] < 64:  # below that, every request is a 414
            s.error("max_request_line", "must be at least 64 bytes")
            values["max_request_line"] = d.max_request_line
        if values["buffer_bytes"] < 4096:
            s.error("buffer_bytes", "must be at least 4KiB")
            values["buffer_bytes"] = d.buffer_bytes
        ignored = _HTTP_ONLY_KEYS if not kind.layer7 else _HTTPS_ONLY_KEYS if kind is ProfileType.HTTP else ()
        for key in ignored:
            if key in s.table:
                self.warnings.append(f"{s.file}: {s.key(key)}: does not apply to a profile of type {kind.value} (ignored)")
        client_ssl = None
        cs = s.sub("client_ssl")
        if kind is ProfileType.HTTPS:
            client_ssl = self.client_ssl(cs) if cs is not None else self.builtin_profile(name, kind).client_ssl
        elif cs is not None:
            s.error("client_ssl", f"only an https profile takes client_ssl (this one is {kind.value})")
        s.finish()
        return replace(d, client_ssl=client_ssl, source=s.file, **values)

    def client_ssl(self, s: _Section) -> ClientSSL:
        pairs: list[CertificatePair] = []
        certs = s.get("certificates", list, [])
        for i, item in enumerate(certs):
            if not isinstance(item, dict):
                s.error("certificates", f"[{i}]: expected a table {{ cert = ..., key = ... }}")
                continue
            c = _Section(self, s.file, f"{s.key('certificates')}[{i}]", item)
            cert = c.path_value("cert")
            key = c.path_value("key")
            if cert is None:
                c.error("cert", "is required")
            if key is None:
                c.error("key", "is required")
            c.finish()
            if cert is not None and key is not None:
                pairs.append(CertificatePair(cert, key))
        if not pairs and s.has("certificates"):
            s.error("certificates", "at least one certificate is required")
        elif not s.has("certificates"):
            s.error("certificates", "is required for an https profile")
        verify_client = s.choice("verify_client", VERIFY_CLIENT, "none")
        client_ca = s.path_value("client_ca")
        if verify_client != "none" and client_ca is None:
            s.error("client_ca", f"is required when verify_client is {verify_client!r}")
        client_crl = s.path_value("client_crl")
        if client_crl is not None and verify_client == "none":
            s.error("client_crl", "needs verify_client = \"optional\" or \"required\" (no certificate is asked for)")
        alpn = _alpn(s, ["http/1.1"])
        if "h2" in alpn:
            s.error("alpn", "h2 is not supported (the appliance speaks HTTP/1.1)")
        min_version = s.choice("min_version", TLS_VERSIONS, "TLSv1.2")
        max_version = s.choice("max_version", TLS_VERSIONS, "TLSv1.3")
        if min_version in TLS_VERSIONS and max_version in TLS_VERSIONS and (
            TLS_VERSIONS.index(min_version) > TLS_VERSIONS.index(max_version)
        ):
            s.error("min_version", f"{min_version} is above max_version {max_version}: no version is left")
        cfg = ClientSSL(
            certificates=tuple(pairs),
            min_version=min_version,
            max_version=max_version,
            ciphers=_ciphers(s),
            strict_sni=s.get("strict_sni", bool, False),
            verify_client=verify_client,
            client_ca=client_ca,
            client_crl=client_crl,
            alpn=tuple(a for a in alpn if a != "h2"),
            session_tickets=s.get("session_tickets", bool, True),
            forward_client_cert=s.get("forward_client_cert", bool, verify_client != "none"),
        )
        s.finish()
        return cfg

    def server_ssl(self, name: str, s: _Section) -> ServerSSL:
        cert = s.path_value("cert")
        key = s.path_value("key")
        if (cert is None) != (key is None):
            s.error("key" if key is None else "cert", "cert and key go together")
        sni = s.get("sni", str, None)
        if sni:
            problem = _sni_problem(sni)
            if problem is not None:
                s.error("sni", problem)
        verify = s.get("verify", bool, True)
        crl = s.path_value("crl")
        if crl is not None and not verify:
            s.error("crl", "needs verify = true (no certificate is checked)")
        cfg = ServerSSL(
            name=name,
            verify=verify,
            ca=s.path_value("ca"),
            crl=crl,
            sni=sni or None,
            min_version=s.choice("min_version", TLS_VERSIONS, "TLSv1.2"),
            cert=cert,
            key=key,
            ciphers=_ciphers(s),
            alpn=tuple(_alpn(s, [])),
        )
        s.finish()
        return cfg

    # ---------------------------------------------------------------- pools

    def pool(self, name: str, s: _Section, server_ssl: dict[str, ServerSSL]) -> Pool | None:
        method = s.choice("method", BALANCING_METHODS, "round-robin")
        hash_on = s.get("hash_on", str, "source")
        if hash_on not in ("source", "uri", "host") and not (
            hash_on.startswith(("header:", "cookie:")) and _HEADER_NAME.fullmatch(hash_on.split(":", 1)[1])
        ):
            s.error("hash_on", f"must be source, uri, host, \"header:NAME\" or \"cookie:NAME\", got {hash_on!r}")
        hash_type = s.choice("hash_type", HASH_TYPES, "map-based")
        if s.table.get("hash_type") in HASH_TYPES and method not in ("source-hash", "uri-hash"):
            s.error("hash_type", f"applies to source-hash and uri-hash only (method is {method})")
        ssl_name = s.get("server_ssl", str, None)
        if ssl_name is not None and ssl_name not in server_ssl:
            s.error("server_ssl", f"unknown server_ssl {ssl_name!r} {_known(server_ssl)}")
        health = None
        hs = s.sub("health")
        if hs is not None:
            health = self.health(hs, ssl_name is not None)
            ss = server_ssl.get(ssl_name or "")
            if ss is not None and ss.sni == "@host" and ss.verify and health.type != "tcp" and health.host is None:
                # a check has no request whose Host could name the server
                self.warnings.append(
                    f"{s.file}: {s.key('health')}.host: unset, and server_ssl.{ssl_name} takes its name from the "
                    f"request's Host: the {health.type} check verifies each real server's certificate against "
                    "its address; set host to a name the certificates carry"
                )
        persistence = None
        ps = s.sub("persistence")
        if ps is not None:
            persistence = self.persistence(ps)
        servers: list[RealServer] = []
        raw_servers = s.get("servers", list, None)
        if raw_servers is None:
            if "servers" not in s.table:
                s.error("servers", "is required (a pool needs at least one real server)")
        elif not raw_servers:
            s.error("servers", "a pool needs at least one real server")
        seen_names: dict[str, int] = {}
        seen_addrs: dict[Address, int] = {}
        for i, item in enumerate(raw_servers or []):
            path = f"{s.key('servers')}[{i}]"
            if not isinstance(item, dict):
                self.errors.append(f"{s.file}: {path}: expected a table {{ name = ..., address = ... }}")
                continue
            rs = self.real_server(_Section(self, s.file, path, item), i)
            # a name is checked for duplicates even where the rest of its server is wrong
            name_ = rs.name if rs is not None else item.get("name")
            if isinstance(name_, str) and _NAME.fullmatch(name_):
                if name_ in seen_names:
                    self.errors.append(f"{s.file}: {path}.name: duplicate server name {name_!r} (also servers[{seen_names[name_]}])")
                    continue
                seen_names[name_] = i
            if rs is None:
                continue
            if rs.address in seen_addrs:
                self.errors.append(f"{s.file}: {path}.address: duplicate address {rs.address} (also servers[{seen_addrs[rs.address]}])")
            seen_addrs[rs.address] = i
            servers.append(rs)
        ss = server_ssl.get(ssl_name or "")
        if ss is not None and ss.verify and not ss.sni:
            by_name = [rs.name for rs in servers if not is_ip_address(rs.address.host)]
            if by_name:
                # verification checks the certificate against an IP address, never a name not sent
                self.warnings.append(
                    f"{s.file}: {s.key('server_ssl')}: server_ssl.{ssl_name} sets no sni, so the certificates "
                    f"of {', '.join(by_name)} (addressed by name) are verified by their chain only; set sni "
                    "to the name they carry"
                )
        cfg = Pool(
            name=name,
            servers=tuple(servers),
            method=method,
            hash_on=hash_on,
            hash_type=hash_type,
            server_ssl=ssl_name,
            slow_start=s.conv("slow_start", parse_duration, 0.0),
            health=health,
            persistence=persistence,
        )
        s.finish()
        return cfg

    def real_server(self, s: _Section, index: int) -> RealServer | None:
        name = s.get("name", str, None)
        if name is None and "name" not in s.table:
            s.error("name", "is required")
        elif name is not None and not _NAME.fullmatch(name):
            s.error("name", "names may use letters, digits, '_', '-' and '.'")
            name = None
        address = None
        if "address" not in s.table:
            s.error("address", "is required")
            s.used.add("address")
        else:
            address = s.conv("address", parse_address, None)
        state_text = s.choice("state", tuple(x.value for x in ServerState), "enabled")
        rs = None
        if name is not None and address is not None:
            rs = RealServer(
                name=name,
                address=address,
                weight=s.int_range("weight", 1, 0, MAX_WEIGHT),
                backup=s.get("backup", bool, False),
                state=ServerState(state_text),
                max_connections=s.int_range("max_connections", 0, 0),
            )
        else:
            for key in ("weight", "backup", "max_connections"):
                s.used.add(key)
        s.finish()
        return rs

    def health(self, s: _Section, has_ssl: bool) -> HealthCheck:
        d = HealthCheck()
        kind = s.choice("type", HEALTH_TYPES, d.type)
        if kind == "tls" and not has_ssl:
            s.error("type", "a tls check needs the pool's server_ssl")
        expect = s.get("expect", list, list(d.expect))
        if not expect or not all(isinstance(x, int) and not isinstance(x, bool) and 100 <= x <= 599 for x in expect):
            s.error("expect", "expected a list of HTTP status codes (100..599)")
            expect = list(d.expect)
        # the three go into the check's request line and Host field as written: nothing that
        # could end a line or a field
        path = s.get("path", str, d.path)
        if _ORIGIN_TARGET.fullmatch(path) is None or "#" in path:
            s.error("path", f"expected a path starting with '/', without spaces, controls or '#', got {path!r}")
        host = s.get("host", str, None)
        if host is not None and _HOST_VALUE.fullmatch(host) is None:
            s.error("host", f"expected a host name or address, with an optional port, got {host!r}")
        method = s.get("method", str, d.method)
        if _HEADER_NAME.fullmatch(method) is None:
            s.error("method", f"expected an HTTP method such as GET or HEAD, got {method!r}")
        cfg = HealthCheck(
            type=kind,
            interval=s.conv("interval", parse_duration, d.interval),
            timeout=s.conv("timeout", parse_duration, d.timeout),
            rise=s.int_range("rise", d.rise, 1, 100),
            fall=s.int_range("fall", d.fall, 1, 100),
            fast_interval=s.conv("fast_interval", parse_duration, None),
            down_interval=s.conv("down_interval", parse_duration, None),
            path=path,
            host=host,
            method=method.upper(),
            expect=tuple(expect),
        )
        for key, value in (("interval", cfg.interval), ("fast_interval", cfg.fast_interval),
                           ("down_interval", cfg.down_interval)):
            if value is not None and value <= 0:
                s.error(key, "must be greater than 0")
        if cfg.timeout <= 0:
            s.error("timeout", "must be greater than 0")
        s.finish()
        return cfg

    def persistence(self, s: _Section) -> Persistence:
        kind = s.choice("type", PERSISTENCE_TYPES, "cookie")
        if "type" not in s.table:
            s.error("type", "is required (cookie or source-ip)")
        name = s.get("name", str, "ADCSRV")
        if not _HEADER_NAME.fullmatch(name):
            s.error("name", f"not a valid cookie name: {name!r}")
        cfg = Persistence(
            type=kind,
            name=name,
            timeout=s.conv("timeout", parse_duration, 600.0),
            max_entries=s.int_range("max_entries", 100_000, 1),
        )
        s.finish()
        return cfg

    # ---------------------------------------------------------------- virtual servers

    def virtual_server(
        self, name: str, s: _Section, profiles: dict[str, Profile], pools: dict[str, Pool]
    ) -> VirtualServer | None:
        listen_raw = s.raw("listen")
        listen: list[Address] = []
        if listen_raw is None:
            s.error("listen", "is required")
        else:
            items = listen_raw if isinstance(listen_raw, list) else [listen_raw]
            if not items:
                s.error("listen", "at least one address is required")
            for i, item in enumerate(items):
                try:
                    listen.append(parse_address(item, allow_port_zero=True))
                except ValueError as exc:
                    where = "listen" if not isinstance(listen_raw, list) else f"listen[{i}]"
                    self.errors.append(f"{s.file}: {s.key(where)}: {exc}")
        profile_name = s.get("profile", str, None)
        profile = None
        if profile_name is None:
            if "profile" not in s.table:
                s.error("profile", f"is required {_known(profiles)}")
        elif profile_name not in profiles:
            s.error("profile", f"unknown profile {profile_name!r} {_known(profiles)}")
        else:
            profile = profiles[profile_name]
        pool = s.get("pool", str, None)
        if pool is not None and pool not in pools:
            s.error("pool", f"unknown pool {pool!r} {_known(pools)}")
        routes: list[Route] = []
        raw_routes = s.get("routes", list, [])
        if raw_routes and profile is not None and not profile.type.layer7:
            s.error("routes", f"routes need an http or https profile ({profile_name!r} is {profile.type.value})")
        for i, item in enumerate(raw_routes):
            path = f"{s.key('routes')}[{i}]"
            if not isinstance(item, dict):
                self.errors.append(f"{s.file}: {path}: expected a table")
                continue
            route = self.route(_Section(self, s.file, path, item), i, pools)
            if route is not None:
                routes.append(route)
        if pool is None and "pool" not in s.table and profile is not None and not profile.type.layer7:
            s.error("pool", f"is required for a tcp virtual server {_known(pools)}")
        if pool is not None and pool in pools and profile is not None and not profile.type.layer7:
            key = _request_hash_key(pools[pool])
            if key is not None:
                self.warnings.append(
                    f"{s.file}: {s.key('pool')}: pool {pool!r} hashes on the request's {key}, which a tcp "
                    "virtual server does not read: its connections are hashed on the client address"
                )
            persistence = pools[pool].persistence
            if persistence is not None and persistence.type == "cookie":
                self.warnings.append(
                    f"{s.file}: {s.key('pool')}: pool {pool!r} persists by cookie, which a tcp virtual "
                    "server can neither set nor read: its connections are balanced without persistence "
                    "(source-ip persistence works at Layer 4)"
                )
        vs = VirtualServer(
            name=name,
            listen=tuple(listen),
            profile=profile_name or "",
            pool=pool,
            max_connections=s.int_range("max_connections", 0, 0),
            routes=tuple(routes),
            backlog=s.int_range("backlog", 1024, 1, 65535),
        )
        s.finish()
        return vs

    def route(self, s: _Section, index: int, pools: dict[str, Pool]) -> Route | None:
        host = s.get("host", str, None)
        if host is not None:
            host = host.lower()
            if "*" in host and not (host.startswith("*.") and "*" not in host[2:]):
                s.error("host", f"a wildcard is written \"*.example.com\", got {host!r}")
        methods = s.get("methods", list, None)
        if methods is not None:
            if not methods or not all(isinstance(m, str) and _HEADER_NAME.fullmatch(m) for m in methods):
                s.error("methods", "expected a non-empty list of method names")
                methods = None
            else:
                methods = frozenset(m.upper() for m in methods)
        path_exact = s.get("path_exact", str, None)
        path_prefix = s.get("path_prefix", str, None)
        regex_text = s.get("path_regex", str, None)
        path_regex = None
        if regex_text is not None:
            try:
                path_regex = re.compile(regex_text)
            except re.error as exc:
                s.error("path_regex", f"bad regular expression: {exc}")
        if sum(x is not None for x in (path_exact, path_prefix, regex_text)) > 1:
            s.error(None, "use only one of path_exact, path_prefix, path_regex")
        for key, value in (("path_exact", path_exact), ("path_prefix", path_prefix)):
            if value is not None and not value.startswith("/"):
                s.error(key, f"must start with '/', got {value!r}")
        pool = s.get("pool", str, None)
        respond = s.get("respond", int, None)
        redirect = s.get("redirect", str, None)
        redirect_code = s.get("redirect_code", int, None)
        actions = sum(x is not None for x in (pool, respond, redirect))
        if actions == 0:
            s.error(None, "needs one of pool, respond or redirect")
        elif actions > 1:
            s.error(None, "use only one of pool, respond or redirect")
        if pool is not None and pool not in pools:
            s.error("pool", f"unknown pool {pool!r} {_known(pools)}")
        if respond is not None and not 200 <= respond <= 599:
            s.error("respond", f"must be an HTTP status 200..599, got {respond}")
        if redirect is not None:
            problem = check_redirect(redirect)
            if problem is not None:
                s.error("redirect", problem)
        if redirect_code is not None:
            if redirect is None:
                s.error("redirect_code", "is only for a route with redirect")
            elif redirect_code not in REDIRECT_CODES:
                s.error("redirect_code", f"must be one of {', '.join(map(str, REDIRECT_CODES))}, got {redirect_code}")
        route = Route(
            host=host,
            methods=methods,
            path_exact=path_exact,
            path_prefix=path_prefix,
            path_regex=path_regex,
            websocket=s.get("websocket", bool, None),
            pool=pool,
            respond=respond,
            redirect=redirect,
            redirect_code=redirect_code if redirect_code in REDIRECT_CODES else 302,
            index=index,
        )
        s.finish()
        return route

    def check_listen_conflicts(self, vss: dict[str, VirtualServer]) -> None:
        seen: dict[tuple[str, int], str] = {}
        for vs in vss.values():
            for i, addr in enumerate(vs.listen):
                if addr.port == 0:
                    continue
                key = (_normal_host(addr.host), addr.port)
                wild = [(h, addr.port) for h in ("0.0.0.0", "::")] if key[0] not in ("0.0.0.0", "::") else []
                other = seen.get(key) or next((seen[w] for w in wild if w in seen), None)
                if other is None and key[0] in ("0.0.0.0", "::"):
                    other = next((n for (h, p), n in seen.items() if p == addr.port and _same_family(h, key[0])), None)
                where = "listen" if len(vs.listen) == 1 else f"listen[{i}]"
                if other is not None:
                    also = "itself" if other == vs.name else f"virtual_server.{other}"
                    self.errors.append(
                        f"{self.display}: virtual_server.{vs.name}.{where}: address {addr} is already used by {also}"
                    )
                else:
                    seen[key] = vs.name


def _normal_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def _same_family(a: str, wildcard: str) -> bool:
    try:
        version = ipaddress.ip_address(a).version
    except ValueError:
        return True
    return version == (4 if wildcard == "0.0.0.0" else 6)


# Profile keys a tcp profile has no use for (no HTTP, no TLS), and those only https uses
_HTTPS_ONLY_KEYS = ("timeout_tls_handshake",)
_HTTP_ONLY_KEYS = (
    "timeout_http_request", "timeout_tunnel", "timeout_server_idle", "websocket", "x_forwarded_for",
    "x_forwarded_proto", "forwarded", "max_header_bytes", "max_request_line", "max_body_bytes", "max_headers",
    "max_idle_server_connections",
) + _HTTPS_ONLY_KEYS


def _request_hash_key(pool: Pool) -> str | None:
    """What of a request `pool`'s balancing method hashes on, if anything (None: the client address)."""
    if pool.method == "uri-hash":
        return "path"
    if pool.method == "maglev" and pool.hash_on != "source":
        return pool.hash_on.replace(":", " ")
    return None


def _add_profile(sect: "_Section", name: str, file: str, table: Any,
                 out: dict[str, tuple[str, dict[str, Any]]]) -> None:
    """A profile's definition; a second one of the same name is an error, not a silent winner."""
    first = out.get(name)
    if first is not None:
        sect.error(name, f"defined twice: also in {first[0]}")
        return
    out[name] = (file, table)


def load(path: str | Path, display: str | None = None) -> Config:
    """Load and validate a configuration file. Raises `ConfigError` with every error.

    Messages name the file `display`, by default `path` as given.
    """
    source = Path(path).expanduser().resolve()
    return _Loader(source, str(path) if display is None else display).load()


def _ciphers(s: _Section) -> str:
    """A TLS 1.2 cipher list OpenSSL accepts ("" = the appliance's default)."""
    value = s.get("ciphers", str, "")
    if value:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(value)
        except ssl.SSLError:
            s.error("ciphers", f"OpenSSL knows no cipher in {value!r}")
    return value


def _alpn(s: _Section, default: list[str]) -> list[str]:
    """ALPN protocol names: non-empty strings of at most 255 bytes."""
    names = s.get("alpn", list, default)
    for i, name in enumerate(names):
        if not isinstance(name, str) or not 0 < len(name.encode("utf-8", "surrogateescape")) <= 255:
            s.error("alpn", f"item {i} must be a protocol name (a string of 1-255 bytes), got {name!r}")
            return []
    return names
