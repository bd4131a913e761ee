"""Shared deadline timers: one event-loop timer per deadline slot, not one per connection.

Almost every connection timeout is set and then moved or dropped without firing: a TLS
handshake's ends with the handshake, a client's moves with each request, a tunnel's with
each byte. An event-loop timer per connection would cost a timer object, a heap entry
and a handle to close each time. Here a connection (a `Timed`) is filed in the set of the
slot its deadline falls in, and one event-loop timer per slot, shared by everything filed
there, wakes the slot; each one filed there then checks its own deadline and files itself
again if activity has moved it. Filing, moving and dropping a deadline are set operations.

A deadline fires late by at most one slot, never early: 50 ms for timeouts under 10 s,
1 s from 10 s on (HAProxy and NGINX timeouts are in the same range of precision that
matters: seconds).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import Final

from mypy_extensions import mypyc_attr

FINE_SLOT_SECONDS: Final = 0.05  # deadline precision for timeouts under COARSE_FROM_SECONDS
COARSE_SLOT_SECONDS: Final = 1.0
COARSE_FROM_SECONDS: Final = 10.0


@mypyc_attr(allow_interpreted_subclasses=True)  # a connection class of any module, tests' too
class Timed:
    """Something with at most one deadline filed at a time; `on_deadline()` runs when its slot is due.

    The slot may be due before the deadline itself has come (the deadline moved, or the
    event loop's clock rounds): `on_deadline` checks, and files the deadline again if it
    is not due.
    """

    __slots__ = ("deadline_at", "deadline_tick", "deadline_wheel")

    def __init__(self) -> None:
        self.deadline_at = 0.0  # the deadline last filed (event-loop time)
        self.deadline_tick = 0
        self.deadline_wheel: Wheel | None = None  # where it is filed, if it is

    def file_deadline(self, loop: asyncio.AbstractEventLoop, when: float, delay: float) -> None:
        """File a deadline at `when` (event-loop time), `delay` from now, in place of any filed."""
        wheel = self.deadline_wheel
        if wheel is not None:
            wheel.discard(self, self.deadline_tick)
        fine, coarse = wheels(loop)
        wheel = fine if delay < COARSE_FROM_SECONDS else coarse
        self.deadline_at = when
        self.deadline_tick = wheel.add(loop, self, when)
        self.deadline_wheel = wheel

    def drop_deadline(self) -> None:
        wheel = self.deadline_wheel
        if wheel is not None:
            self.deadline_wheel = None
            wheel.discard(self, self.deadline_tick)

    def on_deadline(self) -> None:
        raise NotImplementedError


class Wheel:
    """The slots of one size: slot number -> what is filed there; one event-loop timer per slot in use."""

    __slots__ = ("slot", "buckets")

    def __init__(self, slot: float) -> None:
        self.slot = slot  # (the loop is not kept: this object lives in a dict keyed weakly by it)
        self.buckets: dict[int, set[Timed]] = {}

    def add(self, loop: asyncio.AbstractEventLoop, timed: Timed, when: float) -> int:
        tick = math.ceil(when / self.slot)
        bucket = self.buckets.get(tick)
        if bucket is None:
            bucket = self.buckets[tick] = set()
            loop.call_at(tick * self.slot, self._fire, tick)
        bucket.add(timed)
        return tick

    def discard(self, timed: Timed, tick: int) -> None:
        bucket = self.buckets.get(tick)
        if bucket is not None:
            bucket.discard(timed)

    def pending(self) -> int:
        """How many deadlines are filed (for tests and the curious)."""
        return sum(len(b) for b in self.buckets.values())

    def _fire(self, tick: int) -> None:
        bucket = self.buckets.pop(tick, None)
        if not bucket:
            return
        for timed in bucket:
            if timed.deadline_wheel is self and timed.deadline_tick == tick:
                timed.deadline_wheel = None  # no longer filed: on_deadline files it again if it must
                timed.on_deadline()


_WHEELS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Wheel, Wheel]]" = weakref.WeakKeyDictionary()
_last: "tuple[weakref.ref[asyncio.AbstractEventLoop], tuple[Wheel, Wheel]] | None" = None


def wheels(loop: asyncio.AbstractEventLoop) -> tuple[Wheel, Wheel]:
    """(fine, coarse): the wheels of `loop`."""
    global _last
    last = _last
    if last is not None and last[0]() is loop:  # the one loop there is, but for tests
        return last[1]
    pair = _WHEELS.get(loop)
    if pair is None:
        pair = _WHEELS[loop] = (Wheel(FINE_SLOT_SECONDS), Wheel(COARSE_SLOT_SECONDS))
    _last = (weakref.ref(loop), pair)
    return pair
