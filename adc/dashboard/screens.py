"""Modal screens: confirmation (Cancel focused), weight input, messages and the key help."""

from __future__ import annotations

from typing import Iterable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Static

from adc.config.model import MAX_WEIGHT


class ConfirmScreen(ModalScreen[bool]):
    """Ask before a disruptive action. Cancel has the focus, so Enter does nothing harmful."""

    AUTO_FOCUS = "#cancel"
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("y", "confirm", "Confirm"),
        Binding("q", "app.quit", "Quit", show=False),
        Binding("left,right", "switch_focus", "Move", show=False),
    ]

    def __init__(self, title: str, detail: str, confirm_label: str, variant: str = "warning") -> None:
        super().__init__()
        self.title_text = title
        self.detail = detail
        self.confirm_label = confirm_label
        self.variant = variant

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(self.title_text, id="question", classes="dialog-title")
            yield Static(self.detail, id="detail")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", variant="default")
                yield Button(self.confirm_label, id="confirm", variant=self.variant)  # type: ignore[arg-type]

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed, "#confirm")
    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_switch_focus(self) -> None:
        self.focus_next()


class WeightScreen(ModalScreen["int | None"]):
    """Enter a new weight for a real server."""

    AUTO_FOCUS = "#weight"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, server: str, current: int) -> None:
        super().__init__()
        self.server = server
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(f"Weight of {self.server}", classes="dialog-title")
            yield Static(f"Current weight {self.current}. Enter 0..{MAX_WEIGHT} (0 takes no new connections).")
            yield Input(str(self.current), id="weight", type="integer", max_length=4)
            yield Static("", id="weight-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Set", id="set", variant="primary")

    def _value(self) -> int | None:
        text = self.query_one("#weight", Input).value.strip()
        try:
            value = int(text)
        except ValueError:
            value = -1
        if not 0 <= value <= MAX_WEIGHT:
            self.query_one("#weight-error", Static).update(f"weight must be an integer 0..{MAX_WEIGHT}")
            return None
        return value

    @on(Input.Submitted)
    @on(Button.Pressed, "#set")
    def submit(self) -> None:
        value = self._value()
        if value is not None:
            self.dismiss(value)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class MessageScreen(ModalScreen[None]):
    """A title and lines of text (e.g. configuration errors from a refused reload)."""

    AUTO_FOCUS = "#ok"
    BINDINGS = [Binding("escape,enter,q", "close", "Close")]

    def __init__(self, title: str, lines: Iterable[str], error: bool = True) -> None:
        super().__init__()
        self.title_text = title
        self.lines = list(lines)
        self.error = error

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog wide"):
            yield Label(self.title_text, classes="dialog-title" + (" error" if self.error else ""))
            with VerticalScroll(id="message-lines"):
                yield Static(Text("\n".join(self.lines) or "(no details)"))
            with Horizontal(classes="buttons"):
                yield Button("OK", id="ok", variant="primary")

    @on(Button.Pressed, "#ok")
    def action_close(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key binding of the dashboard, generated from BINDINGS so nothing is missing."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close help")]

    def __init__(self, rows: Iterable[tuple[str, str, str]]) -> None:
        super().__init__()
        self.rows = list(rows)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog wide"):
            yield Label("Keys  (Esc or ? closes)", classes="dialog-title")
            table: DataTable = DataTable(id="help-table", cursor_type="row", show_cursor=False)
            table.add_columns("key", "action", "where")
            for row in self.rows:
                table.add_row(*row)
            yield table

    def action_close(self) -> None:
        self.dismiss(None)
