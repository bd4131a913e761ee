"""Flood limits of log lines: a burst per window goes out, the rest is counted into one line."""

from __future__ import annotations

import asyncio
import logging

from adc.runtime.loglimit import LineLimit


def _messages(caplog, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


async def test_a_burst_goes_out_and_the_rest_is_counted_when_the_window_ends(caplog):
    caplog.set_level(logging.INFO, logger="test.flood")
    limit = LineLimit(logging.getLogger("test.flood"), logging.INFO, burst=3, window=0.3)
    for i in range(10):
        limit.log("failure %d from %s", i, "x")
    assert _messages(caplog, "test.flood") == ["failure 0 from x", "failure 1 from x", "failure 2 from x"]
    for _ in range(100):  # bounded: the window ends after 0.3 s
        if len(_messages(caplog, "test.flood")) > 3:
            break
        await asyncio.sleep(0.02)
    assert _messages(caplog, "test.flood")[3:] == [
        "failure 9 from x (and 7 more such line(s) in 0.3s, not written one by one)"
    ]
    # a new window: lines go out one by one again, and nothing was held, so no count follows
    limit.log("failure %d from %s", 10, "x")
    assert _messages(caplog, "test.flood")[4:] == ["failure 10 from x"]
    limit.close()
    assert len(_messages(caplog, "test.flood")) == 5


async def test_close_writes_what_is_held_at_once(caplog):
    caplog.set_level(logging.WARNING, logger="test.flood")
    limit = LineLimit(logging.getLogger("test.flood"), burst=1, window=60)
    limit.log("a")
    limit.log("b")
    limit.log("c")
    limit.close()
    assert _messages(caplog, "test.flood") == ["a", "c (and 2 more such line(s) in 60s, not written one by one)"]
    assert limit.timer is None


def test_a_disabled_level_costs_no_count(caplog):
    caplog.set_level(logging.WARNING, logger="test.flood")
    limit = LineLimit(logging.getLogger("test.flood"), logging.INFO, burst=1)
    for _ in range(5):
        limit.log("quiet")
    assert limit.held == 0 and not _messages(caplog, "test.flood")
