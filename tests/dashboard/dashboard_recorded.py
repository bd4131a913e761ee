"""Recorded admin API answers (two successive polls, one second apart) for layout tests.

The shapes follow docs/admin-api.md exactly; the dashboard reads them through
`StaticSource`, the same way it reads the live admin API.
"""

from __future__ import annotations

import copy

PINNED_CLOCK = 1763700100.0  # 2025-11-21T04:41:40Z; the test pins TZ=UTC


def _counters(conn=0, total=0, bytes_in=0, bytes_out=0, requests=0, tunnels=0, tls=0, resumed=0, errors=None):
    return {
        "conn_current": conn, "conn_total": total, "bytes_in": bytes_in, "bytes_out": bytes_out,
        "connect_failures": 0, "timeouts": 0, "rejected": 0, "requests": requests,
        "responses": {"1xx": 0, "2xx": requests, "3xx": 0, "4xx": 0, "5xx": 0, "other": 0},
        "upgrades_attempted": tunnels, "upgrades_accepted": tunnels, "upgrades_refused": 0,
        "upgrades_stripped": 0, "tunnels_current": tunnels, "tunnels_total": tunnels,
        "errors": {"connect": 0, "timeout": 0, "protocol": 0, "tls": 0, "no_server": 0, "refused": 0, **(errors or {})},
        "tls_handshakes": tls, "tls_resumed": resumed,
    }


def _server(name, address, status="up", state="enabled", backup=False, weight=1, eff=None, active=0,
            tunnels=0, ok=True, reason="HTTP 200", latency=0.8):
    return {
        "name": name, "address": address, "state": state, "status": status,
        "health": "down" if status == "down" else "up", "backup": backup, "weight": weight,
        "effective_weight": weight if eff is None else eff, "max_connections": 0, "active": active,
        "tunnels": tunnels,
        "last_check": {"ok": ok, "reason": reason, "latency_ms": latency, "at": PINNED_CLOCK - 1},
        "counters": _counters(conn=active, tunnels=tunnels),
    }


def frame(step: int) -> dict:
    """Answers of poll number `step` (0 or 1); counters grow between them."""
    k = step
    status = {
        "name": "adc-demo", "version": "0.1.0", "pid": 4242, "uptime": 3725.0 + k, "started": PINNED_CLOCK - 3725,
        "config_file": "/srv/adc/appliance.toml", "generation": 3, "reloaded": PINNED_CLOCK - 600,
        "totals": {"conn_current": 9, "conn_total": 5120 + 40 * k, "requests": 48000 + 310 * k,
                   "bytes_in": 9_100_000 + 260_000 * k, "bytes_out": 88_000_000 + 2_400_000 * k,
                   "tunnels_current": 2},
    }
    vss = [
        {"name": "web", "profile": "http", "type": "http", "listen": ["0.0.0.0:8080"], "bound": ["0.0.0.0:8080"],
         "pool": "web", "routes": 3, "max_connections": 10000, "state": "listening",
         "counters": _counters(conn=5, total=4000 + 30 * k, bytes_in=6_000_000 + 180_000 * k,
                               bytes_out=70_000_000 + 2_100_000 * k, requests=45000 + 300 * k, tunnels=2)},
        {"name": "secure", "profile": "https", "type": "https", "listen": ["0.0.0.0:8443"],
         "bound": ["0.0.0.0:8443"], "pool": "web", "routes": 1, "max_connections": 0, "state": "listening",
         "counters": _counters(conn=3, total=1000 + 9 * k, bytes_in=3_000_000 + 75_000 * k,
                               bytes_out=17_000_000 + 290_000 * k, requests=3000 + 10 * k,
                               tls=990 + 9 * k, resumed=660 + 6 * k, errors={"tls": 4, "timeout": 2})},
        {"name": "db", "profile": "tcp", "type": "tcp", "listen": ["127.0.0.1:5433"], "bound": ["127.0.0.1:5433"],
         "pool": "db", "routes": 0, "max_connections": 100, "state": "listening",
         "counters": _counters(conn=1, total=120 + k, bytes_in=100_000 + 5_000 * k,
                               bytes_out=1_000_000 + 10_000 * k)},
    ]
    pools = [
        {"name": "web", "method": "least-conn", "server_ssl": None, "health": "http",
         "counters": _counters(conn=8, tunnels=0),
         "servers": [
             _server("web1", "127.0.0.1:9001", active=4, latency=0.7),
             _server("web2", "127.0.0.1:9002", weight=2, eff=1.0, active=2, latency=1.3),
             _server("spare", "127.0.0.1:9003", backup=True, latency=0.9),
             _server("old", "127.0.0.1:9004", status="draining", state="draining", active=2, latency=2.1),
         ]},
        {"name": "chat", "method": "source-hash", "server_ssl": None, "health": "websocket",
         "counters": _counters(conn=2, tunnels=2),
         "servers": [
             _server("chat1", "127.0.0.1:9101", active=2, tunnels=2, reason="101 Switching", latency=1.9),
             _server("chat2", "127.0.0.1:9102", status="down", ok=False, reason="connection refused",
                     latency=None),
         ]},
        {"name": "db", "method": "round-robin", "server_ssl": None, "health": "tcp",
         "counters": _counters(conn=1),
         "servers": [
             _server("db1", "127.0.0.1:5432", active=1, reason="connected", latency=0.2),
             _server("db2", "127.0.0.1:5434", status="disabled", state="disabled", reason="connected", latency=0.3),
         ]},
    ]
    sessions = [
        {"id": 17, "kind": "tunnel", "client": "192.0.2.10:51234", "virtual_server": "web", "pool": "chat",
         "server": "chat1", "started": PINNED_CLOCK - 342, "age": 342.0 + k, "idle": 0.4, "bytes_in": 18_400 + 200 * k,
         "bytes_out": 911_000 + 9_000 * k, "client_half_closed": False, "server_half_closed": False},
        {"id": 23, "kind": "tunnel", "client": "192.0.2.11:40022", "virtual_server": "web", "pool": "chat",
         "server": "chat1", "started": PINNED_CLOCK - 45, "age": 45.2 + k, "idle": 12.0 + k, "bytes_in": 2_100,
         "bytes_out": 30_500, "client_half_closed": False, "server_half_closed": False},
        {"id": 31, "kind": "l4", "client": "10.0.0.7:33010", "virtual_server": "db", "pool": "db",
         "server": "db1", "started": PINNED_CLOCK - 1800, "age": 1800.0 + k, "idle": 3.5 + k,
         "bytes_in": 100_000, "bytes_out": 1_000_000, "client_half_closed": False, "server_half_closed": False},
    ]
    events = [
        {"id": 12, "time": PINNED_CLOCK - 20, "kind": "health", "level": "warning",
         "message": "pool chat server chat2 is DOWN: connection refused", "pool": "chat", "server": "chat2"},
        {"id": 11, "time": PINNED_CLOCK - 95, "kind": "admin", "level": "info",
         "message": "pool web server old: state draining (admin API)", "pool": "web", "server": "old"},
        {"id": 10, "time": PINNED_CLOCK - 600, "kind": "reload", "level": "info",
         "message": "configuration reloaded: generation 3 (1 change)"},
        {"id": 9, "time": PINNED_CLOCK - 610, "kind": "reload", "level": "error",
         "message": "reload refused: appliance.toml: pool.web.method: must be one of round-robin, least-conn, ..."},
        {"id": 8, "time": PINNED_CLOCK - 3000, "kind": "health", "level": "info",
         "message": "pool web server web2 is UP (slow start 60s)", "pool": "web", "server": "web2"},
    ]
    certificates = [
        {"file": "/srv/adc/certs/adc.pem", "used_by": ["profile https"], "subject": "CN=localhost",
         "names": ["localhost", "127.0.0.1"], "issuer": "CN=adc development CA", "key_type": "EC P-256",
         "not_after": "2026-11-21T00:00:00Z", "days_left": 365},
        {"file": "/srv/adc/certs/api.pem", "used_by": ["virtual_server secure"], "subject": "CN=api.example.com",
         "names": ["api.example.com"], "issuer": "CN=Example Issuing CA", "key_type": "RSA 2048",
         "not_after": "2025-12-03T00:00:00Z", "days_left": 12},
        {"file": "/srv/adc/certs/client.pem", "used_by": ["server_ssl internal"], "subject": "CN=adc-client",
         "names": ["adc-client"], "issuer": "CN=adc development CA", "key_type": "EC P-256",
         "not_after": "2025-11-01T00:00:00Z", "days_left": -20},
    ]
    return copy.deepcopy({
        "/api/v1/status": status,
        "/api/v1/virtual_servers": {"virtual_servers": vss},
        "/api/v1/pools": {"pools": pools},
        "/api/v1/sessions": {"sessions": sessions},
        "/api/v1/events": {"events": events},
        "/api/v1/certificates": {"certificates": certificates},
    })


FRAMES = [frame(0), frame(1)]


async def load_frames(app, polls: int = 2) -> None:
    """Run the polls by hand so what is shown does not depend on timing."""
    for _ in range(polls):
        await app.poll_once()


# relative load of each poll, so the sparklines have a shape
LOAD_PATTERN = (0.4, 0.5, 0.7, 0.6, 0.9, 1.0, 0.8, 1.2, 1.4, 1.1, 0.9, 1.3, 1.6, 1.5, 1.2, 1.0)


def history_frames(polls: int = len(LOAD_PATTERN)) -> list[dict]:
    """`polls` successive answers, one second apart, with a varying load."""
    frames = []
    current = frame(0)
    frames.append(copy.deepcopy(current))
    base = frame(1)
    for i in range(1, polls):
        load = LOAD_PATTERN[i % len(LOAD_PATTERN)]
        nxt = copy.deepcopy(current)
        nxt["/api/v1/status"]["uptime"] += 1
        for vs, vs0, vs1 in zip(nxt["/api/v1/virtual_servers"]["virtual_servers"],
                                frame(0)["/api/v1/virtual_servers"]["virtual_servers"],
                                base["/api/v1/virtual_servers"]["virtual_servers"]):
            for key in ("requests", "bytes_in", "bytes_out", "conn_total", "tls_handshakes", "tls_resumed"):
                step = vs1["counters"][key] - vs0["counters"][key]
                factor = load if vs["name"] != "db" else 2.0 - load
                vs["counters"][key] += int(step * factor)
        frames.append(nxt)
        current = nxt
    return frames
