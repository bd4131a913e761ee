"""Log lines a flood cannot multiply.

Some lines are written once per event a remote party can cause at will: a failed TLS
handshake, a malformed request, a connect to a real server that is down. A scanner, a
broken client in a loop or an outage under load would otherwise write thousands of
lines a second, filling the disk and costing the CPU the traffic needs. Each such kind
of line has a `LineLimit`: up to `burst` lines go out in each `window`; the rest are
counted, and when the window ends one line, the last one held back, goes out with how
many were held (as the Linux kernel's printk rate limit does). The counters of the
virtual server or pool still count every event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

BURST = 20
WINDOW_SECONDS = 10.0


class LineLimit:
    """One kind of log line, of one virtual server or pool."""

    __slots__ = ("logger", "level", "burst", "window", "started", "sent", "held", "last", "timer")

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING, burst: int | None = None,
                 window: float | None = None) -> None:
        self.logger = logger
        self.level = level
        self.burst = BURST if burst is None else burst
        self.window = WINDOW_SECONDS if window is None else window
        self.started = -self.window  # the current window's start (monotonic)
        self.sent = 0  # lines written in it
        self.held = 0  # lines held back in it
        self.last: tuple[str, tuple[Any, ...]] | None = None  # the last of them
        self.timer: asyncio.TimerHandle | None = None

    def log(self, msg: str, *args: Any) -> None:
        if not self.logger.isEnabledFor(self.level):
            return
        now = time.monotonic()
        if now - self.started >= self.window:
            self._flush()
            self.started = now
            self.sent = 0
        if self.sent < self.burst:
            self.sent += 1
            self.logger.log(self.level, msg, *args)
            return
        self.held += 1
        self.last = (msg, args)
        if self.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop: the count goes out with the next line of a later window
            self.timer = loop.call_later(max(0.0, self.started + self.window - now), self._window_over)

    def _window_over(self) -> None:
        self.timer = None
        self._flush()

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.held and self.last is not None:
            msg, args = self.last
            self.logger.log(self.level, msg + " (and %d more such line(s) in %gs, not written one by one)",
                            *args, self.held, self.window)
        self.held = 0
        self.last = None

    def close(self) -> None:
        """Write what is held back now (the virtual server or pool goes away)."""
        self._flush()


def limited(limits: dict[str, LineLimit], kind: str, logger: logging.Logger,
            level: int = logging.WARNING) -> LineLimit:
    """The `kind` limit among an owner's `limits` (a virtual server's, a pool's), made on first use."""
    limit = limits.get(kind)
    if limit is None:
        limit = limits[kind] = LineLimit(logger, level)
    return limit
