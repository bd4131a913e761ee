"""Composition root: configuration -> engine, health monitor, admin API; run, reload and stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

from adc.config.load import ConfigError, load
from adc.config.model import Config
from adc.engine.engine import Engine
from adc.engine.listener import ListenError
from adc.runtime.events import EventLog
from adc.runtime.stats import Stats

log = logging.getLogger("adc")


def _health_monitor_class() -> Any:
    """The health monitor, when the product has one (adc/health/monitor.py)."""
    try:
        from adc.health.monitor import HealthMonitor
    except ImportError:
        return None
    return HealthMonitor


class Appliance:
    def __init__(self, config: Config):
        self.config = config
        self.stats = Stats()
        self.events = EventLog()
        self.engine = Engine(config, self.stats)
        self.generation = 1
        self.reloaded: float | None = None  # wall time of the last successful reload
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.health: Any = None  # HealthMonitor
        self.admin: Any = None  # AdminServer
        self.stopped = asyncio.Event()
        self._stopping = False
        self._reload_lock = asyncio.Lock()

    @property
    def admin_address(self) -> str | None:
        """Where the admin API listens ("unix:/abs/path" or "host:port"), None when off."""
        return self.admin.address if self.admin is not None else None

    # ------------------------------------------------------------------ start / stop

    async def start(self) -> None:
        """Start the admin API, open listeners, start health checks. Raises ListenError.

        The admin address is bound first: an appliance that cannot be managed must not
        take traffic, even for a moment, before it gives up.
        """
        if self.config.appliance.admin != "off":
            from adc.runtime.admin import AdminListenError, AdminServer

            self.admin = AdminServer(self)
            try:
                await self.admin.start()
            except AdminListenError as exc:
                self.admin = None
                raise ListenError(str(exc)) from None
        try:
            await self.engine.start()
            self._start_health()
        except BaseException:
            if self.admin is not None:
                await self.admin.stop()
                self.admin = None
            await self._stop_health()
            await self.engine.stop(0)
            raise
        self.events.add("start", f"appliance {self.config.appliance.name} started "
                        f"({len(self.engine.virtual_servers)} virtual server(s), {len(self.engine.pools)} pool(s))")

    def _start_health(self) -> None:
        monitor_cls = _health_monitor_class()
        if monitor_cls is None:
            # no health monitor: servers are presumed up
            for pool in self.engine.pools.values():
                pool.start_healthy()
            return
        self.health = monitor_cls(self.engine.pools, self.events)
        self.health.start()

    async def _stop_health(self) -> None:
        if self.health is not None:
            await self.health.stop()
            self.health = None

    async def stop(self, grace: float | None = None) -> None:
        if self._stopping:
            return
        self._stopping = True
        from adc.engine.reload import close_retired

        grace = self.config.appliance.grace if grace is None else grace
        if self.admin is not None:
            await self.admin.stop()
            self.admin = None
        await self._stop_health()
        await asyncio.gather(self.engine.stop(grace), close_retired(self.engine, grace))
        self.stopped.set()

    # ------------------------------------------------------------------ reload

    async def reload(self) -> dict[str, Any]:
        """Re-read the configuration file; apply it as a diff, or change nothing and report the errors.

        Returns {"ok": True, "generation": N, "changes": [...]} or {"ok": False, "generation": N, "errors": [...]}.
        """
        async with self._reload_lock:
            path = self.config.source
            display = self.config.display or str(path)  # messages name the file as at start
            log.info("reload: reading %s", path)
            errors: list[str] = []
            try:
                new = load(path, display)
            except ConfigError as exc:
                errors = list(exc.errors)
                new = None
            except OSError as exc:
                errors = [f"{display}: {exc.strerror or exc}"]
                new = None
            if new is not None:
                from adc.config.check import check_config

                errors, warnings = check_config(new, display)
                for line in warnings:
                    log.warning("reload: %s", line)
            if not errors and new is not None:
                from adc.engine.reload import ReloadError, apply

                try:
                    changes = await apply(self.engine, new)
                except ReloadError as exc:
                    errors = list(exc.errors)
                else:
                    self.config = new
                    self.generation += 1
                    self.reloaded = time.time()
                    self.reloads_ok += 1
                    if self.health is not None:
                        self.health.replace_pools(self.engine.pools)
                    summary = f"configuration reloaded (generation {self.generation}): " + (
                        "; ".join(changes) if changes else "no changes")
                    log.info("%s", summary)
                    self.events.add("reload", summary, generation=self.generation)
                    return {"ok": True, "generation": self.generation, "changes": changes}
            self.reloads_failed += 1
            for line in errors:
                log.error("reload: %s", line)
            log.error("reload: %d error(s); the running configuration is unchanged", len(errors))
            self.events.add("reload", f"reload failed with {len(errors)} error(s); configuration unchanged: "
                            + errors[0], level="error", errors=errors)
            return {"ok": False, "generation": self.generation, "errors": errors}

    # ------------------------------------------------------------------ signals

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def _on_reload_signal(self) -> None:
        log.info("SIGHUP received: reloading the configuration")
        asyncio.ensure_future(self.reload())

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._stopping:
            log.warning("second %s: closing everything now", sig.name)
            from adc.engine.reload import engine_retired

            for vs in [*self.engine.virtual_servers.values(), *engine_retired(self.engine)]:
                for conn in list(vs.connections):
                    conn.close("appliance stopping")
            return
        log.info("%s received: no longer accepting; waiting for live connections", sig.name)
        asyncio.ensure_future(self.stop())

    async def serve(self) -> None:
        await self.start()
        self.install_signal_handlers()
        await self.stopped.wait()
