"""Dashboard widgets: a DataTable diffed by stable row keys, the status line and the banner."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from rich.cells import cell_len, set_cell_size
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Static
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowDoesNotExist

Cell = Any  # str or rich Text
Row = tuple[str, Sequence[Cell]]


class KeyedTable(DataTable):
    """A DataTable whose rows are keyed by a stable id and updated by difference.

    `sync(rows)` updates only the cells that changed, adds new keys and removes stale
    ones, then restores the requested order; the cursor follows the selected key,
    not the row index.

    A column given as `(key, label, min_width)` is elastic: when the table is wider
    than the space it has (an 80-column terminal), elastic columns give way, the last
    first, down to `min_width`, and their cells end in an ellipsis (an `Address` cell
    keeps its port instead); what is left over scrolls sideways as before.
    """

    DEFAULT_CSS = """
    KeyedTable { height: 1fr; }
    """

    def __init__(self, columns: Iterable[tuple[str, str] | tuple[str, str, int]], **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        spec = tuple(columns)
        self._column_spec = tuple((c[0], c[1]) for c in spec)
        self._min_widths: dict[str, int] = {c[0]: c[2] for c in spec if len(c) == 3}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for key, label in self._column_spec:
            self.add_column(label, key=key)

    def on_resize(self) -> None:
        self.call_after_refresh(self.fit_columns)

    def fit_columns(self) -> None:
        """Narrow the elastic columns (see the class) to the table's width, or let them widen again."""
        if not self._min_widths or not self.columns:
            return
        available = self.scrollable_content_region.width
        if available <= 0:
            return
        pad = 2 * self.cell_padding
        excess = sum(c.content_width + pad for c in self.ordered_columns) - available
        narrowed: dict[str, int] = {}
        for key, _ in reversed(self._column_spec):
            if excess <= 0:
                break
            if key in self._min_widths:
                column = self.columns[ColumnKey(key)]
                cut = min(excess, column.content_width - self._min_widths[key])
                if cut > 0:
                    narrowed[key] = column.content_width - cut
                    excess -= cut
        changed = False
        for column in self.ordered_columns:
            width = narrowed.get(str(column.key.value))
            auto = width is None
            if column.auto_width != auto or (width is not None and column.width != width):
                column.auto_width = auto
                column.width = width if width is not None else 0
                changed = True
        if changed:
            # widths are part of neither the render caches' keys nor the virtual size
            self._require_update_dimensions = True
            self.notify_style_update()

    def _cells(self, cells: Sequence[Cell]) -> list[Cell]:
        """Cells as the table keeps them. A string is text as written: names, paths and
        reasons come from the appliance and its peers, and the table would read a string
        as markup (a stray "[/x]" fails the whole view). In elastic columns text ends in an
        ellipsis where it is cut."""
        out: list[Cell] = []
        for index, cell in enumerate(cells):
            elastic = index < len(self._column_spec) and self._column_spec[index][0] in self._min_widths
            if isinstance(cell, str):
                cell = Text(cell, overflow="ellipsis" if elastic else None)
            elif elastic and isinstance(cell, Text):
                cell = cell.copy()
                cell.overflow = "ellipsis"
            out.append(cell)
        return out

    @property
    def column_keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self._column_spec)

    @property
    def selected_key(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            return self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value
        except (CellDoesNotExist, RowDoesNotExist):
            return None

    def keys(self) -> list[str]:
        return list(self._order)

    def sync(self, rows: Sequence[Row]) -> None:
        """Make the table show exactly `rows`, in this order, changing as little as possible."""
        selected = self.selected_key
        at_top = self.cursor_row == 0
        rows = [(key, self._cells(cells)) for key, cells in rows]
        wanted = {key: cells for key, cells in rows}
        columns = self.column_keys
        with self.app.batch_update():
            for key in [k for k in self._order if k not in wanted]:
                try:
                    self.remove_row(key)
                except RowDoesNotExist:
                    pass
            existing = set(self._order) & set(wanted)
            for key, cells in rows:
                if key in existing:
                    current = self.get_row(key)
                    for column, old, new in zip(columns, current, cells):
                        if not _same(old, new):
                            self.update_cell(key, column, new, update_width=True)
                else:
                    self.add_row(*cells, key=key)
            order = [key for key, _ in rows]
            if list(self._current_order()) != order:
                # rank rows by the identity of their stored cell objects (DataTable sorts on values)
                rank = {_identity(self.get_row(key)): i for i, key in enumerate(order)}
                self.sort(key=lambda values: rank.get(_identity(values), len(rank)))
            self._order = order
            if selected in wanted and not (at_top and self._follow_newest):
                index = self.get_row_index(selected)
                if index != self.cursor_row:
                    self.move_cursor(row=index, animate=False)
            elif self.row_count and self.cursor_row >= self.row_count:
                self.move_cursor(row=self.row_count - 1, animate=False)
        if self._min_widths:
            self.call_after_refresh(self.fit_columns)  # once the new widths are measured

    _follow_newest = False

    def _current_order(self) -> Iterable[str]:
        for index in range(self.row_count):
            try:
                yield self.coordinate_to_cell_key(Coordinate(index, 0)).row_key.value
            except (CellDoesNotExist, RowDoesNotExist):
                return


class EventTable(KeyedTable):
    """Newest first; when the cursor is on the first row it stays there as events arrive."""

    _follow_newest = True


class StatusLine(Static):
    """One line: appliance identity, totals, data age, PAUSED and filter badges."""

    DEFAULT_CSS = """
    StatusLine { height: 1; width: 1fr; }
    """


class Banner(Static):
    """DISCONNECTED banner; hidden while the admin API answers."""

    DEFAULT_CSS = """
    Banner { display: none; height: auto; }
    Banner.-visible { display: block; }
    """


def middle_cut(text: str, width: int) -> str:
    """`text` cut to `width` cells: an address ("host:port") loses the middle of its host
    and keeps its port ("127.0…:8443", down to "…8443"); anything else, or a width too
    narrow for that, loses its end."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:max(width, 0)]
    colon = text.rfind(":")
    tail = text[colon:] if colon > 0 and text[colon + 1:].isdigit() else ""
    if tail and len(tail) + 1 <= width:  # the ellipsis and ":port", and what fits of the host
        return set_cell_size(text[:colon], width - len(tail) - 1) + "…" + tail
    if tail and len(tail) <= width:  # "…8443": the port still shows
        return "…" + tail[1:]
    return set_cell_size(text, width - 1) + "…"


class Address:
    """An address cell that keeps its port when its column is narrowed (see `middle_cut`)."""

    __slots__ = ("text", "style")

    def __init__(self, text: str, style: str = "") -> None:
        self.text = text
        self.style = style

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Address) and other.text == self.text and other.style == self.style

    def __hash__(self) -> int:
        return hash((self.text, self.style))

    def __str__(self) -> str:
        return self.text

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        width = cell_len(self.text)
        return Measurement(min(width, 1), width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(middle_cut(self.text, options.max_width), style=self.style, no_wrap=True, end="")


def _same(a: Cell, b: Cell) -> bool:
    """Cell equality including style (rich Text equality ignores the base style)."""
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain == b.plain and str(a.style) == str(b.style) and a.spans == b.spans
    return type(a) is type(b) and a == b


def _identity(cells: Iterable[Cell]) -> tuple[int, ...]:
    return tuple(sorted(map(id, cells)))


def styled(text: str, style: str) -> Text:
    return Text(text, style=style)


def join(parts: Iterable[Text | str], sep: str = "  ") -> Text:
    out = Text()
    first = True
    for part in parts:
        if not first:
            out.append(sep)
        first = False
        out.append(part if isinstance(part, Text) else Text(part))
    return out
