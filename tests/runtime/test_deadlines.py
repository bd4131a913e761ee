"""Shared deadline slots: what is filed fires once, never before its deadline; what is dropped never."""

from __future__ import annotations

import asyncio

from adc.runtime.deadlines import COARSE_FROM_SECONDS, FINE_SLOT_SECONDS, Timed, wheels


class Probe(Timed):
    """Records when its slot woke it; files itself again while its deadline has not come (as the users do)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.at = 0.0
        self.fired: list[float] = []

    def arm(self, delay: float) -> None:
        self.at = self.loop.time() + delay
        self.file_deadline(self.loop, self.at, delay)

    def on_deadline(self) -> None:
        now = self.loop.time()
        if self.at - now > 0.001:
            self.file_deadline(self.loop, self.at, self.at - now)
            return
        self.fired.append(now)


async def _until(cond, seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.01)):  # bounded
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within the time allowed")


async def test_a_deadline_fires_once_not_before_it_is_due():
    loop = asyncio.get_running_loop()
    probe = Probe(loop)
    probe.arm(0.12)
    await _until(lambda: probe.fired)
    assert probe.fired[0] >= probe.at - 0.001
    assert not probe.deadline_wheel  # no longer filed
    await asyncio.sleep(2 * FINE_SLOT_SECONDS)
    assert len(probe.fired) == 1


async def test_many_deadlines_in_one_slot_share_one_timer_and_all_fire():
    loop = asyncio.get_running_loop()
    fine, _coarse = wheels(loop)
    before = len(fine.buckets)
    when = loop.time() + 0.3
    probes = [Probe(loop) for _ in range(50)]
    for p in probes:
        p.at = when
        p.file_deadline(loop, when, 0.3)
    assert len(fine.buckets) == before + 1
    assert fine.pending() >= 50
    await _until(lambda: all(p.fired for p in probes))
    assert all(len(p.fired) == 1 and p.fired[0] >= when - 0.001 for p in probes)


async def test_a_dropped_deadline_never_fires_and_a_moved_one_fires_at_its_new_time():
    loop = asyncio.get_running_loop()
    dropped, moved, witness = Probe(loop), Probe(loop), Probe(loop)
    dropped.arm(0.1)
    moved.arm(0.1)
    witness.arm(0.4)
    dropped.drop_deadline()
    moved.arm(0.3)  # filed again, later: the earlier slot no longer holds it
    await _until(lambda: witness.fired)
    assert dropped.fired == []
    assert len(moved.fired) == 1 and moved.fired[0] >= moved.at - 0.001


async def test_long_timeouts_go_to_the_coarse_slots_and_come_back_to_the_fine_ones():
    loop = asyncio.get_running_loop()
    fine, coarse = wheels(loop)
    probe = Probe(loop)
    probe.arm(COARSE_FROM_SECONDS * 3)
    assert probe.deadline_wheel is coarse
    probe.arm(0.05)
    assert probe.deadline_wheel is fine
    assert all(probe not in bucket for bucket in coarse.buckets.values())
    await _until(lambda: probe.fired)
    probe.arm(COARSE_FROM_SECONDS * 3)
    probe.drop_deadline()
    assert probe.deadline_wheel is None
    assert all(probe not in bucket for bucket in coarse.buckets.values())
