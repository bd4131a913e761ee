"""Dashboard fixtures: recorded admin API answers and a pinned clock and timezone."""

from __future__ import annotations

import time

import pytest

from dashboard_recorded import FRAMES, PINNED_CLOCK

from adc.dashboard.app import DashboardApp
from adc.dashboard.source import StaticSource


@pytest.fixture
def utc(monkeypatch):
    """Event times are shown in local time: pin the timezone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def static_app(utc):
    """A dashboard fed from two recorded polls; no automatic polling, clock pinned."""

    def make(frames=FRAMES, replies=None) -> DashboardApp:
        source = StaticSource(frames, replies)
        app = DashboardApp(source, address="static", interval=None, clock=lambda: PINNED_CLOCK)
        app.animation_level = "none"  # no tab underline animation: faster, deterministic
        return app

    return make

