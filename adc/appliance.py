"""Composition root: configuration -> engine, health monitor, admin API; run and stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from adc.config.load import load
from adc.config.model import Config
from adc.engine.engine import Engine
from adc.runtime.stats import Stats

log = logging.getLogger("adc")


class Appliance:
    def __init__(self, config: Config):
        self.config = config
        self.stats = Stats()
        self.engine = Engine(config, self.stats)
        self.generation = 1
        self.stopped = asyncio.Event()
        self._stopping = False

    @classmethod
    def from_file(cls, path: str | Path) -> "Appliance":
        return cls(load(path))

    async def start(self) -> None:
        await self.engine.start()

    async def stop(self, grace: float | None = None) -> None:
        if self._stopping:
            return
        self._stopping = True
        await self.engine.stop(grace)
        self.stopped.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._stopping:
            log.warning("second %s: closing everything now", sig.name)
            for vs in self.engine.virtual_servers.values():
                for conn in list(vs.connections):
                    conn.close("appliance stopping")
            return
        log.info("%s received: no longer accepting; waiting for live connections", sig.name)
        asyncio.ensure_future(self.stop())

    async def serve(self) -> None:
        await self.start()
        self.install_signal_handlers()
        await self.stopped.wait()
