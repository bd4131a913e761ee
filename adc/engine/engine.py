"""The engine: virtual servers, their listeners, and the real-server pools."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from adc.config.model import Address, Config, Profile, ProfileType, VirtualServer
from adc.engine.l4 import L4Accept
from adc.engine.l7 import ProtocolFactory
from adc.engine.listener import ListenError, access_log_error, bound_addresses, listen, listen_where
from adc.pools.pool import PoolRuntime
from adc.runtime.accesslog import AccessLog
from adc.runtime.loglimit import LineLimit, limited
from adc.runtime.stats import Counters, Stats

log = logging.getLogger("adc.engine")

REFUSAL_LOG_SECONDS = 10.0  # connections refused by max_connections: one log line per this, at most


class Closable(Protocol):
    def close(self, reason: str = ...) -> None: ...


class VirtualServerRuntime:
    """One virtual server: its current configuration, listeners and live connections.

    Protocol objects read `config`/`profile` when a connection arrives, so swapping
    them (reload) affects new connections only.
    """

    def __init__(self, engine: "Engine", config: VirtualServer, profile: Profile):
        self.engine = engine
        self.name = config.name
        self.config = config
        self.profile = profile
        self.counters: Counters = engine.stats.vs(config.name)
        self.listeners: dict[Address, asyncio.Server] = {}
        self.connections: set[Closable] = set()
        self.stopping = False
        self.client_ssl: Any = None  # ssl.SSLContext for https
        self.router_cache: tuple[VirtualServer, Any] | None = None  # (the configuration it serves, the router)
        # what the listeners call per accepted connection (compiled with the traffic path)
        self.factory: Any = ProtocolFactory(self, L4Accept)
        self.refusal_logged = -REFUSAL_LOG_SECONDS  # when the last refusal was logged (monotonic)
        self.refused_unlogged = 0  # refusals since then
        self.limits: dict[str, LineLimit] = {}  # its log lines' flood limits (adc.runtime.loglimit)

    def refuse(self) -> None:
        """A connection refused at accept (max_connections reached, or stopping): counted; logged at
        most once per REFUSAL_LOG_SECONDS, with the number refused in between, as a flood must not
        flood the log too."""
        counters = self.counters
        counters.rejected += 1
        counters.error("refused")
        if self.stopping:
            return  # the listeners are closing: nothing for an operator to act on
        self.refused_unlogged += 1
        now = time.monotonic()
        if now - self.refusal_logged >= REFUSAL_LOG_SECONDS:
            log.warning("virtual_server %s: max_connections (%d) reached: %d connection(s) refused since the "
                        "last such line", self.name, self.config.max_connections, self.refused_unlogged)
            self.refusal_logged = now
            self.refused_unlogged = 0

    def router(self) -> Any:
        """The Layer-7 router of the current configuration (rebuilt when a reload swaps it)."""
        cached = self.router_cache
        if cached is None or cached[0] is not self.config:
            from adc.http.routing import Router

            cached = self.router_cache = (self.config, Router(self.config.routes, self.config.pool))
        return cached[1]

    async def open(self, address: Address) -> asyncio.Server:
        server = await listen(
            listen_where(self.engine.config.source, self.config, address),
            address,
            self.factory,
            backlog=self.config.backlog,
            ssl_context=self.client_ssl,
            ssl_handshake_timeout=self.profile.timeout_tls_handshake or None,
        )
        self.listeners[address] = server
        return server

    def addresses(self) -> list[str]:
        out: list[str] = []
        for server in self.listeners.values():
            out.extend(bound_addresses(server))
        return out

    def stop_accepting(self) -> None:
        self.stopping = True
        for server in self.listeners.values():
            server.close()

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "profile": self.profile.name,
            "type": self.profile.type.value,
            "listen": [str(a) for a in self.config.listen],
            "bound": self.addresses(),
            "pool": self.config.pool,
            "routes": len(self.config.routes),
            "max_connections": self.config.max_connections,
            "state": "stopping" if self.stopping else "listening",
        }


class Engine:
    def __init__(self, config: Config, stats: Stats | None = None, access_log: AccessLog | None = None):
        self.config = config
        self.stats = stats or Stats()
        if access_log is None:
            try:
                access_log = AccessLog(config.appliance.access_log, config.appliance.access_log_format)
            except OSError as exc:  # a file the checks let through (root passes os.access), say
                raise ListenError(access_log_error(config, exc)) from None
        self.access_log = access_log
        self.pools: dict[str, PoolRuntime] = {}
        self.virtual_servers: dict[str, VirtualServerRuntime] = {}
        self.retired: list[VirtualServerRuntime] = []  # removed by a reload, finishing their connections
        # Layer-7 state shared by the engine's connections (adc.engine.l7), made on first use:
        self.idle: Any = None  # IdleConnections: idle keep-alive connections to real servers
        self.outbox: Any = None  # Outbox: output that waits for the end of the loop iteration
        self.loop: asyncio.AbstractEventLoop | None = None  # the event loop it runs on (set by start)
        self.started = time.monotonic()

    # ------------------------------------------------------------------ building

    def build_pool(self, name: str) -> PoolRuntime:
        cfg = self.config.pools[name]
        pool = PoolRuntime(cfg, self.stats)
        if cfg.server_ssl is not None:
            from adc.tls.contexts import build_server_ssl

            pool.ssl = build_server_ssl(self.config.server_ssl[cfg.server_ssl])
        return pool

    def build_virtual_server(self, name: str) -> VirtualServerRuntime:
        cfg = self.config.virtual_servers[name]
        profile = self.config.profiles[cfg.profile]
        vs = VirtualServerRuntime(self, cfg, profile)
        if profile.type is ProfileType.HTTPS:
            from adc.tls.contexts import build_client_ssl, handshake_failure_reason

            assert profile.client_ssl is not None
            counters = vs.counters
            lines = limited(vs.limits, "tls_handshake", log)

            def on_handshake_error(exc: BaseException, layer: Any) -> None:  # layer: adc.tls.termination.TLSLayer
                counters.error("tls")
                lines.log("virtual_server %s: TLS handshake failed: %s (client %s)", name,
                          handshake_failure_reason(exc, layer), layer.peer)

            vs.client_ssl = build_client_ssl(profile.client_ssl, on_handshake_error=on_handshake_error)
        return vs

    async def start(self) -> None:
        """Open every listener; on any failure close what was opened and raise ListenError."""
        self.loop = asyncio.get_running_loop()
        for name in self.config.pools:
            self.pools[name] = self.build_pool(name)
        for name in self.config.virtual_servers:
            self.virtual_servers[name] = self.build_virtual_server(name)
        errors: list[str] = []
        for vs in self.virtual_servers.values():
            for address in vs.config.listen:
                try:
                    await vs.open(address)
                except ListenError as exc:
                    errors.append(str(exc))
        if errors:
            for vs in self.virtual_servers.values():
                vs.stop_accepting()
            raise ListenError("\n".join(errors))
        for vs in self.virtual_servers.values():
            for addr in vs.addresses():
                log.info("virtual_server %s listening on %s (profile %s)", vs.name, addr, vs.profile.name)

    # ------------------------------------------------------------------ stopping

    def live_connections(self) -> int:
        return sum(len(vs.connections) for vs in self.virtual_servers.values())

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let live connections finish within `grace`, then close the rest."""
        grace = self.config.appliance.grace if grace is None else grace
        for vs in self.virtual_servers.values():
            vs.stop_accepting()
        live = self.live_connections()
        if live:
            log.info("stopping: waiting up to %.1fs for %d live connection(s)", grace, live)
        deadline = time.monotonic() + grace
        while self.live_connections() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        from adc.engine.l7 import close_idle

        close_idle(self)  # idle keep-alive connections to real servers
        left = [c for vs in self.virtual_servers.values() for c in list(vs.connections)]
        if left:
            log.info("stopping: closing %d connection(s) still open after the grace period", len(left))
            for conn in left:
                conn.close("appliance stopping")
        await asyncio.sleep(0)
        limits: list[dict[str, LineLimit]] = [vs.limits for vs in self.virtual_servers.values()]
        limits += [pool.limits for pool in self.pools.values()]
        for owned in limits:
            for limit in owned.values():
                limit.close()  # the lines a flood held back are counted before the log ends
        self.access_log.close()
