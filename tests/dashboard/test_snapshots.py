"""Layout of the main screens at 80x24 from recorded admin API answers (clock and timezone pinned).

Update the baselines only after looking at them: pytest --snapshot-update tests/dashboard
"""

from __future__ import annotations

from dashboard_recorded import load_frames


async def _loaded(pilot) -> None:
    await load_frames(pilot.app)
    await pilot.pause()


def test_overview(snap_compare, static_app):
    assert snap_compare(static_app(), run_before=_loaded)


def test_pools(snap_compare, static_app):
    assert snap_compare(static_app(), press=["2"], run_before=_loaded)


def test_tunnels(snap_compare, static_app):
    assert snap_compare(static_app(), press=["3"], run_before=_loaded)


def test_events(snap_compare, static_app):
    assert snap_compare(static_app(), press=["4"], run_before=_loaded)


def test_certificates(snap_compare, static_app):
    assert snap_compare(static_app(), press=["5"], run_before=_loaded)


def test_pools_light_theme(snap_compare, static_app):
    assert snap_compare(static_app(), press=["2", "t"], run_before=_loaded)


def test_drain_confirmation(snap_compare, static_app):
    # cursor on web2 (pool row, web1, web2), then drain: the dialog opens with Cancel focused
    assert snap_compare(static_app(), press=["2", "down", "down", "n"], run_before=_loaded)


def test_help(snap_compare, static_app):
    assert snap_compare(static_app(), press=["question_mark"], run_before=_loaded, terminal_size=(80, 30))


def test_disconnected(snap_compare, static_app):
    async def stop_appliance(pilot) -> None:
        await _loaded(pilot)
        pilot.app.source.unreachable = "admin API at unix:/srv/adc/run/adc.sock: connection refused"
        await pilot.app.poll_once()
        await pilot.pause()

    assert snap_compare(static_app(), run_before=stop_appliance)


def test_too_small(snap_compare, static_app):
    assert snap_compare(static_app(), run_before=_loaded, terminal_size=(60, 20))
