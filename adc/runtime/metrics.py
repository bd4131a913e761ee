"""Prometheus text exposition (format 0.0.4) of the appliance's counters.

`Exposition` is a small writer: metric families with HELP/TYPE lines, validated
metric and label names, escaped label values. `render_metrics(appliance)` builds
the families from `Stats` and the engine's pools and virtual servers on demand;
the data path never formats anything.

Naming follows the usual conventions: counters end in `_total`, byte counters
say `bytes`, and every metric of a virtual server, pool or real server carries
`virtual_server`, `pool` or `pool`+`server` labels.
"""

from __future__ import annotations

import math
import re
import time
from typing import TYPE_CHECKING, Any, Mapping

from adc import __version__

if TYPE_CHECKING:
    from adc.appliance import Appliance

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
TYPES = ("counter", "gauge", "untyped")


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class MetricFamily:
    __slots__ = ("name", "type", "help", "samples")

    def __init__(self, name: str, type: str, help: str):
        if not _METRIC_NAME.match(name):
            raise ValueError(f"bad metric name {name!r}")
        if type not in TYPES:
            raise ValueError(f"bad metric type {type!r}")
        self.name = name
        self.type = type
        self.help = help
        self.samples: list[tuple[str, tuple[tuple[str, str], ...], float | int]] = []

    def add(self, value: float | int | bool, labels: Mapping[str, Any] | None = None, suffix: str = "") -> None:
        items: tuple[tuple[str, str], ...] = ()
        if labels:
            for key in labels:
                if not _LABEL_NAME.match(key) or key.startswith("__"):
                    raise ValueError(f"bad label name {key!r}")
            items = tuple((k, "" if v is None else str(v)) for k, v in labels.items())
        self.samples.append((self.name + suffix, items, value))

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {escape_help(self.help)}")
        out.append(f"# TYPE {self.name} {self.type}")
        for name, labels, value in self.samples:
            if labels:
                text = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels)
                out.append(f"{name}{{{text}}} {format_value(value)}")
            else:
                out.append(f"{name} {format_value(value)}")


class Exposition:
    """An ordered set of metric families rendered in the text format."""

    def __init__(self) -> None:
        self.families: dict[str, MetricFamily] = {}

    def family(self, name: str, type: str, help: str) -> MetricFamily:
        fam = self.families.get(name)
        if fam is None:
            fam = self.families[name] = MetricFamily(name, type, help)
        elif fam.type != type:
            raise ValueError(f"metric {name} declared as {fam.type} and {type}")
        return fam

    def add(self, name: str, type: str, help: str, value: float | int | bool,
            labels: Mapping[str, Any] | None = None) -> None:
        self.family(name, type, help).add(value, labels)

    def render(self) -> str:
        out: list[str] = []
        for fam in self.families.values():
            fam.render(out)
        return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- the appliance's metrics

# (metric suffix, Counters snapshot key, type, help)
_SCALARS: tuple[tuple[str, str, str, str], ...] = (
    ("connections_current", "conn_current", "gauge", "Connections open now"),
    ("connections_total", "conn_total", "counter", "Connections since start"),
    ("requests_total", "requests", "counter", "HTTP requests"),
    ("bytes_in_total", "bytes_in", "counter", "Bytes from clients towards real servers"),
    ("bytes_out_total", "bytes_out", "counter", "Bytes from real servers towards clients"),
    ("connect_failures_total", "connect_failures", "counter", "Failed connects to real servers"),
    ("timeouts_total", "timeouts", "counter", "Connections or requests ended by a timeout"),
    ("rejected_total", "rejected", "counter", "Connections refused by max_connections or while stopping"),
    ("upgrades_attempted_total", "upgrades_attempted", "counter", "WebSocket upgrade requests"),
    ("upgrades_accepted_total", "upgrades_accepted", "counter", "WebSocket upgrades answered 101"),
    ("upgrades_refused_total", "upgrades_refused", "counter", "WebSocket upgrades refused"),
    ("upgrades_stripped_total", "upgrades_stripped", "counter", "Upgrade requests forwarded without upgrade"),
    ("tunnels_current", "tunnels_current", "gauge", "WebSocket tunnels open now"),
    ("tunnels_total", "tunnels_total", "counter", "WebSocket tunnels since start"),
    ("tls_handshakes_total", "tls_handshakes", "counter", "TLS handshakes completed (clients, or real servers)"),
    ("tls_resumed_total", "tls_resumed", "counter", "TLS handshakes that resumed a session"),
)

_SCOPES = {
    "virtual_server": "virtual server",
    "pool": "pool",
    "server": "real server",
}


def _counters(exp: Exposition, scope: str, labels: Mapping[str, str], snap: Mapping[str, Any]) -> None:
    what = _SCOPES[scope]
    for suffix, key, typ, help in _SCALARS:
        exp.add(f"adc_{scope}_{suffix}", typ, f"{help}, per {what}", snap[key], labels)
    fam = exp.family(f"adc_{scope}_responses_total", "counter", f"HTTP responses by status class, per {what}")
    for cls, n in snap["responses"].items():
        fam.add(n, {**labels, "class": cls})
    fam = exp.family(f"adc_{scope}_errors_total", "counter", f"Errors by reason, per {what}")
    for reason, n in snap["errors"].items():
        fam.add(n, {**labels, "reason": reason})


def _declare_all(exp: Exposition) -> None:
    """Declare every family up front so the output has a stable order and shape."""
    for scope, what in _SCOPES.items():
        for suffix, _key, typ, help in _SCALARS:
            exp.family(f"adc_{scope}_{suffix}", typ, f"{help}, per {what}")
        exp.family(f"adc_{scope}_responses_total", "counter", f"HTTP responses by status class, per {what}")
        exp.family(f"adc_{scope}_errors_total", "counter", f"Errors by reason, per {what}")


def render_metrics(appliance: "Appliance") -> str:
    engine = appliance.engine
    stats = appliance.stats
    exp = Exposition()
    now = time.time()
    exp.add("adc_info", "gauge", "Appliance name and version", 1,
            {"name": appliance.config.appliance.name, "version": __version__})
    exp.add("adc_start_time_seconds", "gauge", "Start time of the appliance (Unix time)", stats.started)
    exp.add("adc_uptime_seconds", "gauge", "Seconds since the appliance started", round(now - stats.started, 3))
    exp.add("adc_config_generation", "gauge", "Configuration generation (1 at start, +1 per reload)",
            appliance.generation)
    fam = exp.family("adc_reloads_total", "counter", "Configuration reloads by result")
    fam.add(appliance.reloads_ok, {"result": "ok"})
    fam.add(appliance.reloads_failed, {"result": "error"})
    fam = exp.family("adc_sessions_current", "gauge", "Live Layer-4 sessions and WebSocket tunnels")
    kinds = {"l4": 0, "tunnel": 0}
    for s in stats.sessions.values():
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    for kind, n in kinds.items():
        fam.add(n, {"kind": kind})

    _declare_all(exp)
    live_vs, live_pools, live_servers = stats.live_bytes()
    for name, c in stats.virtual_servers.items():
        _counters(exp, "virtual_server", {"virtual_server": name}, c.snapshot(*live_vs.get(name, (0, 0))))
    for name, c in stats.pools.items():
        _counters(exp, "pool", {"pool": name}, c.snapshot(*live_pools.get(name, (0, 0))))
    for (pool, server), c in stats.servers.items():
        _counters(exp, "server", {"pool": pool, "server": server},
                  c.snapshot(*live_servers.get((pool, server), (0, 0))))

    up = exp.family("adc_virtual_server_up", "gauge", "1 if the virtual server is accepting connections")
    for vs in engine.virtual_servers.values():
        up.add(0 if vs.stopping or not vs.listeners else 1, {"virtual_server": vs.name})

    pool_up = exp.family("adc_pool_up", "gauge", "1 if at least one real server of the pool can take traffic")
    pool_servers = exp.family("adc_pool_servers", "gauge", "Real servers of the pool by status")
    s_up = exp.family("adc_server_up", "gauge", "Health of the real server: 1 up, 0 down")
    s_state = exp.family("adc_server_state", "gauge",
                         "Administrative state of the real server (1 for the current state)")
    s_weight = exp.family("adc_server_weight", "gauge", "Configured weight of the real server")
    s_eff = exp.family("adc_server_effective_weight", "gauge", "Weight in use now (slow start, health)")
    s_active = exp.family("adc_server_active", "gauge", "Live sessions and in-flight requests on the real server")
    s_backup = exp.family("adc_server_backup", "gauge", "1 if the real server is a backup")
    s_check = exp.family("adc_server_check_latency_seconds", "gauge", "Latency of the last health check")
    for pool in engine.pools.values():
        statuses = {"up": 0, "down": 0, "draining": 0, "disabled": 0}
        for rs in pool.servers.values():
            statuses[rs.status()] += 1
        pool_up.add(1 if any(rs.available for rs in pool.servers.values()) else 0, {"pool": pool.name})
        for status, n in statuses.items():
            pool_servers.add(n, {"pool": pool.name, "status": status})
        for rs in pool.servers.values():
            labels = {"pool": pool.name, "server": rs.name}
            s_up.add(1 if rs.healthy else 0, labels)
            for state in ("enabled", "disabled", "draining"):
                s_state.add(1 if rs.state.value == state else 0, {**labels, "state": state})
            s_weight.add(rs.weight, labels)
            s_eff.add(rs.effective_weight, labels)
            s_active.add(rs.active, labels)
            s_backup.add(1 if rs.backup else 0, labels)
            if rs.last_check is not None and rs.last_check.latency is not None:
                s_check.add(rs.last_check.latency, labels)
    return exp.render()

