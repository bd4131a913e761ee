"""`adc dashboard`: a Textual TUI that operates the appliance through the admin API only.

Polling runs in an exclusive worker; the next poll is scheduled only when the current
one has ended, so a slow or dead appliance never piles up requests and never blocks
typing. Tables are keyed by stable ids (virtual server, pool/server, session id,
event id) and diffed, so the cursor follows the selected item across refreshes.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, Callable

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import Resize
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Sparkline, Static, TabbedContent, TabPane

from adc.runtime.admin_client import AdminClient, AdminUnreachable, admin_address_from_config

from .model import (
    CERT_WARN_DAYS,
    CRL_WARN_DAYS,
    EVENTS_MAX,
    SESSION_SORTS,
    SPARK_WINDOW_SAMPLES,
    RateTracker,
    Snapshot,
    clock_time,
    human_bytes,
    human_duration,
    human_rate,
    pool_summary,
    server_label,
    sort_sessions,
    sparkline,
    vs_summary,
)
from .screens import ConfirmScreen, HelpScreen, MessageScreen, WeightScreen
from .source import Source, fetch_snapshot
from .widgets import Address, Banner, EventTable, KeyedTable, StatusLine, join, styled

POLL_INTERVAL_S = 1.0
MIN_WIDTH, MIN_HEIGHT = 80, 24
PENDING_TIMEOUT_S = 10.0
OVERVIEW_SORTS: tuple[str, ...] = ("name", "connections", "requests/s", "throughput")

TABS: tuple[tuple[str, str], ...] = (
    ("overview", "1 Overview"),
    ("pools", "2 Pools"),
    ("tunnels", "3 Tunnels"),
    ("events", "4 Events"),
    ("certificates", "5 Certificates"),
)

# which tab each action applies to (None: everywhere); used for the footer and for help
ACTION_TABS: dict[str, tuple[str, ...]] = {
    "enable": ("pools",),
    "disable": ("pools",),
    "drain": ("pools",),
    "weight": ("pools",),
    "close_session": ("tunnels",),
    "sort": ("overview", "tunnels"),
}


class DashboardApp(App[int]):
    """The adc dashboard. `source` answers admin API requests (AdminClient or StaticSource)."""

    CSS_PATH = "adc.tcss"
    TITLE = "adc dashboard"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("1", "show_tab('overview')", "Overview", show=False),
        Binding("2", "show_tab('pools')", "Pools", show=False),
        Binding("3", "show_tab('tunnels')", "Tunnels", show=False),
        Binding("4", "show_tab('events')", "Events", show=False),
        Binding("5", "show_tab('certificates')", "Certificates", show=False),
        Binding("e", "enable", "Enable"),
        Binding("d", "disable", "Disable"),
        Binding("n", "drain", "Drain"),
        Binding("w", "weight", "Weight"),
        Binding("x", "close_session", "Close"),
        Binding("s", "sort", "Sort"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("r", "reload", "Reload"),
        Binding("p", "pause", "Pause"),
        Binding("f5", "refresh_now", "Refresh now", show=False),
        Binding("t", "toggle_theme", "Light/dark", show=False),
    ]

    def __init__(
        self,
        source: Source,
        *,
        address: str = "",
        interval: float | None = POLL_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.source = source
        self.address = address or getattr(source, "address", "") or "static data"
        self.interval = interval
        self.clock = clock
        self.snapshot: Snapshot | None = None
        self.rates = RateTracker()
        self.connected = False
        self.error: str | None = None
        self.failures = 0
        self.last_attempt: float | None = None
        self.paused = False
        self.filter_text = ""
        self.session_sort = SESSION_SORTS[0]
        self.overview_sort = OVERVIEW_SORTS[0]
        self.pending: dict[tuple[str, str], tuple[str, float]] = {}
        self._poll_timer: Any = None
        self._dirty = False
        self.polls = 0

    # ----------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        with Vertical(id="main"):
            yield StatusLine(id="status-line")
            yield Banner(id="banner")
            with TabbedContent(initial="overview", id="tabs"):
                with TabPane(TABS[0][1], id="overview"):
                    yield Static("", id="throughput-label")
                    yield Sparkline([], id="throughput")
                    yield Static("", id="vs-label")
                    yield KeyedTable(
                        [("name", "virtual server", 6), ("state", "state"), ("conns", "conns"), ("rps", "req/s"),
                         ("tunnels", "tun"), ("in", "in/s"), ("out", "out/s"), ("trend", "trend"),
                         ("profile", "profile", 5), ("listen", "listen", 5)],
                        id="vs-table",
                    )
                with TabPane(TABS[1][1], id="pools"):
                    yield Static("", id="pool-label")
                    yield KeyedTable(
                        [("name", "pool / server", 9), ("status", "status"), ("role", "role"),
                         ("weight", "weight"), ("conns", "conns"), ("tunnels", "tun"),
                         ("check", "last check", 13), ("latency", "ms"), ("address", "address", 8)],
                        id="pool-table",
                    )
                with TabPane(TABS[2][1], id="tunnels"):
                    yield Static("", id="sessions-label")
                    yield KeyedTable(
                        [("id", "id"), ("kind", "kind"), ("vs", "virtual server", 8), ("server", "pool/server", 11),
                         ("age", "age"), ("idle", "idle"), ("in", "in"), ("out", "out"), ("client", "client", 9)],
                        id="session-table",
                    )
                with TabPane(TABS[3][1], id="events"):
                    yield EventTable(
                        [("time", "time"), ("level", "level"), ("kind", "kind", 8), ("message", "message", 20)],
                        id="event-table",
                    )
                with TabPane(TABS[4][1], id="certificates"):
                    yield KeyedTable(
                        [("names", "names", 12), ("days", "days left"), ("not_after", "expires"),
                         ("issuer", "issuer", 8), ("used_by", "used by", 8), ("file", "file", 10)],
                        id="cert-table",
                    )
            yield Input(placeholder="filter: virtual server, pool, server, client, text (Esc clears)", id="filter")
            yield Footer(compact=True)
        yield Static("", id="too-small")

    def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self._render_status()
        if self.interval is not None:
            self.poll()
            self.set_interval(1.0, self._render_status)
        self._check_size(self.size.width, self.size.height)

    def on_resize(self, event: Resize) -> None:
        self._check_size(event.size.width, event.size.height)

    def _check_size(self, width: int, height: int) -> None:
        small = width < MIN_WIDTH or height < MIN_HEIGHT
        self.screen.set_class(small, "-too-small")
        if small:
            self.query_one("#too-small", Static).update(
                f"Terminal too small: {width}×{height}.\nadc dashboard needs at least {MIN_WIDTH}×{MIN_HEIGHT}.\n"
                "Enlarge the window, or press q to quit."
            )
        elif self._dirty:
            self._render_all()  # what came while the terminal was too small (paused, it would wait)

    # ---------------------------------------------------------------- polling
    @work(exclusive=True, group="poll", exit_on_error=False)
    async def poll(self) -> None:
        """One poll; schedules the next only after this one has ended."""
        await self.poll_once()
        if self.interval is not None and not self.paused:
            self._poll_timer = self.set_timer(self.interval, self.poll)

    async def poll_once(self) -> None:
        """Fetch a snapshot and show it (or show the disconnection). Never raises."""
        if self._poll_timer is not None:
            self._poll_timer.stop()
            self._poll_timer = None
        self.last_attempt = self.clock()
        try:
            snap = await fetch_snapshot(self.source, self.clock)
        except asyncio.CancelledError:
            raise
        except AdminUnreachable as exc:
            self._disconnected(str(exc))
        except Exception as exc:  # a broken answer must never end the dashboard
            self._disconnected(f"{type(exc).__name__}: {exc}")
        else:
            self._connected(snap)
        self.polls += 1

    def _connected(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.connected = True
        self.error = None
        self.failures = 0
        try:
            self.rates.update(snap)
            self._expire_pending(snap)
            self._render_all()
        except Exception as exc:  # an unexpected answer shape must not end the dashboard
            self.log.error("cannot show the admin API answer", exc)
            self.notify(f"cannot show the admin API answer: {type(exc).__name__}: {exc}",
                        severity="error", timeout=5, markup=False)

    def _disconnected(self, message: str) -> None:
        self.connected = False
        self.error = message
        self.failures += 1
        self._render_banner()
        self._render_status()

    def _expire_pending(self, snap: Snapshot) -> None:
        states = {
            (str(p.get("name")), str(s.get("name"))): s for p in snap.pools for s in p.get("servers") or []
        }
        for key, (target, since) in list(self.pending.items()):
            server = states.get(key)
            if server is None or self.clock() - since > PENDING_TIMEOUT_S:
                del self.pending[key]
            elif target.startswith("weight:"):
                if str(server.get("weight")) == target[7:]:
                    del self.pending[key]
            elif server.get("state") == target:
                del self.pending[key]

    # -------------------------------------------------------------- rendering
    def _render_all(self) -> None:
        if isinstance(self.screen, ModalScreen) or self.screen.has_class("-too-small"):
            self._dirty = True  # no rendering under a modal; done when it closes
            self._render_status()
            return
        self._dirty = False
        self._render_status()
        self._render_banner()
        if self.snapshot is None:
            return
        self._render_overview()
        self._render_pools()
        self._render_sessions()
        self._render_events()
        self._render_certificates()

    def _color(self, name: str) -> str:
        return self.theme_variables.get(f"text-{name}") or self.theme_variables.get(name, "")

    def _render_status(self) -> None:
        snap = self.snapshot
        parts: list[Text | str] = []
        st = snap.status if snap else {}
        parts.append(styled(str(st.get("name") or "adc"), f"bold {self._color('primary')}"))
        if st:
            parts.append(f"v{st.get('version', '?')}")
            parts.append(f"up {human_duration(st.get('uptime'))}")
            parts.append(f"gen {st.get('generation', '?')}")
            totals = st.get("totals") or {}
            parts.append(f"conns {totals.get('conn_current', 0)}")
            parts.append(f"tunnels {totals.get('tunnels_current', 0)}")
        if snap is not None:
            age = max(0.0, self.clock() - snap.taken)
            style = "" if self.connected else f"bold {self._color('error')}"
            parts.append(styled(f"data {human_duration(age)} old", style))
        else:
            parts.append(styled("connecting…" if self.error is None else "no data", "italic"))
        if self.paused:
            parts.append(styled(" PAUSED ", f"bold reverse {self._color('warning')}"))
        if self.filter_text:
            parts.append(styled(f"filter: {self.filter_text}", f"bold {self._color('accent')}"))
        self.query_one("#status-line", StatusLine).update(join(parts))

    def _render_banner(self) -> None:
        banner = self.query_one("#banner", Banner)
        tabs = self.query_one("#tabs", TabbedContent)
        down = not self.connected and self.error is not None
        banner.set_class(down, "-visible")
        tabs.set_class(down and self.snapshot is not None, "-stale")
        if down:
            when = f"; showing data from {clock_time(self.snapshot.taken)}" if self.snapshot else ""
            retry = "paused: press p to resume" if self.paused else f"retrying every {self.interval or 1:g}s"
            banner.update(
                Text.assemble(
                    ("DISCONNECTED ", "bold"),
                    f"{self.error} — {retry} (attempt {self.failures}){when}",
                )
            )

    def _matches(self, *texts: Any) -> bool:
        if not self.filter_text:
            return True
        needle = self.filter_text.lower()
        return any(needle in str(t).lower() for t in texts if t is not None)

    def _render_overview(self) -> None:
        assert self.snapshot is not None
        rows = []
        servers = self.snapshot.virtual_servers
        decorated = []
        for vs in servers:
            name = str(vs.get("name", "?"))
            c = vs.get("counters") or {}
            r = self.rates.get(name)
            decorated.append((vs, name, c, r))
        if self.overview_sort == "connections":
            decorated.sort(key=lambda d: (-float(d[2].get("conn_current", 0) or 0), d[1]))
        elif self.overview_sort == "requests/s":
            decorated.sort(key=lambda d: (-d[3].requests_per_s, d[1]))
        elif self.overview_sort == "throughput":
            decorated.sort(key=lambda d: (-(d[3].bytes_in_per_s + d[3].bytes_out_per_s), d[1]))
        else:
            decorated.sort(key=lambda d: d[1])
        for vs, name, c, r in decorated:
            listen = vs.get("bound") or vs.get("listen") or []
            if not self._matches(name, vs.get("profile"), vs.get("pool"), *listen):
                continue
            state = str(vs.get("state", "?"))
            state_style = self._color("success") if state == "listening" else self._color("error")
            rows.append(
                (
                    name,
                    (
                        Text(name, style="bold"),
                        styled(state, state_style),
                        str(c.get("conn_current", 0)),
                        f"{r.requests_per_s:.1f}",
                        str(c.get("tunnels_current", 0)),
                        human_bytes(r.bytes_in_per_s),
                        human_bytes(r.bytes_out_per_s),
                        styled(sparkline(r.history, 8), self._color("primary")),
                        str(vs.get("profile", "")),
                        Address(", ".join(map(str, listen))),
                    ),
                )
            )
        self.query_one("#vs-table", KeyedTable).sync(rows)
        self._render_vs_label()
        history = list(self.rates.total_history)
        self.query_one("#throughput", Sparkline).data = [0.0] * (SPARK_WINDOW_SAMPLES - len(history)) + history
        current = history[-1] if history else 0.0
        peak = max(history) if history else 0.0
        self.query_one("#throughput-label", Static).update(
            f"throughput {human_rate(current)}, peak {human_rate(peak)} in the last {len(history)} polls"
            f"   sort: {self.overview_sort} (s)"
        )

    @on(KeyedTable.RowHighlighted, "#vs-table")
    def _render_vs_label(self) -> None:
        """The details of the virtual server under the cursor (TLS handshakes among them)."""
        label = self.query_one("#vs-label", Static)
        key = self.query_one("#vs-table", KeyedTable).selected_key
        servers = self.snapshot.virtual_servers if self.snapshot is not None else []
        vs = next((v for v in servers if str(v.get("name", "?")) == key), None) if key else None
        label.update(Text(vs_summary(vs, self.rates.get(str(key)))) if vs is not None else "")

    def _status_cell(self, pool: str, server: dict[str, Any]) -> Text:
        label = server_label(server)
        color = {
            "UP": self._color("success"),
            "DOWN": self._color("error"),
            "DRAIN": self._color("warning"),
            "DISABLED": "dim",
        }.get(label, "")
        pending = self.pending.get((pool, str(server.get("name"))))
        if pending is not None and not pending[0].startswith("weight:"):
            target = {"enabled": "ENABLE", "disabled": "DISABLE", "draining": "DRAIN"}.get(pending[0], pending[0])
            return Text.assemble((label, f"bold {color}"), (f"→{target}…", "italic"))
        return Text(label, style=f"bold {color}")

    def _render_pools(self) -> None:
        assert self.snapshot is not None
        rows = []
        for pool in self.snapshot.pools:
            pname = str(pool.get("name", "?"))
            servers = [s for s in pool.get("servers") or [] if isinstance(s, dict)]
            shown = [s for s in servers if self._matches(pname, s.get("name"), s.get("address"))]
            if not shown and not self._matches(pname):
                continue
            up = sum(1 for s in servers if s.get("status") == "up")
            pc = pool.get("counters") or {}
            health = pool.get("health") or "none"
            rows.append(
                (
                    f"pool:{pname}",
                    (
                        Text(f"▾ {pname}", style=f"bold {self._color('primary')}"),
                        styled(f"{up}/{len(servers)} up",
                               self._color("success") if up else self._color("error")),
                        "",
                        "",
                        str(pc.get("conn_current", "")),
                        str(pc.get("tunnels_current", "")),
                        f"{pool.get('method', '')}/{health}",
                        "",
                        "",
                    ),
                )
            )
            for s in shown:
                sname = str(s.get("name", "?"))
                check = s.get("last_check") or {}
                ok = check.get("ok")
                reason = str(check.get("reason", "")) if check else "-"
                latency = check.get("latency_ms")
                weight = s.get("weight", 0)
                eff = s.get("effective_weight", weight)
                weight_text = Text(f"{weight}")
                if isinstance(eff, (int, float)) and isinstance(weight, (int, float)) and eff != weight:
                    weight_text = Text(f"{eff:g}/{weight}↗", style=self._color("warning"))
                pending = self.pending.get((pname, sname))
                if pending is not None and pending[0].startswith("weight:"):
                    weight_text = Text.assemble(weight_text, (f"→{pending[0][7:]}…", "italic"))
                rows.append(
                    (
                        f"server:{pname}/{sname}",
                        (
                            Text(f"  {sname}"),
                            self._status_cell(pname, s),
                            styled("backup", self._color("secondary")) if s.get("backup") else "",
                            weight_text,
                            str(s.get("active", 0)),
                            str(s.get("tunnels", 0)),
                            styled(reason[:20], "" if ok or not check else self._color("error")),
                            f"{latency:.1f}" if isinstance(latency, (int, float)) else "-",
                            Address(str(s.get("address", ""))),
                        ),
                    )
                )
        self.query_one("#pool-table", KeyedTable).sync(rows)
        self._render_pool_label()

    @on(KeyedTable.RowHighlighted, "#pool-table")
    def _render_pool_label(self) -> None:
        """The settings of the pool under the cursor (on its row or one of its servers')."""
        label = self.query_one("#pool-label", Static)
        key = self.query_one("#pool-table", KeyedTable).selected_key or ""
        kind, _, rest = key.partition(":")
        name = rest if kind == "pool" else rest.partition("/")[0]
        pools = self.snapshot.pools if self.snapshot is not None else []
        pool = next((p for p in pools if str(p.get("name")) == name), None) if key else None
        server = None
        if pool is not None and kind == "server":
            sname = rest.partition("/")[2]
            server = next((s for s in pool.get("servers") or () if isinstance(s, dict) and str(s.get("name")) == sname), None)
        label.update(Text(pool_summary(pool, server)) if pool is not None else "")

    def _render_sessions(self) -> None:
        assert self.snapshot is not None
        rows = []
        for s in sort_sessions(self.snapshot.sessions, self.session_sort):
            target = f"{s.get('pool', '')}/{s.get('server', '')}"
            if not self._matches(s.get("virtual_server"), s.get("pool"), s.get("server"), s.get("client"), target):
                continue
            kind = str(s.get("kind", "?"))
            closing = s.get("client_half_closed") or s.get("server_half_closed")
            rows.append(
                (
                    str(s.get("id")),
                    (
                        str(s.get("id")),
                        styled(kind, self._color("accent") if kind == "tunnel" else self._color("secondary")),
                        str(s.get("virtual_server", "")),
                        target,
                        human_duration(s.get("age")),
                        human_duration(s.get("idle")),
                        human_bytes(s.get("bytes_in", 0) or 0),
                        human_bytes(s.get("bytes_out", 0) or 0),
                        styled(str(s.get("client", "")) + (" (half-closed)" if closing else ""), ""),
                    ),
                )
            )
        self.query_one("#session-table", KeyedTable).sync(rows)
        total = len(self.snapshot.sessions)
        tunnels = sum(1 for s in self.snapshot.sessions if s.get("kind") == "tunnel")
        self.query_one("#sessions-label", Static).update(
            f"{total} live: {tunnels} WebSocket tunnel(s), {total - tunnels} Layer-4 session(s)"
            f"   sort: {self.session_sort} (s)   shown: {len(rows)}"
        )

    def _render_events(self) -> None:
        assert self.snapshot is not None
        rows = []
        for ev in self.snapshot.events[:EVENTS_MAX]:
            level = str(ev.get("level", "info"))
            color = {"error": self._color("error"), "warning": self._color("warning")}.get(level, "")
            if not self._matches(ev.get("message"), ev.get("kind"), ev.get("pool"), ev.get("server")):
                continue
            rows.append(
                (
                    str(ev.get("id")),
                    (
                        clock_time(ev.get("time")),
                        styled(level.upper(), f"bold {color}" if color else ""),
                        str(ev.get("kind", "")),
                        styled(str(ev.get("message", "")), color),
                    ),
                )
            )
        self.query_one("#event-table", EventTable).sync(rows)

    def _render_certificates(self) -> None:
        assert self.snapshot is not None
        rows = []
        certs = sorted(self.snapshot.certificates, key=lambda c: (c.get("days_left", 0) or 0, str(c.get("file"))))
        for cert in certs:
            names = ", ".join(map(str, cert.get("names") or [])) or str(cert.get("subject", ""))
            if not self._matches(names, cert.get("file"), cert.get("issuer"), cert.get("subject")):
                continue
            days = cert.get("days_left")
            if isinstance(days, (int, float)) and days < 0:
                days_cell = styled(f"EXPIRED {-int(days)}d ago", f"bold reverse {self._color('error')}")
            elif isinstance(days, (int, float)) and days <= (
                CRL_WARN_DAYS if cert.get("key_type") == "CRL" else CERT_WARN_DAYS
            ):
                days_cell = styled(f"{int(days)} SOON", f"bold reverse {self._color('warning')}")
            else:
                days_cell = styled(str(days), self._color("success"))
            rows.append(
                (
                    str(cert.get("file")),
                    (
                        names,
                        days_cell,
                        str(cert.get("not_after", ""))[:10],
                        str(cert.get("issuer", "")),
                        ", ".join(map(str, cert.get("used_by") or [])),
                        str(cert.get("file", "")),
                    ),
                )
            )
        self.query_one("#cert-table", KeyedTable).sync(rows)

    def _theme_changed(self, _theme: Any) -> None:
        # colours of the cells come from the theme: redraw them
        if self.snapshot is not None:
            self.call_after_refresh(self._render_all)

    # --------------------------------------------------------------- actions
    @property
    def active_tab(self) -> str:
        return self.query_one("#tabs", TabbedContent).active

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in _DASHBOARD_ACTIONS and isinstance(self.screen, ModalScreen):
            return False  # one dialog at a time; the dialog's own keys apply
        tabs = ACTION_TABS.get(action)
        if tabs is None:
            return True
        try:
            return self.active_tab in tabs
        except Exception:
            return False

    @on(TabbedContent.TabActivated)
    def _tab_changed(self) -> None:
        self.refresh_bindings()
        table = self._active_table()
        if table is not None:
            table.focus()

    def _active_table(self) -> KeyedTable | None:
        ids = {"overview": "#vs-table", "pools": "#pool-table", "tunnels": "#session-table",
               "events": "#event-table", "certificates": "#cert-table"}
        tab = self.active_tab
        return self.query_one(ids[tab], KeyedTable) if tab in ids else None

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab

    def action_help(self) -> None:
        rows = []
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            key = binding.key_display or binding.key
            where = ", ".join(ACTION_TABS.get(binding.action.split("(")[0], ())) or "everywhere"
            rows.append((key, binding.description, where))
        self.push_screen(HelpScreen(rows), self._after_modal)

    def _after_modal(self, _result: Any = None) -> None:
        if self._dirty:
            self._render_all()

    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused and self.interval is not None:
            self.poll()
        elif self._poll_timer is not None:
            self._poll_timer.stop()
            self._poll_timer = None
        self._render_status()
        self._render_banner()

    def action_refresh_now(self) -> None:
        if self.interval is not None and not self.paused:
            self.poll()
        else:
            self.run_worker(self.poll_once(), group="poll", exclusive=True, exit_on_error=False)

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-visible")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("-visible")
        self.filter_text = ""
        self._render_all()
        table = self._active_table()
        if table is not None:
            table.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self._render_all()

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.remove_class("-visible")
        table = self._active_table()
        if table is not None:
            table.focus()

    def action_sort(self) -> None:
        if self.active_tab == "tunnels":
            i = SESSION_SORTS.index(self.session_sort)
            self.session_sort = SESSION_SORTS[(i + 1) % len(SESSION_SORTS)]
        else:
            i = OVERVIEW_SORTS.index(self.overview_sort)
            self.overview_sort = OVERVIEW_SORTS[(i + 1) % len(OVERVIEW_SORTS)]
        self.notify(f"sorted by {self.session_sort if self.active_tab == 'tunnels' else self.overview_sort}",
                    timeout=2)
        self._render_all()

    def _selected_server(self) -> tuple[str, str, dict[str, Any]] | None:
        """(pool, server, server JSON) under the cursor, copied at keypress time."""
        key = self.query_one("#pool-table", KeyedTable).selected_key
        if not key or not key.startswith("server:") or self.snapshot is None:
            self.notify("Select a real server first (arrow keys on the Pools screen).", severity="warning")
            return None
        pool, _, server = key[len("server:"):].partition("/")
        for p in self.snapshot.pools:
            if p.get("name") == pool:
                for s in p.get("servers") or []:
                    if s.get("name") == server:
                        return pool, server, dict(s)
        return None

    def action_enable(self) -> None:
        self._server_state("enabled")

    def action_disable(self) -> None:
        self._server_state("disabled")

    def action_drain(self) -> None:
        self._server_state("draining")

    def _server_state(self, state: str) -> None:
        picked = self._selected_server()
        if picked is None:
            return
        pool, server, info = picked
        verb = {"enabled": "Enable", "disabled": "Disable", "draining": "Drain"}[state]
        detail = {
            "enabled": "It will receive new connections again.",
            "disabled": "It receives no new connections; live connections and tunnels are left to finish.",
            "draining": "It receives no new connections (persistent clients move elsewhere); "
                        "live connections and tunnels finish normally.",
        }[state]
        live = f" It has {info.get('active', 0)} connection(s) and {info.get('tunnels', 0)} tunnel(s) now."

        def done(confirmed: bool | None) -> None:
            if confirmed:
                self.pending[(pool, server)] = (state, self.clock())
                self._render_all()
                self._send("POST", f"/api/v1/pools/{pool}/servers/{server}", {"state": state},
                           f"{verb.lower()} {pool}/{server}", (pool, server))
            else:
                self._after_modal()

        self.push_screen(
            ConfirmScreen(f"{verb} real server {server} in pool {pool}?", detail + live, verb,
                          "success" if state == "enabled" else "warning"),
            done,
        )

    def action_weight(self) -> None:
        picked = self._selected_server()
        if picked is None:
            return
        pool, server, info = picked

        def done(weight: int | None) -> None:
            if weight is None:
                self._after_modal()
                return
            self.pending[(pool, server)] = (f"weight:{weight}", self.clock())
            self._render_all()
            self._send("POST", f"/api/v1/pools/{pool}/servers/{server}", {"weight": weight},
                       f"set weight of {pool}/{server} to {weight}", (pool, server))

        current = info.get("weight", 1)
        self.push_screen(WeightScreen(f"{pool}/{server}", current if isinstance(current, int) else 1), done)

    def action_close_session(self) -> None:
        key = self.query_one("#session-table", KeyedTable).selected_key
        session = None
        if key is not None and self.snapshot is not None:
            session = next((s for s in self.snapshot.sessions if str(s.get("id")) == key), None)
        if session is None:
            self.notify("Select a tunnel or session first (Tunnels screen).", severity="warning")
            return
        what = "WebSocket tunnel" if session.get("kind") == "tunnel" else "Layer-4 session"
        sid = session.get("id")

        def done(confirmed: bool | None) -> None:
            if confirmed:
                self._send("DELETE", f"/api/v1/sessions/{sid}", None, f"close {what} {sid}", None)
            else:
                self._after_modal()

        self.push_screen(
            ConfirmScreen(
                f"Close {what} {sid}?",
                f"{session.get('client')} → {session.get('virtual_server')} → "
                f"{session.get('pool')}/{session.get('server')}. Both sides are closed.",
                "Close",
                "error",
            ),
            done,
        )

    def action_reload(self) -> None:
        def done(confirmed: bool | None) -> None:
            if confirmed:
                self._reload()
            else:
                self._after_modal()

        self.push_screen(
            ConfirmScreen(
                "Reload the configuration?",
                "The appliance re-reads its configuration file. If it is invalid, nothing changes "
                "and the errors are shown.",
                "Reload",
                "primary",
            ),
            done,
        )

    @work(group="action", exit_on_error=False)
    async def _reload(self) -> None:
        try:
            status, body = await self.source.request("POST", "/api/v1/reload", {})
        except Exception as exc:
            self.notify(f"reload failed: {exc}", severity="error", timeout=6, markup=False)
            return
        body = body if isinstance(body, dict) else {"error": str(body)}
        if status == 200 and body.get("ok", True):
            changes = body.get("changes") or []
            self.notify(f"configuration reloaded: generation {body.get('generation', '?')}"
                        + (f", {len(changes)} change(s)" if changes else ", no changes"), timeout=4)
            self.action_refresh_now()
        else:
            errors = body.get("errors") or [body.get("error") or f"HTTP {status}"]
            self.push_screen(
                MessageScreen(f"Reload refused (HTTP {status}): configuration unchanged", map(str, errors)),
                self._after_modal,
            )

    @work(group="action", exit_on_error=False)
    async def _send(self, method: str, path: str, body: Any, what: str, pending_key: tuple[str, str] | None) -> None:
        try:
            status, answer = await self.source.request(method, path, body)
        except Exception as exc:  # unreachable or a broken answer: report, never crash
            status, answer = 0, {"error": str(exc) or type(exc).__name__}
        if 200 <= status < 300:
            self.notify(f"{what}: done", timeout=3)
        else:
            if pending_key is not None:
                self.pending.pop(pending_key, None)
            message = answer.get("error") if isinstance(answer, dict) else answer
            # the appliance's words, as written (not markup)
            self.notify(f"{what} failed: {message or f'HTTP {status}'}", severity="error", timeout=6, markup=False)
        self.action_refresh_now()


_DASHBOARD_ACTIONS = frozenset(
    b.action.split("(")[0] for b in DashboardApp.BINDINGS if isinstance(b, Binding) and b.action != "quit"
)


def main(args: Any) -> int:
    """Entry point of `adc dashboard`: args has .file, .admin and .token."""
    token = getattr(args, "token", None)
    address = getattr(args, "admin", None)
    if not address:
        path = getattr(args, "file", None) or "appliance.toml"
        try:
            address, config_token = admin_address_from_config(path)
        except (OSError, ValueError) as exc:
            print(f"adc dashboard: {exc}", file=sys.stderr)
            print("adc dashboard: give the admin address with --admin unix:PATH or --admin host:port",
                  file=sys.stderr)
            return 2
        token = token or config_token
    client = AdminClient(address, token)
    app = DashboardApp(client, address=address)
    app.run()
    return 0
