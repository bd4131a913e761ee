"""Apply a new configuration to a running engine as a diff.

Rules:
- A listening address present before and after keeps its socket: no connection is
  refused during a reload. When the virtual server owning it changes TLS settings
  (or the address moves to another virtual server), the socket is duplicated and
  served by a new `asyncio.Server`; the kernel's accept queue is shared, so
  nothing queued is lost.
- Added virtual servers start listening; removed ones stop accepting at once and
  their live connections get `appliance.grace` to finish, then are closed.
- Virtual servers that stay keep their runtime object (and live connection set);
  their `config`/`profile` are swapped, which affects new connections only.
- Unchanged pools keep their `PoolRuntime`; changed pools get a new one, which
  takes over the state, weight and health of servers that did not change (and the
  health of servers whose address did not change). Counters live in `Stats`, keyed
  by name, so they carry over by themselves. A kept pool's server SSL files (ca,
  cert, key) are read again on every reload; new contents replace its TLS settings,
  as https listeners pick up renewed certificates.
- Established tunnels and Layer-4 sessions keep the objects they hold; nothing
  live is dropped.

Everything that can fail (TLS contexts, new listening sockets) is prepared first;
on failure all of it is undone and `ReloadError` lists what went wrong.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Callable

from adc.config.model import Address, Config, ProfileType
from adc.engine.listener import access_log_error, listen_where, protocol_factory
from adc.runtime.accesslog import AccessLog

if TYPE_CHECKING:
    from adc.engine.engine import Engine, VirtualServerRuntime
    from adc.pools.pool import PoolRuntime

log = logging.getLogger("adc.reload")

# attributes of a freshly built VirtualServerRuntime that are not copied onto a kept one
# (`factory` makes the protocols of the object it belongs to: the kept one keeps its own)
_RUNTIME_ONLY = frozenset({"engine", "name", "counters", "listeners", "connections", "stopping", "factory"})


class ReloadError(Exception):
    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


async def apply(engine: "Engine", new: Config) -> list[str]:
    """Apply `new` to `engine`; returns one line per change. Raises ReloadError (nothing changed)."""
    old = engine.config
    changes: list[str] = []
    errors: list[str] = []
    engine.config = new  # the engine's builders read engine.config
    try:
        renewed: list[tuple[PoolRuntime, Any]] = []
        pools = _prepare_pools(engine, old, new, changes, errors, renewed)
        fresh = _prepare_virtual_servers(engine, old, new, changes, errors)
        if errors:
            raise ReloadError(errors)
        plan = await _prepare_listeners(engine, fresh, errors)
        access_log = _prepare_access_log(old, new, errors)
        if errors:
            _undo_listeners(plan)
            raise ReloadError(errors)
    except BaseException:
        engine.config = old
        raise
    for pool, tls in renewed:  # nothing awaits between here and the swap of the pools
        pool.ssl = tls
    await _commit(engine, old, new, pools, fresh, plan, changes, access_log)
    return changes


def _prepare_access_log(old: Config, new: Config, errors: list[str]) -> AccessLog | None:
    """The new access log, opened before anything changes (None: it stays as it is)."""
    a, b = old.appliance, new.appliance
    if (a.access_log, a.access_log_format) == (b.access_log, b.access_log_format):
        return None
    try:
        return AccessLog(b.access_log, b.access_log_format)
    except OSError as exc:
        errors.append(access_log_error(new, exc))
        return None


# --------------------------------------------------------------------------- pools


def _pool_same(old: Config, new: Config, name: str) -> bool:
    a, b = old.pools.get(name), new.pools.get(name)
    if a is None or a != b:
        return False
    if b.server_ssl is not None and old.server_ssl.get(b.server_ssl) != new.server_ssl.get(b.server_ssl):
        return False
    return True


def _prepare_pools(
    engine: "Engine", old: Config, new: Config, changes: list[str], errors: list[str],
    renewed: list[tuple["PoolRuntime", Any]],
) -> dict[str, "PoolRuntime"]:
    """The pools of `new`; a kept pool whose server SSL files changed on disk goes into
    `renewed` with its new TLS settings (swapped in when the reload commits)."""
    pools: dict[str, PoolRuntime] = {}
    for name in new.pools:
        cur = engine.pools.get(name)
        if cur is not None and _pool_same(old, new, name):
            pools[name] = cur
            if cur.ssl is not None:
                _renew_server_ssl(new, name, cur, changes, errors, renewed)
            continue
        try:
            pool = engine.build_pool(name)
        except Exception as exc:  # TLS files, contexts: report, change nothing
            errors.append(f"pool.{name}: {exc}")
            continue
        if cur is None:
            pool.start_healthy()
            changes.append(f"pool {name} added ({len(pool.servers)} server(s))")
        else:
            _carry_servers(cur, pool)
            changes.append(f"pool {name} changed: " + _describe_pool_change(old, new, name))
        pools[name] = pool
    for name in engine.pools:
        if name not in new.pools:
            changes.append(f"pool {name} removed")
    return pools


def _renew_server_ssl(
    new: Config, name: str, pool: "PoolRuntime", changes: list[str], errors: list[str],
    renewed: list[tuple["PoolRuntime", Any]],
) -> None:
    """Certificates renewed in place (same paths, new contents) are read again, like the
    https listeners' (see _prepare_listeners); TLS sessions are kept while nothing changed."""
    from adc.tls.contexts import build_server_ssl, server_ssl_files

    cfg = new.server_ssl[pool.config.server_ssl or ""]
    try:
        if server_ssl_files(cfg) == pool.ssl.files:
            return
        tls = build_server_ssl(cfg)
    except Exception as exc:  # a missing or unreadable file: report, change nothing
        errors.append(f"pool.{name}: server_ssl {cfg.name}: {exc}")
        return
    renewed.append((pool, tls))
    changes.append(f"pool {name}: server_ssl {cfg.name} files changed, read again")


def _carry_servers(prev_pool: "PoolRuntime", pool: "PoolRuntime") -> None:
    """Keep health of servers at the same address, and state/weight of unchanged servers."""
    for name, rs in pool.servers.items():
        prev = prev_pool.servers.get(name)
        if prev is None:
            pool.set_health(name, True, initial=True)  # presumed up, as at start, until checks say otherwise
            continue
        if prev.address == rs.address:
            pool.set_health(name, prev.healthy, prev.last_check, initial=True)
            pool.carry(rs, prev)  # its live sessions still count against it
        if prev.config == rs.config:
            if rs.state is not prev.state:
                pool.set_state(name, prev.state)
            if rs.weight != prev.weight:
                pool.set_weight(name, prev.weight)
    pool.on_connect_failure = prev_pool.on_connect_failure


def _describe_pool_change(old: Config, new: Config, name: str) -> str:
    a, b = old.pools[name], new.pools[name]
    parts: list[str] = []
    for attr in ("method", "hash_on", "server_ssl", "slow_start", "health", "persistence"):
        if getattr(a, attr) != getattr(b, attr):
            parts.append(attr)
    before = {s.name: s for s in a.servers}
    after = {s.name: s for s in b.servers}
    for s in after:
        if s not in before:
            parts.append(f"server {s} added")
        elif before[s] != after[s]:
            parts.append(f"server {s} changed")
    for s in before:
        if s not in after:
            parts.append(f"server {s} removed")
    if not parts and b.server_ssl is not None:
        parts.append(f"server_ssl {b.server_ssl} changed")
    return ", ".join(parts) or "order of servers"


# --------------------------------------------------------------------------- virtual servers


def _prepare_virtual_servers(
    engine: "Engine", old: Config, new: Config, changes: list[str], errors: list[str]
) -> dict[str, "VirtualServerRuntime"]:
    """A freshly built runtime per new virtual server (holds config, profile, TLS context)."""
    fresh: dict[str, VirtualServerRuntime] = {}
    for name, cfg in new.virtual_servers.items():
        try:
            fresh[name] = engine.build_virtual_server(name)
        except Exception as exc:
            errors.append(f"virtual_server.{name}: {exc}")
            continue
        cur = engine.virtual_servers.get(name)
        if cur is None:
            changes.append(f"virtual_server {name} added (listening on {', '.join(map(str, cfg.listen))})")
            continue
        parts: list[str] = []
        prev = cur.config
        added = [str(a) for a in cfg.listen if a not in prev.listen]
        removed = [str(a) for a in prev.listen if a not in cfg.listen]
        if added:
            parts.append("listen +" + ", +".join(added))
        if removed:
            parts.append("listen -" + ", -".join(removed))
        if prev.profile != cfg.profile:
            parts.append(f"profile {prev.profile} -> {cfg.profile}")
        elif old.profiles.get(prev.profile) != new.profiles[cfg.profile]:
            parts.append(f"profile {cfg.profile} changed")
        if prev.pool != cfg.pool:
            parts.append(f"pool {prev.pool} -> {cfg.pool}")
        if prev.routes != cfg.routes:
            parts.append("routes changed")
        if prev.max_connections != cfg.max_connections:
            parts.append(f"max_connections {prev.max_connections} -> {cfg.max_connections}")
        if prev.backlog != cfg.backlog:
            parts.append("backlog (applies to new listening addresses)")
        if parts:
            changes.append(f"virtual_server {name} changed: " + ", ".join(parts))
    for name, vs in engine.virtual_servers.items():
        if name not in new.virtual_servers:
            live = len(vs.connections)
            changes.append(
                f"virtual_server {name} removed"
                + (f" ({live} live connection(s) get {new.appliance.grace:g}s to finish)" if live else "")
            )
    return fresh


class _Plan:
    """Listening sockets prepared for the new configuration (not yet serving)."""

    def __init__(self) -> None:
        # per virtual server name: listener key -> Server (kept, rearmed or new)
        self.listeners: dict[str, dict[Any, asyncio.Server]] = {}
        self.created: list[asyncio.Server] = []  # servers made by this reload
        self.kept: set[int] = set()  # id() of old servers that stay as they are


def _tls_key(vs: "VirtualServerRuntime") -> Any:
    """What the listening socket's TLS depends on."""
    if vs.profile.type is not ProfileType.HTTPS:
        return None
    return vs.client_ssl


async def _prepare_listeners(
    engine: "Engine", fresh: dict[str, "VirtualServerRuntime"], errors: list[str]
) -> _Plan:
    plan = _Plan()
    old: dict[Address, tuple[VirtualServerRuntime, asyncio.Server]] = {}
    for vs in engine.virtual_servers.values():
        for key, server in vs.listeners.items():
            if isinstance(key, Address):
                old[key] = (vs, server)
    for name, f in fresh.items():
        cur = engine.virtual_servers.get(name)
        owner = cur if cur is not None else f
        listeners = plan.listeners[name] = {}
        for address in f.config.listen:
            prev = old.get(address)
            if prev is not None:
                pvs, pserver = prev
                # https listeners are re-armed on every reload so renewed certificates are picked up
                same_tls = f.profile.type is not ProfileType.HTTPS and _tls_key(pvs) is None
                if pvs is owner and same_tls:
                    listeners[address] = pserver
                    plan.kept.add(id(pserver))
                    for extra_key, extra in pvs.listeners.items():
                        if isinstance(extra_key, tuple) and extra_key[0] == address:
                            listeners[extra_key] = extra
                            plan.kept.add(id(extra))
                    continue
                try:
                    servers = await _rearm(owner, f, pserver)
                except OSError as exc:
                    errors.append(f"{_where(engine, f, address)}: cannot take over {address}: {exc.strerror or exc}")
                    continue
            else:
                try:
                    servers = [await _open(owner, f, address)]
                except OSError as exc:
                    errors.append(f"{_where(engine, f, address)}: cannot listen on {address}: {_os_error(exc)}")
                    continue
            plan.created.extend(servers)
            listeners[address] = servers[0]
            for i, extra in enumerate(servers[1:], 1):
                listeners[(address, i)] = extra
    return plan


def _factory(owner: "VirtualServerRuntime", f: "VirtualServerRuntime") -> Callable[[], Any]:
    """The new listener's protocol factory: `owner`'s protocols, behind `f`'s TLS if it has one."""
    return protocol_factory(owner.factory, f.client_ssl, f.profile.timeout_tls_handshake or None)


async def _rearm(owner: "VirtualServerRuntime", f: "VirtualServerRuntime", server: asyncio.Server) -> list[asyncio.Server]:
    """New servers on duplicates of `server`'s sockets (the accept queue is shared)."""
    loop = asyncio.get_running_loop()
    out: list[asyncio.Server] = []
    try:
        for sock in server.sockets:
            dup = socket.socket(fileno=os.dup(sock.fileno()))
            try:
                out.append(await loop.create_server(
                    _factory(owner, f), sock=dup, backlog=f.config.backlog, start_serving=False
                ))
            except BaseException:
                dup.close()
                raise
    except BaseException:
        for s in out:
            s.close()
        raise
    return out


async def _open(owner: "VirtualServerRuntime", f: "VirtualServerRuntime", address: Address) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address.host else socket.AF_UNSPEC
    return await loop.create_server(
        _factory(owner, f), address.host, address.port, family=family, backlog=f.config.backlog,
        reuse_address=True, start_serving=False,
    )


def _where(engine: "Engine", vs: "VirtualServerRuntime", address: Address) -> str:
    return listen_where(engine.config.source, vs.config, address)


def _os_error(exc: OSError) -> str:
    from adc.engine.listener import listen_error_text

    return listen_error_text(exc)


def _undo_listeners(plan: _Plan) -> None:
    for server in plan.created:
        server.close()


# --------------------------------------------------------------------------- commit


async def _commit(
    engine: "Engine",
    old: Config,
    new: Config,
    pools: dict[str, "PoolRuntime"],
    fresh: dict[str, "VirtualServerRuntime"],
    plan: _Plan,
    changes: list[str],
    access_log: AccessLog | None,
) -> None:
    # 1. swap state (no awaits until the old listeners are closed)
    for name, replaced in engine.pools.items():
        if pools.get(name) is not replaced:  # removed, or rebuilt: count what its floods held back now
            for limit in replaced.limits.values():
                limit.close()
    engine.pools = pools
    retired: list[VirtualServerRuntime] = []
    old_servers = [s for vs in engine.virtual_servers.values() for s in vs.listeners.values()]
    vss: dict[str, VirtualServerRuntime] = {}
    for name, f in fresh.items():
        cur = engine.virtual_servers.get(name)
        if cur is None:
            rt = f
        else:
            rt = cur
            for attr, value in vars(f).items():
                if attr not in _RUNTIME_ONLY:
                    setattr(rt, attr, value)
        rt.listeners = plan.listeners.get(name, {})
        vss[name] = rt
    for name, vs in engine.virtual_servers.items():
        if name not in vss:
            vs.stopping = True
            retired.append(vs)
    engine.virtual_servers = vss
    # 2. old listeners that do not carry over stop; their sockets live on in the new servers
    for server in old_servers:
        if id(server) not in plan.kept:
            server.close()
    # 3. new listeners start serving (connections queued meanwhile are accepted now)
    for server in plan.created:
        await server.start_serving()
    # 4. access log, counters of objects that are gone
    a, b = old.appliance, new.appliance
    if access_log is not None:
        previous = engine.access_log
        engine.access_log = access_log
        changes.append(f"appliance.access_log -> {b.access_log} ({b.access_log_format})")
        _later(engine, b.grace, previous.close)
    if a.grace != b.grace:
        changes.append(f"appliance.grace {a.grace:g}s -> {b.grace:g}s")
    if a.admin != b.admin:
        changes.append("appliance.admin changed: takes effect after a restart")
    elif a.admin_token != b.admin_token:
        changes.append("appliance.admin_token changed")
    if a.name != b.name:
        changes.append(f"appliance.name {a.name} -> {b.name}")
    engine.stats.retain(vss.keys(), pools.keys(), [(p.name, s) for p in pools.values() for s in p.servers])
    # 5. removed virtual servers: live connections get the grace period
    if retired:
        engine_retired(engine).extend(retired)
        task = asyncio.ensure_future(_retire(engine, retired, b.grace))
        _tasks(engine).add(task)
        task.add_done_callback(_tasks(engine).discard)
    for line in changes:
        log.info("reload: %s", line)


def engine_retired(engine: "Engine") -> list["VirtualServerRuntime"]:
    """Virtual servers removed by a reload whose connections are still finishing."""
    retired = getattr(engine, "retired", None)
    if retired is None:
        retired = engine.retired = []  # type: ignore[attr-defined]
    return retired


def _tasks(engine: "Engine") -> set[asyncio.Task]:
    tasks = getattr(engine, "reload_tasks", None)
    if tasks is None:
        tasks = engine.reload_tasks = set()  # type: ignore[attr-defined]
    return tasks


def _later(engine: "Engine", delay: float, fn: Any) -> None:
    async def run() -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            fn()

    task = asyncio.ensure_future(run())
    task.set_name("adc-reload-later")
    _tasks(engine).add(task)
    task.add_done_callback(_tasks(engine).discard)


async def _retire(engine: "Engine", vss: list["VirtualServerRuntime"], grace: float) -> None:
    deadline = time.monotonic() + grace
    try:
        while any(vs.connections for vs in vss) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        left = [c for vs in vss for c in list(vs.connections)]
        if left:
            log.info("reload: closing %d connection(s) of removed virtual servers after the grace period", len(left))
        for conn in left:
            conn.close("virtual server removed")
        retired = engine_retired(engine)
        for vs in vss:
            if vs in retired:
                retired.remove(vs)
            for limit in vs.limits.values():
                limit.close()  # the lines its floods held back are counted before it goes


async def close_retired(engine: "Engine", grace: float) -> None:
    """At stop: let connections of removed virtual servers finish within `grace`, then close them."""
    for task in list(_tasks(engine)):
        if task.get_name() == "adc-reload-later":
            task.cancel()
    vss = list(engine_retired(engine))
    if vss:
        await _retire(engine, vss, grace)
