"""Session persistence: keep a client on the real server it used before.

Pure code, no I/O. Two kinds, as `[pool.*] persistence` configures them:

- `source-ip`: a table client address -> real server name, each entry living
  `timeout` seconds after its last use, at most `max_entries` entries (the least
  recently used go first). `PoolRuntime.pick` consults and fills it, so Layer 4 and
  Layer 7 both get it through the ordinary pick path.
- `cookie` (Layer 7): the appliance sets `NAME=<opaque server id>` on responses and
  honours it on later requests. The id is a digest of pool, server name and address:
  it does not reveal the server, it survives reloads, and appliances built from the
  same configuration agree on it.

When the remembered server is down, disabled, draining or full, persistence gives
way: the balancer picks again (and the new choice is remembered).
"""

from __future__ import annotations

import collections
import hashlib
from typing import Callable

from adc.config.model import Address, Persistence

COOKIE_ID_BYTES = 8  # 16 hex characters
EXPIRE_PER_RECORD = 4  # expired entries dropped from the old end on each record


def server_cookie_id(pool: str, server: str, address: Address) -> str:
    """The opaque, stable value naming one real server in a persistence cookie."""
    text = f"{pool}\x00{server}\x00{address}".encode()
    return hashlib.blake2b(text, digest_size=COOKIE_ID_BYTES, person=b"adc-persist").hexdigest()


def set_cookie_value(name: str, server_id: str) -> str:
    """The value of a Set-Cookie header naming a server."""
    return f"{name}={server_id}; Path=/; HttpOnly"


class SourceIpTable:
    """client address -> server name, with idle expiry and a size bound (LRU order)."""

    __slots__ = ("timeout", "max_entries", "clock", "_entries")

    def __init__(self, timeout: float, max_entries: int, clock: Callable[[], float]):
        self.timeout = timeout
        self.max_entries = max(1, max_entries)
        self.clock = clock
        self._entries: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, client: str) -> str | None:
        entry = self._entries.get(client)
        if entry is None:
            return None
        name, expires = entry
        if self.timeout > 0 and self.clock() >= expires:
            del self._entries[client]
            return None
        return name

    def record(self, client: str, server: str) -> None:
        now = self.clock()
        entries = self._entries
        entries[client] = (server, now + self.timeout)
        entries.move_to_end(client)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
        if self.timeout > 0:  # entries are in last-use order: expire from the old end
            for _ in range(EXPIRE_PER_RECORD):
                oldest = next(iter(entries))
                if entries[oldest][1] > now:
                    break
                del entries[oldest]

    def clear(self) -> None:
        self._entries.clear()


class CookieMap:
    """Opaque cookie id <-> real server name for one pool."""

    __slots__ = ("cookie_name", "by_id", "id_of")

    def __init__(self, cookie_name: str):
        self.cookie_name = cookie_name
        self.by_id: dict[str, str] = {}
        self.id_of: dict[str, str] = {}

    def add(self, pool: str, server: str, address: Address) -> str:
        sid = server_cookie_id(pool, server, address)
        self.by_id[sid] = server
        self.id_of[server] = sid
        return sid

    def server_for(self, value: str | None) -> str | None:
        if not value:
            return None
        return self.by_id.get(value.strip())

    def set_cookie(self, server: str, current: str | None = None) -> str | None:
        """Set-Cookie value for `server`, or None when the request already carries it."""
        sid = self.id_of.get(server)
        if sid is None or (current is not None and current.strip() == sid):
            return None
        return set_cookie_value(self.cookie_name, sid)


def make_tables(cfg: Persistence | None, clock: Callable[[], float]) -> tuple[SourceIpTable | None, CookieMap | None]:
    if cfg is None:
        return None, None
    if cfg.type == "source-ip":
        return SourceIpTable(cfg.timeout, cfg.max_entries, clock), None
    return None, CookieMap(cfg.name)
