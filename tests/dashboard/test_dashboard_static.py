"""Dashboard behaviour with recorded admin API answers: keys, dialogs, actions, filter, banner."""

from __future__ import annotations

import copy
import time

from dashboard_recorded import FRAMES, frame, load_frames

from adc.dashboard.app import DashboardApp
from adc.dashboard.model import (
    ENDPOINTS, EVENTS_MAX, RateTracker, Snapshot, pool_summary, sort_sessions, sparkline, vs_summary,
)
from adc.dashboard.screens import ConfirmScreen, HelpScreen, MessageScreen, WeightScreen
from adc.dashboard.widgets import KeyedTable, middle_cut

SIZE = (80, 24)


async def _start(app: DashboardApp, pilot) -> None:
    await load_frames(app)
    await pilot.pause()


async def _select(pilot, table: KeyedTable, key: str) -> None:
    table.move_cursor(row=table.get_row_index(key))
    await pilot.pause()
    assert table.selected_key == key


async def test_number_keys_and_tab_clicks_switch_screens(static_app):
    app = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        for key, tab in (("2", "pools"), ("3", "tunnels"), ("4", "events"), ("5", "certificates"), ("1", "overview")):
            await pilot.press(key)
            assert app.active_tab == tab
        await pilot.click("#--content-tab-pools")
        assert app.active_tab == "pools"


async def test_tables_show_every_item(static_app):
    app = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        assert app.query_one("#vs-table", KeyedTable).keys() == ["db", "secure", "web"]
        pools = app.query_one("#pool-table", KeyedTable).keys()
        assert pools[:5] == ["pool:web", "server:web/web1", "server:web/web2", "server:web/spare", "server:web/old"]
        assert "server:chat/chat2" in pools and "server:db/db2" in pools
        assert app.query_one("#session-table", KeyedTable).keys() == ["31", "17", "23"]  # oldest first
        assert app.query_one("#event-table", KeyedTable).keys() == ["12", "11", "10", "9", "8"]
        assert app.query_one("#cert-table", KeyedTable).keys()[0] == "/srv/adc/certs/client.pem"  # expired first
        table = app.query_one("#pool-table", KeyedTable)
        row = table.get_row("server:chat/chat2")
        assert str(row[1]) == "DOWN"
        assert str(table.get_row("server:web/web2")[3]) == "1/2↗"  # slow start: effective/configured
        assert str(table.get_row("server:web/spare")[2]) == "backup"
        # rates come from the difference of the two polls (one second of uptime apart)
        vs = app.query_one("#vs-table", KeyedTable).get_row("web")
        assert str(vs[3]) == "300.0"


TABLES = ("vs-table", "pool-table", "session-table", "event-table", "cert-table")


def _row_text(table: KeyedTable, key: str) -> str:
    """The row as drawn on screen (the header is the first line)."""
    return table.render_line(table.get_row_index(key) + 1).text


async def test_tables_fit_80_columns_and_widen_again(static_app):
    """On an 80-column terminal the elastic columns give way (cells end in an ellipsis)
    rather than pushing columns out of view; on a wide one nothing is cut."""
    app = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        for index, table_id in enumerate(TABLES):
            await pilot.press(str(index + 1))
            await pilot.pause()
            table = app.query_one(f"#{table_id}", KeyedTable)
            assert table.virtual_size.width <= table.scrollable_content_region.width, table_id
        pools = app.query_one("#pool-table", KeyedTable)
        narrowed = {str(c.key.value): c.width for c in pools.ordered_columns if not c.auto_width}
        assert narrowed and set(narrowed) <= {"name", "check", "address"}
        assert all(w >= 8 for w in narrowed.values())  # none below its minimum (8-13 here)
        # a cut address loses the middle of its host, not its port
        await pilot.press("2")
        await pilot.pause()
        address = str(pools.get_row("server:web/web1")[8])
        port = address.rsplit(":", 1)[1]
        shown = _row_text(pools, "server:web/web1")
        assert address not in shown and f"…:{port}" in shown, shown
        vs = app.query_one("#vs-table", KeyedTable)
        await pilot.press("1")
        await pilot.pause()
        listen = str(vs.get_row("web")[9])
        shown = _row_text(vs, "web").rstrip()
        assert listen not in shown and shown.endswith(listen.rsplit(":", 1)[1]), shown  # narrowed to "…8080"
        await pilot.resize_terminal(160, 24)
        for index, table_id in enumerate(TABLES):
            await pilot.press(str(index + 1))
            await pilot.pause()
            table = app.query_one(f"#{table_id}", KeyedTable)
            assert all(c.auto_width for c in table.ordered_columns), table_id


async def test_drain_asks_with_cancel_focused_and_cancel_changes_nothing(static_app):
    app = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        await pilot.press("2")
        await _select(pilot, app.query_one("#pool-table", KeyedTable), "server:web/web2")
        await pilot.press("n")
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.focused is not None and app.screen.focused.id == "cancel"
        await pilot.press("n")  # app keys do not open a second dialog
        await pilot.press("enter")  # Enter on the focused Cancel
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert app.source.requests == []


async def test_drain_confirmed_posts_and_shows_pending(static_app):
    app = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        await pilot.press("2")
        table = app.query_one("#pool-table", KeyedTable)
        await _select(pilot, table, "server:web/web2")
        await pilot.press("n", "y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert ("POST", "/api/v1/pools/web/servers/web2", {"state": "draining"}) in app.source.requests
        assert "→DRAIN…" in str(table.get_row("server:web/web2")[1])
        assert table.selected_key == "server:web/web2"  # the cursor stays on the server


async def test_the_pool_under_the_cursor_is_described_in_full(static_app):
    """At 80 columns a pool's row cuts its method and check type; the line above the table has them,
    and with server SSL the handshakes towards the pool, or towards the server under the cursor."""
    frames = copy.deepcopy(FRAMES)
    for recorded in frames:
        db = recorded["/api/v1/pools"]["pools"][2]
        db["server_ssl"] = "[/tls]"  # text, never markup
        db["counters"].update(tls_handshakes=12, tls_resumed=9)
        db["servers"][0]["counters"].update(tls_handshakes=12, tls_resumed=9)
        db["servers"][0]["counters"]["errors"]["tls"] = 1
    app = static_app(frames)
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        await pilot.press("2")
        label = app.query_one("#pool-label")
        table = app.query_one("#pool-table", KeyedTable)
        assert "least-conn/h…" in _row_text(table, "pool:web")  # the row alone is cut here
        assert str(label.render()) == "pool web: least-conn · http health check"
        await _select(pilot, table, "server:chat/chat2")
        assert str(label.render()) == "pool chat: source-hash · websocket health check"
        await _select(pilot, table, "pool:db")
        assert str(label.render()) == ("pool db: round-robin · tcp health check"
                                       " · server SSL [/tls]: 12 handshakes, 75% resumed, 1 failed")
        await _select(pilot, table, "server:db/db1")
        assert str(label.render()) == ("pool db: round-robin · tcp health check · server SSL [/tls]"
                                       " · server db1: TLS 12 handshakes, 75% resumed, 1 failed")


async def test_the_virtual_server_under_the_cursor_is_described_with_its_tls_handshakes(static_app):
    """The Overview table has no room for TLS at 80 columns; the lines above it give the
    handshake rate (from the two polls, one second apart), the resumed share and the failures."""
    app = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        label = app.query_one("#vs-label")
        table = app.query_one("#vs-table", KeyedTable)
        await _select(pilot, table, "secure")
        assert str(label.render()).replace("\n", " ") == (
            "secure: profile https → pool web · TLS 9.0 handshakes/s, 67% resumed, 4 failed · errors: timeout 2"
            " · 1 route · 1,009 connections, 3,010 requests"
        )
        await _select(pilot, table, "db")  # Layer 4: no TLS, no requests
        assert str(label.render()).strip() == "db: profile tcp → pool db · 121 connections (at most 100 at once)"
        # the next poll brings the next figures for the row under the cursor
        await _select(pilot, table, "secure")
        app.source.frames.append(frame(3))  # two seconds after the last poll: 18 handshakes
        await app.poll_once()
        await pilot.pause()
        assert "TLS 9.0 handshakes/s, 67% resumed" in str(label.render()).replace("\n", " ")
        assert "1,027 connections" in str(label.render()).replace("\n", " ")


def test_vs_summary_survives_malformed_counters():
    rates = RateTracker().get("x")
    assert vs_summary({"name": "x", "type": "https", "counters": {"errors": "none", "tls_handshakes": "?"}}, rates) == (
        "x: profile ? (https) → pool - · TLS 0.0 handshakes/s, 0 failed · 0 connections, 0 requests"
    )
    assert vs_summary({"name": "y", "type": "tcp", "counters": [1]}, rates) == "y: profile ? (tcp) → pool - · 0 connections"


def test_pool_summary_names_every_setting_it_is_given():
    assert pool_summary({"name": "api", "method": "maglev", "hash_on": "header", "health": None,
                         "persistence": "cookie", "server_ssl": "internal", "slow_start": 30.0}) == (
        "pool api: maglev on header · no health check · cookie persistence · server SSL internal"
        " · slow start 30 s"
    )
    assert pool_summary({"name": "x", "method": "round-robin", "health": "tls", "persistence": None,
                         "server_ssl": None, "slow_start": 0.0}) == "pool x: round-robin · tls health check"
    assert pool_summary({"slow_start": "soon"}) == "pool ?: ? · no health check"  # malformed: no crash


def test_pool_summary_counts_tls_towards_the_pool_or_the_server_under_the_cursor():
    servers = [{"name": "a1", "counters": {"tls_handshakes": 40, "tls_resumed": 30, "errors": {"tls": 2}}},
               {"name": "a2", "counters": {"tls_handshakes": 60, "tls_resumed": 60, "errors": {"connect": 1}}}]
    pool = {"name": "api", "method": "round-robin", "health": None, "server_ssl": "internal", "servers": servers,
            "counters": {"tls_handshakes": 100, "tls_resumed": 90}}
    assert pool_summary(pool) == ("pool api: round-robin · no health check"
                                  " · server SSL internal: 100 handshakes, 90% resumed, 2 failed")
    assert pool_summary(pool, servers[0]) == ("pool api: round-robin · no health check · server SSL internal"
                                              " · server a1: TLS 40 handshakes, 75% resumed, 2 failed")
    assert pool_summary({**pool, "server_ssl": None}, servers[0]) == "pool api: round-robin · no health check"
    fresh = {**pool, "counters": {}, "servers": [{"name": "a1", "counters": "?"}]}  # none yet, or malformed
    assert pool_summary(fresh) == "pool api: round-robin · no health check · server SSL internal: 0 handshakes, 0 failed"
    assert pool_summary(fresh, fresh["servers"][0]) == (
        "pool api: round-robin · no health check · server SSL internal · server a1: TLS 0 handshakes, 0 failed")


async def test_enable_and_disable(static_app):
    app = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        await pilot.press("2")
        table = app.query_one("#pool-table", KeyedTable)
        await _select(pilot, table, "server:db/db2")
        await pilot.press("e", "y")
        await _select(pilot, table, "server:db/db1")
        await pilot.press("d", "tab", "enter")  # Tab moves from Cancel to the action button
        await app.workers.wait_for_complete()
        assert ("POST", "/api/v1/pools/db/servers/db2", {"state": "enabled"}) in app.source.requests
        assert ("POST", "/api/v1/pools/db/servers/db1", {"state": "disabled"}) in app.source.requests


async def test_action_on_a_pool_row_asks_for_a_server(static_app):
    app = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        await pilot.press("2")
        await _select(pilot, app.query_one("#pool-table", KeyedTable), "pool:web")
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmScreen)
        assert app.source.requests == []


async def test_weight_input(static_app):
    app = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        await pilot.press("2")
        await _select(pilot, app.query_one("#pool-table", KeyedTable), "server:web/web1")
        await pilot.press("w")
        assert isinstance(app.screen, WeightScreen)
        await pilot.press("backspace", "1", "0", "0", "1", "enter")  # out of range: refused in the dialog
        assert isinstance(app.screen, WeightScreen)
        assert "0..1000" in str(app.screen.query_one("#weight-error").render())
        # the configuration's whole range, above 256 too
        await pilot.press("backspace", "backspace", "backspace", "backspace", "5", "0", "0", "enter")
        await app.workers.wait_for_complete()
        assert ("POST", "/api/v1/pools/web/servers/web1", {"weight": 500}) in app.source.requests


async def _ask_weight_5_for_web1(app: DashboardApp, pilot) -> None:
    """On the Pools screen, set web1's weight to 5 in the dialog, and wait for the answer."""
    await _start(app, pilot)
    await pilot.press("2")
    await _select(pilot, app.query_one("#pool-table", KeyedTable), "server:web/web1")
    await pilot.press("w", "backspace", "5", "enter")
    await app.workers.wait_for_complete()
    await pilot.pause()


async def test_weight_refused_by_the_api_is_reported(static_app):
    replies = {("POST", "/api/v1/pools/web/servers/web1"): (400, {"error": "weight: must be an integer 0..1000"})}
    app = static_app(replies=replies)
    async with app.run_test(size=SIZE) as pilot:
        await _ask_weight_5_for_web1(app, pilot)
        assert not app.pending
        assert any("weight: must be an integer 0..1000" in str(n.message) for n in app._notifications)


async def test_a_refusal_is_reported_as_written_not_as_markup(static_app):
    error = "weight: got '[/w]' in [bold]servers[/bold]"
    replies = {("POST", "/api/v1/pools/web/servers/web1"): (400, {"error": error})}
    app = static_app(replies=replies)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await _ask_weight_5_for_web1(app, pilot)
        await pilot.pause()
        [toast] = app.screen.query("Toast")  # drawn, not failed on a stray closing tag
        assert error in str(toast.render())


async def test_close_tunnel(static_app):
    app = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        await pilot.press("3")
        await _select(pilot, app.query_one("#session-table", KeyedTable), "17")
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        assert "WebSocket tunnel 17" in app.screen.title_text
        await pilot.press("y")
        await app.workers.wait_for_complete()
        assert ("DELETE", "/api/v1/sessions/17", None) in app.source.requests


async def test_sort_keeps_the_cursor_on_the_same_session(static_app):
    app = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        await pilot.press("3")
        table = app.query_one("#session-table", KeyedTable)
        await _select(pilot, table, "17")
        await pilot.press("s")  # by idle time
        assert app.session_sort == "idle"
        assert table.keys() == ["23", "31", "17"]
        assert table.selected_key == "17"
        await pilot.press("s")  # by bytes
        assert table.keys() == ["31", "17", "23"]
        assert table.selected_key == "17"


async def test_filter_by_server(static_app):
    app = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        await pilot.press("3", "slash", *"chat1", "enter")
        assert app.query_one("#session-table", KeyedTable).keys() == ["17", "23"]
        await pilot.press("2")
        assert app.query_one("#pool-table", KeyedTable).keys() == ["pool:chat", "server:chat/chat1"]
        await pilot.press("escape")
        assert app.filter_text == ""
        assert len(app.query_one("#session-table", KeyedTable).keys()) == 3


async def test_reload_errors_are_shown(static_app):
    errors = ["appliance.toml: pool.web.method: must be one of round-robin, least-conn"]
    replies = {("POST", "/api/v1/reload"): (422, {"ok": False, "generation": 3, "errors": errors})}
    app = static_app(replies=replies)
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        await pilot.press("r")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, MessageScreen)
        assert app.screen.lines == errors
        await pilot.press("escape")
        assert not isinstance(app.screen, MessageScreen)


async def test_help_lists_every_binding(static_app):
    app = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        listed = {row[1] for row in app.screen.rows}
        assert {b.description for b in app.BINDINGS} <= listed
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_unreachable_shows_banner_and_recovers(static_app):
    app = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        app.source.unreachable = "admin API at unix:run/adc.sock: connection refused"
        await app.poll_once()
        await pilot.pause()
        banner = app.query_one("#banner")
        assert banner.has_class("-visible") and "DISCONNECTED" in str(banner.render())
        assert app.query_one("#tabs").has_class("-stale")
        assert app.query_one("#vs-table", KeyedTable).keys() == ["db", "secure", "web"]  # stale data kept
        app.source.unreachable = None
        await app.poll_once()
        await pilot.pause()
        assert not banner.has_class("-visible")
        assert not app.query_one("#tabs").has_class("-stale")


async def test_pause_and_quit(static_app):
    app = static_app()
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        await pilot.press("p")
        assert app.paused and "PAUSED" in str(app.query_one("#status-line").render())
        await pilot.press("p")
        assert not app.paused
        await pilot.press("2")
        await _select(pilot, app.query_one("#pool-table", KeyedTable), "server:web/web2")
        await pilot.press("n")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("q")  # quit works with a confirmation open
        await pilot.pause()
        assert not app.is_running
    assert app.return_code == 0
    assert app.source.requests == []  # nothing was confirmed


async def test_too_small_says_so(static_app):
    app = static_app()
    async with app.run_test(size=(60, 20)) as pilot:
        await _start(app, pilot)
        assert app.screen.has_class("-too-small")
        assert "needs at least 80×24" in str(app.query_one("#too-small").render())
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert not app.screen.has_class("-too-small")


async def test_data_polled_while_too_small_is_shown_once_enlarged_even_paused(static_app):
    app = static_app()
    async with app.run_test(size=(60, 20)) as pilot:
        await _start(app, pilot)  # polled while too small: nothing drawn
        assert app.query_one("#vs-table", KeyedTable).keys() == []
        await pilot.press("p")
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert app.paused and app.query_one("#vs-table", KeyedTable).keys() == ["db", "secure", "web"]


class _AnswersWithout:
    """A source whose admin API asks for a token that was not given (AdminClient with token=None)."""

    token = None

    async def request(self, method: str, path: str, body=None):
        return 401, {"error": "token required"}


async def test_a_missing_token_is_told_apart_from_a_refused_one():
    from adc.dashboard.source import fetch_snapshot
    from adc.runtime.admin_client import AdminUnreachable

    try:
        await fetch_snapshot(_AnswersWithout(), time.monotonic)
    except AdminUnreachable as exc:
        assert "asks for a token" in str(exc) and "--token" in str(exc)
    else:
        raise AssertionError("a 401 must not pass as a snapshot")


def test_the_events_screen_asks_for_as_many_events_as_it_shows():
    assert dict(ENDPOINTS)["events"] == f"/api/v1/events?limit={EVENTS_MAX}"


async def test_broken_answers_never_end_the_dashboard(static_app):
    bad = frame(0)
    bad["/api/v1/pools"] = {"pools": [{"name": "web", "servers": [{"name": 5, "last_check": "x"}, "junk"]}, 7]}
    bad["/api/v1/virtual_servers"] = {"virtual_servers": "nope"}
    bad["/api/v1/sessions"] = ["not", "an", "object"]
    app = static_app(frames=[bad])
    async with app.run_test(size=SIZE) as pilot:
        await _start(app, pilot)
        await pilot.press("2", "3", "4", "5")
        assert app.is_running


def test_rates_and_sparkline_are_computed_from_successive_polls():
    tracker = RateTracker()
    for f in FRAMES:
        answers = {k: f[p] for k, p in (("status", "/api/v1/status"), ("virtual_servers", "/api/v1/virtual_servers"))}
        tracker.update(Snapshot.from_answers(0.0, answers))
    web = tracker.get("web")
    assert web.requests_per_s == 300.0 and web.bytes_in_per_s == 180_000.0
    assert list(web.history) == [180_000.0 + 2_100_000.0]
    assert sparkline([0, 1, 2, 4], 4) == "▁▃▅█"
    assert sparkline([], 3) == "   "


def test_a_cut_address_keeps_its_port():
    assert middle_cut("127.0.0.1:8443", 14) == "127.0.0.1:8443"  # fits: unchanged
    assert middle_cut("127.0.0.1:8443", 10) == "127.…:8443"
    assert middle_cut("127.0.0.1:8443", 6) == "…:8443"
    assert middle_cut("127.0.0.1:8443", 5) == "…8443"
    assert middle_cut("127.0.0.1:8443", 4) == "127…"  # no room for the port: cut at the end
    assert middle_cut("[::1]:9000", 8) == "[:…:9000"
    assert middle_cut("0.0.0.0:80, [::]:8080", 9) == "0.0…:8080"  # several: the last port
    assert middle_cut("backend.internal", 8) == "backend…"  # no port: cut at the end
    assert middle_cut("a:b", 2) == "a…" and middle_cut("x", 0) == ""


def test_session_sort_orders():
    sessions = FRAMES[0]["/api/v1/sessions"]["sessions"]
    assert [s["id"] for s in sort_sessions(sessions, "age")] == [31, 17, 23]
    assert [s["id"] for s in sort_sessions(sessions, "idle")] == [23, 31, 17]
    assert [s["id"] for s in sort_sessions(sessions, "bytes")] == [31, 17, 23]


async def test_no_appliance_at_start_shows_banner(tmp_path):
    from adc.runtime.admin_client import AdminClient

    address = f"unix:{tmp_path}/missing.sock"
    app = DashboardApp(AdminClient(address), address=address, interval=0.1)
    app.animation_level = "none"
    async with app.run_test(size=SIZE) as pilot:
        banner = app.query_one("#banner")
        for _ in range(150):  # bounded: 15 s at most (a loaded machine runs the refreshes late)
            if banner.has_class("-visible") and app.failures >= 2:
                break
            await pilot.pause(0.1)
        assert banner.has_class("-visible") and app.failures >= 2  # it keeps retrying
        text = str(banner.render())
        assert "DISCONNECTED" in text and "socket not found" in text
        assert "no data" in str(app.query_one("#status-line").render())
        await pilot.press("2", "n")  # actions without data do not fail
        assert app.is_running


async def _certificates(app, pilot) -> KeyedTable:
    """Start the dashboard on its recorded polls and show the certificates tab."""
    await _start(app, pilot)
    await pilot.press("5")
    await pilot.pause()
    return app.query_one("#cert-table", KeyedTable)


async def test_text_from_the_appliance_is_shown_as_written_never_as_markup(static_app):
    """Names, paths and addresses come from the appliance's configuration and its peers:
    square brackets in them are text, not styles (a closing tag alone used to stop the dashboard)."""
    frames = copy.deepcopy(FRAMES)
    for recorded in frames:
        recorded["/api/v1/certificates"]["certificates"][0]["file"] = "/srv/adc/certs/[/old]/[bold]adc.pem"
    app = static_app(frames)
    async with app.run_test(size=(160, 24)) as pilot:
        table = await _certificates(app, pilot)
        key = "/srv/adc/certs/[/old]/[bold]adc.pem"
        assert key in table.keys()
        assert "/srv/adc/certs/[/old]/[bold]adc.pem" in _row_text(table, key)


async def test_a_revocation_list_is_flagged_days_before_its_next_update_not_weeks(static_app):
    """CRLs live a week or so: one with 6 days to go is fine, a certificate with 6 days left is not."""
    frames = copy.deepcopy(FRAMES)
    for recorded in frames:
        listed = recorded["/api/v1/certificates"]["certificates"]
        listed[1]["days_left"] = 6
        for name, days in (("crl.pem", 6), ("old-crl.pem", 2)):
            listed.append({"file": f"/srv/adc/certs/{name}", "used_by": ["profile https client_crl"],
                           "subject": "CRL, 1 revoked", "names": [], "issuer": "adc development CA",
                           "key_type": "CRL", "not_after": "2026-11-28T00:00:00Z", "days_left": days})
    app = static_app(frames)
    async with app.run_test(size=(160, 24)) as pilot:
        table = await _certificates(app, pilot)
        assert str(table.get_row("/srv/adc/certs/crl.pem")[1]) == "6"
        assert str(table.get_row("/srv/adc/certs/old-crl.pem")[1]) == "2 SOON"
        assert str(table.get_row("/srv/adc/certs/api.pem")[1]) == "6 SOON"
