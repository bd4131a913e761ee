"""What the dashboard shows, computed from admin API answers (no Textual, no I/O).

`Snapshot` is one poll: the decoded JSON of every endpoint the dashboard reads.
`RateTracker` turns successive snapshots into per-second rates and rolling
throughput windows for the sparklines. Formatting helpers live here too so they
can be tested without a terminal.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

SPARK_WINDOW_SAMPLES = 30
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
EVENTS_MAX = 200
CERT_WARN_DAYS = 30
CRL_WARN_DAYS = 3  # revocation lists live a week or so: "soon" is days, not weeks

# path of every endpoint polled, with the key holding its list
ENDPOINTS: tuple[tuple[str, str], ...] = (
    ("status", "/api/v1/status"),
    ("virtual_servers", "/api/v1/virtual_servers"),
    ("pools", "/api/v1/pools"),
    ("sessions", "/api/v1/sessions"),
    ("events", f"/api/v1/events?limit={EVENTS_MAX}"),
    ("certificates", "/api/v1/certificates"),
)


@dataclass(frozen=True)
class Snapshot:
    """One poll of the admin API. `taken` is the dashboard's clock when the poll ended."""

    taken: float
    status: dict[str, Any] = field(default_factory=dict)
    virtual_servers: list[dict[str, Any]] = field(default_factory=list)
    pools: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    certificates: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_answers(cls, taken: float, answers: dict[str, Any]) -> "Snapshot":
        """Build from {endpoint key: decoded JSON}; missing or malformed parts become empty."""

        def listed(key: str) -> list[dict[str, Any]]:
            body = answers.get(key)
            items = body.get(key) if isinstance(body, dict) else None
            return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

        status = answers.get("status")
        return cls(
            taken=taken,
            status=status if isinstance(status, dict) else {},
            virtual_servers=listed("virtual_servers"),
            pools=listed("pools"),
            sessions=listed("sessions"),
            events=listed("events")[:EVENTS_MAX],
            certificates=listed("certificates"),
        )


@dataclass
class Rates:
    requests_per_s: float = 0.0
    bytes_in_per_s: float = 0.0
    bytes_out_per_s: float = 0.0
    tls_per_s: float = 0.0  # TLS handshakes completed with clients (https), resumed ones included
    history: deque[float] = field(default_factory=lambda: deque(maxlen=SPARK_WINDOW_SAMPLES))


class RateTracker:
    """Per-virtual-server rates from the difference of cumulative counters between polls.

    The interval is the appliance's own uptime difference when available (so a slow
    poll does not distort rates), otherwise the dashboard clock's.
    """

    def __init__(self) -> None:
        self.rates: dict[str, Rates] = {}
        self.total_history: deque[float] = deque(maxlen=SPARK_WINDOW_SAMPLES)
        self._last: dict[str, tuple[float, float, float, float]] = {}
        self._last_time: float | None = None

    def update(self, snap: Snapshot) -> None:
        now = _num(snap.status.get("uptime"), None)
        if now is None:
            now = snap.taken
        elapsed = None if self._last_time is None else now - self._last_time
        if elapsed is not None and elapsed < 0:
            # the appliance restarted (its uptime went back): counters start over
            self._last.clear()
            elapsed = None
        seen: set[str] = set()
        total = 0.0
        for vs in snap.virtual_servers:
            name = str(vs.get("name", "?"))
            seen.add(name)
            c = vs.get("counters") or {}
            current = (
                _num(c.get("requests"), 0.0), _num(c.get("bytes_in"), 0.0), _num(c.get("bytes_out"), 0.0),
                _num(c.get("tls_handshakes"), 0.0),
            )
            rates = self.rates.setdefault(name, Rates())
            previous = self._last.get(name)
            if previous is not None and elapsed and elapsed > 0:
                deltas = [max(0.0, cur - prev) for cur, prev in zip(current, previous)]
                rates.requests_per_s = deltas[0] / elapsed
                rates.bytes_in_per_s = deltas[1] / elapsed
                rates.bytes_out_per_s = deltas[2] / elapsed
                rates.tls_per_s = deltas[3] / elapsed
                rates.history.append(rates.bytes_in_per_s + rates.bytes_out_per_s)
                total += rates.bytes_in_per_s + rates.bytes_out_per_s
            self._last[name] = current
        for gone in set(self.rates) - seen:
            del self.rates[gone]
            self._last.pop(gone, None)
        if elapsed and elapsed > 0:
            self.total_history.append(total)
        self._last_time = now

    def get(self, name: str) -> Rates:
        return self.rates.get(name) or Rates()


def _num(value: Any, default: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value)


def sparkline(values: "deque[float] | list[float]", width: int = 12) -> str:
    """Unicode block sparkline of the last `width` values, scaled to their maximum."""
    data = list(values)[-width:]
    if not data:
        return " " * width
    top = max(data)
    if top <= 0:
        line = SPARK_BLOCKS[0] * len(data)
    else:
        last = len(SPARK_BLOCKS) - 1
        line = "".join(SPARK_BLOCKS[min(last, int(v / top * last + 0.5))] for v in data)
    return line.rjust(width)


def human_bytes(n: float) -> str:
    n = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}T"  # pragma: no cover


def human_rate(n: float) -> str:
    return human_bytes(n) + "/s"


def human_duration(seconds: Any) -> str:
    s = _num(seconds, None)
    if s is None:
        return "-"
    if s < 10:
        return f"{s:.1f}s"
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def clock_time(epoch: Any) -> str:
    t = _num(epoch, None)
    if t is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(t))


def server_label(server: dict[str, Any]) -> str:
    """Status word shown for a real server: UP, DOWN, DRAIN, DISABLED."""
    status = str(server.get("status", "?")).lower()
    return {"up": "UP", "down": "DOWN", "draining": "DRAIN", "disabled": "DISABLED"}.get(status, status.upper())


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tls_counts(counters: dict[str, Any], failed: float) -> str:
    """`N handshakes, P% resumed, F failed` of TLS towards real servers."""
    done = _num(counters.get("tls_handshakes"), 0)
    resumed = _num(counters.get("tls_resumed"), 0)
    share = f", {100 * resumed / done:.0f}% resumed" if done else ""
    return f"{done:,.0f} handshakes{share}, {failed:,.0f} failed"


def _tls_failures(counters: dict[str, Any]) -> float:
    return _num(_dict(counters.get("errors")).get("tls"), 0)


def pool_summary(pool: dict[str, Any], server: dict[str, Any] | None = None) -> str:
    """A pool's settings in one line: balancing, health check, persistence, server SSL, slow start.

    The Pools screen shows it for the pool under the cursor: its table row has room for
    the method and check type only from about 100 columns. With server SSL it adds the
    TLS handshakes towards the pool's real servers (resumed, failed), or, with `server` (the
    cursor on one of them), towards that one.
    """
    method = str(pool.get("method") or "?")
    hash_on = pool.get("hash_on")
    parts = [f"pool {pool.get('name', '?')}: {method}" + (f" on {hash_on}" if hash_on else "")]
    health = pool.get("health")
    parts.append(f"{health} health check" if health else "no health check")
    if pool.get("persistence"):
        parts.append(f"{pool['persistence']} persistence")
    if pool.get("server_ssl"):
        text = f"server SSL {pool['server_ssl']}"
        if server is None and "counters" in pool:  # the servers count the failures, each its own
            failed = sum(_tls_failures(_dict(s.get("counters"))) for s in pool.get("servers") or () if isinstance(s, dict))
            text += ": " + _tls_counts(_dict(pool["counters"]), failed)
        parts.append(text)
    slow_start = _num(pool.get("slow_start"), 0)
    if slow_start > 0:
        parts.append(f"slow start {slow_start:g} s")
    if server is not None and pool.get("server_ssl"):
        counters = _dict(server.get("counters"))
        parts.append(f"server {server.get('name', '?')}: TLS " + _tls_counts(counters, _tls_failures(counters)))
    return " · ".join(parts)


def vs_summary(vs: dict[str, Any], rates: Rates) -> str:
    """A virtual server in a line or two: profile, pool, TLS, errors, routes, totals.

    The Overview screen shows it for the virtual server under the cursor, as the Pools
    screen does for a pool: its table has no room for these at 80 columns.
    """
    c = vs.get("counters")
    if not isinstance(c, dict):
        c = {}
    profile = str(vs.get("profile") or "?")
    kind = vs.get("type")
    parts = [f"{vs.get('name', '?')}: profile {profile}" + (f" ({kind})" if kind and kind != profile else "")
             + f" → pool {vs.get('pool') or '-'}"]
    errors = c.get("errors") if isinstance(c.get("errors"), dict) else {}
    if kind == "https":
        done = _num(c.get("tls_handshakes"), 0)
        resumed = _num(c.get("tls_resumed"), 0)
        share = f", {100 * resumed / done:.0f}% resumed" if done else ""
        parts.append(f"TLS {rates.tls_per_s:.1f} handshakes/s{share}, {_num(errors.get('tls'), 0):,.0f} failed")
    failed = [f"{name} {_num(n, 0):,.0f}" for name, n in errors.items() if name != "tls" and _num(n, 0)]
    if failed:
        parts.append("errors: " + ", ".join(failed))
    routes = _num(vs.get("routes"), 0)
    if routes:
        parts.append(f"{routes:g} route" + ("s" if routes != 1 else ""))
    limit = _num(vs.get("max_connections"), 0)
    totals = f"{_num(c.get('conn_total'), 0):,.0f} connections" + (f" (at most {limit:g} at once)" if limit else "")
    if kind != "tcp":
        totals += f", {_num(c.get('requests'), 0):,.0f} requests"
    parts.append(totals)
    return " · ".join(parts)


def session_bytes(session: dict[str, Any]) -> float:
    return _num(session.get("bytes_in"), 0.0) + _num(session.get("bytes_out"), 0.0)


SESSION_SORTS: tuple[str, ...] = ("age", "idle", "bytes")


def sort_sessions(sessions: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Largest first: oldest, most idle, or most bytes; ties by id for a stable order."""
    if key == "bytes":
        k = session_bytes
    else:
        k = lambda s: _num(s.get(key), 0.0)  # noqa: E731
    return sorted(sessions, key=lambda s: (-k(s), _num(s.get("id"), 0.0)))
