"""Where the dashboard's data comes from.

A source is anything with `async request(method, path, body=None) -> (status, json)` that
raises `AdminUnreachable` when the appliance cannot be reached: normally the admin API
client (`adc.runtime.admin_client.AdminClient`), or `StaticSource`, which answers from
recorded admin API answers (for screenshots, demos and layout tests).
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, Callable, Mapping, Protocol, Sequence

from adc.runtime.admin_client import AdminUnreachable, token_refused

from .model import ENDPOINTS, Snapshot

Answer = tuple[int, Any]


class Source(Protocol):
    async def request(self, method: str, path: str, body: Any = None) -> Answer: ...


# fields every answer of adc's /api/v1/status carries: anything else is not adc's admin API
STATUS_FIELDS = ("name", "version", "uptime", "generation")


async def fetch_snapshot(source: Source, clock: Callable[[], float]) -> Snapshot:
    """Read every endpoint the dashboard shows; raises AdminUnreachable.

    The status comes first, alone: only once it is known to be adc's admin API are the
    others read (concurrently), so a dashboard pointed at another service, a virtual
    server's port say, sends it one request per poll and says what it found.
    """
    key, path = ENDPOINTS[0]
    status, body = await source.request("GET", path)
    if status == 401:
        raise AdminUnreachable(_refused(source, path))
    if status != 200:
        message = body.get("error") if isinstance(body, dict) else body
        raise AdminUnreachable(f"admin API answered HTTP {status} to {path}: {message}")
    if not isinstance(body, dict) or any(f not in body for f in STATUS_FIELDS):
        raise AdminUnreachable(f"not an adc admin API (its answer to {path} is not adc's status)")
    answers: dict[str, Any] = {key: body}
    rest = ENDPOINTS[1:]
    results = await asyncio.gather(*(source.request("GET", p) for _, p in rest))
    for (key, path), (status, body) in zip(rest, results):
        if status == 401:
            raise AdminUnreachable(_refused(source, path))
        if status == 200:
            answers[key] = body
    return Snapshot.from_answers(clock(), answers)


def _refused(source: Source, path: str) -> str:
    return token_refused(getattr(source, "token", "x"), path)  # (a source without a token: refused)


class StaticSource:
    """Answers GETs from recorded frames: {path: json}. Each poll (a GET of /api/v1/status)
    moves to the next frame; the last frame stays. Mutating requests are recorded in
    `requests` and answered from `replies[(method, path)]`, or 200 {} by default.
    Set `unreachable` to a message to simulate a stopped appliance."""

    def __init__(
        self,
        frames: Sequence[Mapping[str, Any]],
        replies: Mapping[tuple[str, str], Answer] | None = None,
    ) -> None:
        if not frames:
            raise ValueError("StaticSource needs at least one frame")
        self.frames = [dict(f) for f in frames]
        self.replies = dict(replies or {})
        self.requests: list[tuple[str, str, Any]] = []
        self.unreachable: str | None = None
        self._index = -1

    async def request(self, method: str, path: str, body: Any = None) -> Answer:
        if self.unreachable is not None:
            raise AdminUnreachable(self.unreachable)
        method = method.upper()
        if method == "GET":
            if path == "/api/v1/status":
                self._index = min(self._index + 1, len(self.frames) - 1)
            frame = self.frames[max(self._index, 0)]
            bare = path.split("?", 1)[0]
            for candidate in (path, bare):
                if candidate in frame:
                    return 200, copy.deepcopy(frame[candidate])
            return 404, {"error": f"no such path: {bare}"}
        self.requests.append((method, path, body))
        return self.replies.get((method, path), (200, {}))

    async def get(self, path: str) -> Answer:
        return await self.request("GET", path)

    async def post(self, path: str, body: Any = None) -> Answer:
        return await self.request("POST", path, body if body is not None else {})

    async def delete(self, path: str) -> Answer:
        return await self.request("DELETE", path)
