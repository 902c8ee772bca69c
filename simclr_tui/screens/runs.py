"""The home screen: every run and evaluation job under the runs directory, live."""

from __future__ import annotations

from typing import Any, Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Input, Static
from textual.widgets.data_table import CellDoesNotExist

from .. import fmt
from ..store import RunView
from .live import LiveScreen


def _num_key(x: float | None) -> tuple[int, float]:
    return (0, x) if x is not None else (1, 0.0)  # blanks last


#: (key, header, sort key, right-aligned); the columns that matter most come first so an
#: 80-column terminal shows them without scrolling sideways
COLUMNS: list[tuple[str, str, Callable[[RunView], Any], bool]] = [
    ("sel", " ", lambda v: 0, False),
    ("name", "Run", lambda v: v.key, False),
    ("state", "State", lambda v: v.display_state, False),
    ("progress", "Progress", lambda v: _num_key(v.progress), False),
    ("loss", "Loss", lambda v: _num_key(v.loss), True),
    ("acc", "Best acc", lambda v: _num_key(v.best_acc), True),
    ("eta", "ETA", lambda v: _num_key(v.eta), True),
    ("spark", "Loss curve", lambda v: v.spark, False),
    ("ips", "img/s", lambda v: _num_key(v.images_per_sec), True),
    ("elapsed", "Elapsed", lambda v: _num_key(v.elapsed), True),
    ("kind", "Kind", lambda v: v.kind, False),
    ("dataset", "Data", lambda v: v.dataset, False),
    ("backbone", "Model", lambda v: v.backbone, False),
]
SORTABLE = [c[0] for c in COLUMNS if c[0] not in ("sel", "spark")]


def order_runs(runs: list[RunView], column: str, reverse: bool = False) -> list[RunView]:
    """The table's row order for a sort column.

    By name, each run's evaluation jobs follow it directly, in name order, whichever way the
    runs go (a plain string sort would put "a-b" between "a" and "a/eval/x"). By any other
    column, every row is placed by its own value, name breaking ties.
    """
    if column == "name":
        jobs_in_order = sorted(runs, key=lambda v: (v.parent is not None, v.key))
        return sorted(jobs_in_order, key=lambda v: v.parent or v.key, reverse=reverse)  # stable
    sort_key = next(c[2] for c in COLUMNS if c[0] == column)
    return sorted(runs, key=lambda v: (sort_key(v), v.key), reverse=reverse)


def row_cells(view: RunView, selected: bool, nested: bool = False) -> list[Any]:
    """The table cells of one run (strings or Rich Text), in COLUMNS order.

    `nested`: an eval job listed right under its run shows only its own name, indented.
    """
    right = {c[0] for c in COLUMNS if c[3]}
    raw = {
        "sel": Text("●", style="bold green") if selected else " ",
        "name": "  └ " + view.key.rsplit("/", 1)[-1] if nested else view.name,
        "kind": view.kind,
        "state": fmt.state_text(view.display_state),
        "dataset": view.dataset or "–",
        "backbone": view.backbone or "–",
        "progress": f"{fmt.progress(view.epoch, view.total_epochs):>7} {fmt.bar(view.progress, 6)}",
        "loss": fmt.number(view.loss),
        "acc": fmt.percent(view.best_acc),
        "ips": fmt.throughput(view.images_per_sec),
        "elapsed": fmt.duration(view.elapsed),
        "eta": fmt.duration(view.eta) if view.live else "",
        "spark": Text(view.spark, style="cyan"),
    }
    return [Text(raw[k], justify="right") if k in right else raw[k] for k, *_ in COLUMNS]


class RunsScreen(LiveScreen):
    """Sort by any column (click its header or press s), filter with /, select with space."""

    BINDINGS = [
        Binding("enter", "open", "Open"),
        Binding("n", "new", "New"),
        Binding("space", "toggle_select", "Select"),
        Binding("c", "compare", "Compare"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("s", "sort", "Sort", show=False),
        Binding("x", "stop", "Stop"),
        Binding("r", "resume", "Resume", show=False),
        Binding("e", "evaluate", "Eval", show=False),
        Binding("d", "delete", "Delete", show=False),
        Binding("k", "clone", "Clone", show=False),
        Binding("a", "select_all", "Select all", show=False),
        Binding("escape", "clear", "Clear", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.selected: set[str] = set()
        self.filter_text = ""
        self.sort_column = "name"
        self.sort_reverse = False
        self._order: list[str] = []
        self._cells: dict[str, list[str]] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="runs-bar"):
            yield Input(placeholder="filter runs  (/)", id="filter", compact=True)
            yield Static(id="runs-stats")
        table: DataTable = DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        for key, label, *_ in COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield Static(id="runs-empty")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#runs", DataTable).focus()
        self.refresh_runs()

    def on_screen_resume(self) -> None:
        self.refresh_runs()

    # .................................................................. rendering
    def visible(self) -> list[RunView]:
        runs = list(self.app.runs.values())
        if self.filter_text:
            words = self.filter_text.lower().split()
            runs = [v for v in runs if all(w in f"{v.key} {v.kind} {v.display_state} {v.dataset} {v.backbone}".lower()
                                           for w in words)]
        return order_runs(runs, self.sort_column, self.sort_reverse)

    def _refresh_runs(self) -> None:
        table = self.query_one("#runs", DataTable)
        self.selected &= set(self.app.runs)
        views = self.visible()
        order = [v.key for v in views]
        rows = {}
        for i, v in enumerate(views):
            # an eval job right after its run (or a sibling job) is drawn as a child
            prev = order[i - 1] if i else ""
            nested = bool(v.parent) and (prev == v.parent or prev.startswith(f"{v.parent}/eval/"))
            rows[v.key] = row_cells(v, v.key in self.selected, nested)
        if order != self._order:
            cursor = self.cursor_key()
            table.clear()
            for key in order:
                table.add_row(*rows[key], key=key)
            if cursor in rows:
                table.move_cursor(row=order.index(cursor), scroll=False)
            self._order = order
        else:
            for key in order:
                old = self._cells.get(key)
                for (col, *_), cell, before in zip(COLUMNS, rows[key], old or [None] * len(COLUMNS), strict=True):
                    if str(cell) != str(before):  # styles follow from the text
                        table.update_cell(key, col, cell, update_width=True)
        self._cells = {k: rows[k] for k in order}
        self._update_headers(table)
        self._update_stats(len(views))

    def _update_headers(self, table: DataTable) -> None:
        for key, label, *_ in COLUMNS:
            col = table.columns.get(key)  # type: ignore[call-overload]
            if col is None:
                continue
            arrow = (" ▼" if self.sort_reverse else " ▲") if key == self.sort_column else ""
            want = Text(label + arrow)
            if col.label.plain != want.plain:
                col.label = want
                table.refresh()

    def _update_stats(self, shown: int) -> None:
        runs = self.app.runs
        live = sum(v.live for v in runs.values())
        parts = [f"{shown}/{len(runs)} runs" if self.filter_text else f"{len(runs)} runs", f"{live} live"]
        if self.selected:
            parts.append(f"{len(self.selected)} selected")
        if self.app.loading:
            parts.append("reading metrics…")
        if self.app.tensorboard.url:
            parts.append(f"TensorBoard {self.app.tensorboard.url}")
        self.query_one("#runs-stats", Static).update("  ·  ".join(parts))
        empty = self.query_one("#runs-empty", Static)
        empty.display = not runs
        if not runs:
            empty.update(f"No runs in {self.app.runs_dir} yet.\n\nPress [b]n[/b] to start one from the form, "
                         f"or quit and run [b]simclr-tui --demo[/b] for a tiny synthetic run.")

    # .................................................................. helpers
    def cursor_key(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except CellDoesNotExist:
            return None

    def targets(self) -> list[str]:
        """The selected runs, or the one under the cursor."""
        if self.selected:
            return [k for k in self._order if k in self.selected]
        key = self.cursor_key()
        return [key] if key else []

    def watched_keys(self) -> tuple[str, ...]:
        return ()

    def palette_commands(self) -> list[tuple[str, str, Callable[[], None]]]:
        return [
            ("Compare selected runs", "overlay curves and diff configs", self.action_compare),
            ("Stop run", "SIGTERM the selected/current run (again: SIGKILL)", self.action_stop),
            ("Resume run", "continue the current run from checkpoints/last.pt", self.action_resume),
            ("Evaluate run", "linear eval, fine-tune or kNN on a checkpoint", self.action_evaluate),
            ("Delete runs", "delete the selected/current runs (asks first)", self.action_delete),
        ]

    # .................................................................. events and actions
    @on(DataTable.RowSelected, "#runs")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_run(event.row_key.value)

    @on(DataTable.HeaderSelected, "#runs")
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        if key in SORTABLE:
            if key == self.sort_column:
                self.sort_reverse = not self.sort_reverse
            else:
                self.sort_column, self.sort_reverse = key, False
            self.refresh_runs()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self.refresh_runs()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one("#runs", DataTable).focus()

    def action_open(self) -> None:
        key = self.cursor_key()
        if key:
            self.app.open_run(key)

    def action_new(self) -> None:
        self.app.new_run()

    def action_clone(self) -> None:
        key = self.cursor_key()
        if key:
            self.app.new_run(clone=key)

    def action_toggle_select(self) -> None:
        key = self.cursor_key()
        if key:
            self.selected ^= {key}
            self.refresh_runs()
            table = self.query_one("#runs", DataTable)
            if table.cursor_row < table.row_count - 1:
                table.move_cursor(row=table.cursor_row + 1)

    def action_select_all(self) -> None:
        self.selected = set(self._order) if self.selected != set(self._order) else set()
        self.refresh_runs()

    def action_clear(self) -> None:
        if self.filter_text:
            self.query_one("#filter", Input).value = ""
        elif self.selected:
            self.selected.clear()
            self.refresh_runs()
        self.query_one("#runs", DataTable).focus()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_sort(self) -> None:
        i = SORTABLE.index(self.sort_column)
        self.sort_column, self.sort_reverse = SORTABLE[(i + 1) % len(SORTABLE)], False
        self.notify(f"sorted by {self.sort_column} (click a header to sort by it, again to reverse)", timeout=2)
        self.refresh_runs()

    def action_compare(self) -> None:
        self.app.compare(self.targets() if len(self.selected) >= 2 else self.selected)

    def action_stop(self) -> None:
        self.app.stop_runs(self.targets())

    def action_resume(self) -> None:
        for key in self.targets():
            self.app.resume_run(key)

    def action_evaluate(self) -> None:
        key = self.cursor_key()
        if key:
            self.app.evaluate_run(key)

    def action_delete(self) -> None:
        self.app.delete_runs(self.targets())
