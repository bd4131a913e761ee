"""`adc status` and `adc reload`: ask the running appliance through its admin API."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Sequence

from adc.runtime.admin_client import (
    AdminClient, AdminUnreachable, admin_address_from_config, resolve_admin, token_refused,
)


def _target(args: argparse.Namespace) -> AdminClient:
    """The admin API named by --admin, or by the configuration file's appliance.admin."""
    token = getattr(args, "token", None)
    admin = getattr(args, "admin", None)
    if admin:
        import os

        base = os.path.dirname(os.path.abspath(args.file)) if getattr(args, "file", None) else os.getcwd()
        if token is None and getattr(args, "file", None) and os.path.exists(args.file):
            try:
                token = admin_address_from_config(args.file)[1]
            except (OSError, ValueError):
                pass
        return AdminClient(resolve_admin(admin, base), token, timeout=_timeout(args))
    address, file_token = admin_address_from_config(args.file)
    return AdminClient(address, token or file_token, timeout=_timeout(args))


def _timeout(args: argparse.Namespace) -> float:
    return float(getattr(args, "timeout", None) or 10.0)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table; numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) and bool(rows) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [
            (c.rjust(w) if numeric[i] and n else c.ljust(w)) for i, (c, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def human_duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h:02d}h{m:02d}m"
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    if m:
        return f"{m}m{s:02d}s"
    return f"{seconds:.1f}s"


def _ok(status: int, body: Any, what: str, client: AdminClient, path: str) -> Any:
    if status == 401:
        raise AdminUnreachable(token_refused(client.token, path))
    if status != 200:
        message = body.get("error") if isinstance(body, dict) else body
        raise AdminUnreachable(f"{what}: HTTP {status}: {message}")
    return body


async def status(client: AdminClient) -> str:
    async def get(path: str, what: str) -> Any:
        return _ok(*await client.get(path), what, client, path)

    st = await get("/api/v1/status", "status")
    vss = (await get("/api/v1/virtual_servers", "virtual servers"))["virtual_servers"]
    pools = (await get("/api/v1/pools", "pools"))["pools"]
    totals = st.get("totals", {})
    out = [
        f"{st['name']} (adc {st['version']}, pid {st['pid']}), up {human_duration(st['uptime'])}, "
        f"generation {st['generation']}",
        f"config {st['config_file']}",
        f"connections {totals.get('conn_current', 0)} now, {totals.get('conn_total', 0)} total; "
        f"requests {totals.get('requests', 0)}; tunnels {totals.get('tunnels_current', 0)}; "
        f"in {human_bytes(totals.get('bytes_in', 0))}, out {human_bytes(totals.get('bytes_out', 0))}",
        "",
        "Virtual servers",
    ]
    rows = []
    for vs in vss:
        c = vs["counters"]
        resp = c.get("responses", {})
        rows.append([
            vs["name"], vs["type"], ", ".join(vs["bound"] or vs["listen"]), vs["pool"] or "-", vs["state"],
            c["conn_current"], c["conn_total"], c["requests"],
            f"{resp.get('2xx', 0)}/{resp.get('4xx', 0)}/{resp.get('5xx', 0)}",
            c["tunnels_current"], human_bytes(c["bytes_in"]), human_bytes(c["bytes_out"]),
        ])
    out.append(table(["NAME", "TYPE", "LISTEN", "POOL", "STATE", "CONN", "TOTAL", "REQS", "2xx/4xx/5xx",
                      "TUNNELS", "IN", "OUT"], rows))
    out.append("")
    out.append("Pools")
    rows = []
    for pool in pools:
        for rs in pool["servers"]:
            c = rs["counters"]
            check = rs.get("last_check") or {}
            rows.append([
                pool["name"], pool["method"], rs["name"], rs["address"],
                rs["status"] + (" (backup)" if rs["backup"] else ""),
                rs["weight"], rs["active"], c["conn_total"], c["connect_failures"],
                check.get("reason") or "-",
            ])
        if not pool["servers"]:
            rows.append([pool["name"], pool["method"], "-", "-", "-", 0, 0, 0, 0, "-"])
    out.append(table(["POOL", "METHOD", "SERVER", "ADDRESS", "STATUS", "WEIGHT", "ACTIVE", "TOTAL",
                      "FAILS", "LAST CHECK"], rows))
    rows = [_tls_row("client", vs["name"], vs["counters"]) for vs in vss if vs["type"] == "https"]
    rows += [_tls_row("server", f"{pool['name']}/{rs['name']}", rs["counters"])
             for pool in pools if pool.get("server_ssl") for rs in pool["servers"]]
    if rows:
        out += ["", "TLS (client: virtual servers with the https profile; server: real servers of a server SSL pool)"]
        out.append(table(["SIDE", "NAME", "HANDSHAKES", "RESUMED", "FAILED"], rows))
    return "\n".join(out)


def _tls_row(side: str, name: str, c: dict[str, Any]) -> list[Any]:
    done, resumed = c.get("tls_handshakes", 0), c.get("tls_resumed", 0)
    share = f" ({100 * resumed / done:.0f}%)" if done else ""
    return [side, name, done, f"{resumed}{share}", c.get("errors", {}).get("tls", 0)]


async def reload(client: AdminClient) -> tuple[int, str]:
    code, body = await client.post("/api/v1/reload")
    if code == 401:
        return 1, f"reload: {token_refused(client.token, '/api/v1/reload')}"
    if not isinstance(body, dict) or "ok" not in body:
        message = body.get("error") if isinstance(body, dict) else body
        return 1, f"reload: HTTP {code}: {message}"
    if body["ok"]:
        lines = [f"reloaded: generation {body['generation']}"]
        changes = body.get("changes") or []
        lines += [f"  {c}" for c in changes] if changes else ["  no changes"]
        return 0, "\n".join(lines)
    errors = body.get("errors") or []
    lines = [f"reload failed: {len(errors)} error(s); the running configuration (generation "
             f"{body.get('generation')}) is unchanged"]
    lines += [f"  {e}" for e in errors]
    return 1, "\n".join(lines)


def main(name: str, args: argparse.Namespace) -> int:
    try:
        client = _target(args)
    except (OSError, ValueError) as exc:
        print(f"adc {name}: {exc}", file=sys.stderr)
        return 2

    async def run() -> int:
        if name == "status":
            print(await status(client))
            return 0
        if name == "reload":
            code, text = await reload(client)
            print(text, file=sys.stdout if code == 0 else sys.stderr)
            return code
        print(f"adc: unknown admin command {name!r}", file=sys.stderr)
        return 2

    try:
        return asyncio.run(run())
    except AdminUnreachable as exc:
        print(f"adc {name}: {exc}", file=sys.stderr)
        return 1
