"""A bounded log of operational events (health transitions, reloads, errors).

The admin API serves it newest first; the dashboard's Events screen reads it.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from typing import Any

MAX_EVENTS = 1000

log = logging.getLogger("adc.events")


class EventLog:
    def __init__(self, maxlen: int = MAX_EVENTS):
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)
        self._ids = itertools.count(1)

    def add(self, kind: str, message: str, level: str = "info", **fields: Any) -> dict[str, Any]:
        """kind: "health", "state", "reload", "error", ...; fields: pool, server, ... for filtering."""
        event = {"id": next(self._ids), "time": time.time(), "kind": kind, "level": level, "message": message, **fields}
        self._events.append(event)
        return event

    def recent(self, limit: int = 100, since_id: int = 0) -> list[dict[str, Any]]:
        """Newest first."""
        out = []
        for event in reversed(self._events):
            if event["id"] <= since_id or len(out) >= limit:
                break
            out.append(event)
        return out
