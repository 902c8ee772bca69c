"""The home screen: every run and evaluation job under the runs directory, live.

A sweep is one collapsible group row (`..sweeps`); queued runs show their place in the queue
and can be moved or cancelled; the filter also matches notes and tags (`tag:x`: that tag).
"""

from __future__ import annotations

from typing import Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Input, Static
from textual.widgets.data_table import CellDoesNotExist

from .. import fmt
from ..store import RunView
from ..sweeps import Row, SweepGroup, arrange, group_key, summarise
from ..table import COLLAPSE_ABOVE, COLUMNS, SORTABLE, group_cells, matches, order_runs, row_cells  # noqa: F401
from .live import LiveScreen

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
        Binding("left_square_bracket,ctrl+up", "move('up')", "Move", key_display="[ ]"),
        Binding("right_square_bracket,ctrl+down", "move('down')", "Move down", show=False),
        Binding("N", "notes", "Note", show=False),
        Binding("v", "sweep", "Sweep", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.selected: set[str] = set()
        self.filter_text = ""
        self.sort_column = "name"
        self.sort_reverse = False
        self.expanded: dict[str, bool] = {}  # sweep -> expanded, as toggled this session
        self.groups: dict[str, SweepGroup] = {}
        self._keys: list[str] = []  # every visible run, collapsed members included, in order
        self._order: list[str] = []  # the table's row keys
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
        yield Static(id="runs-group")
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
            words = self.filter_text.split()
            runs = [v for v in runs if matches(v, words)]
        return order_runs(runs, self.sort_column, self.sort_reverse)

    def is_expanded(self, group: SweepGroup) -> bool:
        return self.expanded.get(group.name, len(group.members) <= COLLAPSE_ABOVE)

    def rows(self, views: list[RunView]) -> list[Row]:
        self.groups = summarise(self.app.runs, self.app.sweeps)
        return arrange(views, self.groups, {g.name for g in self.groups.values() if self.is_expanded(g)})

    def _refresh_runs(self) -> None:
        table = self.query_one("#runs", DataTable)
        self.selected &= set(self.app.runs)
        views = self.visible()
        self._keys = [v.key for v in views]
        arranged = self.rows(views)
        order = [r.key for r in arranged]
        rows = {}
        for i, r in enumerate(arranged):
            if r.group is not None:
                picked = sum(m in self.selected for m in r.group.members)
                rows[r.key] = group_cells(r.group, self.is_expanded(r.group), picked)
                continue
            v = r.view
            # an eval job right after its run (or a sibling job) is drawn as a child
            prev = order[i - 1] if i else ""
            nested = bool(v.parent) and (prev == v.parent or prev.startswith(f"{v.parent}/eval/"))
            rows[v.key] = row_cells(v, v.key in self.selected, nested, r.member)
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
        self._update_group_line()

    def _update_group_line(self) -> None:
        """Under the table, the sweep whose group row the cursor is on (its best setting
        would otherwise sit off an 80-column screen), or why the run under it is unhealthy
        or was pruned."""
        key = self.cursor_key() or ""
        group = self.groups.get(group_key(key) or "")
        view = self.app.runs.get(key)
        text = Text()
        if group is not None:
            verb = "collapses" if self.is_expanded(group) else "expands"
            text.append(" · ".join([f"sweep {group.name}", group.summary_text(), group.best_text() or
                                    "no accuracy yet", f"enter {verb}", "v decisions"]))
        elif view is not None:
            if view.health not in (None, "ok"):
                text.append(f"{view.health}: {view.health_reason or 'no reason given'}",
                            style=fmt.health_style(view.health))
            if view.state == "pruned":
                text.append(("  " if text else "") + (view.stop_note or "pruned by its sweep"),
                            style=fmt.state_style("pruned"))
        line = self.query_one("#runs-group", Static)
        line.display = bool(text)
        if text:
            line.update(text)

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
        queued = sum(v.state == "queued" and not v.slurm for v in runs.values())
        worker = self.app.worker_status
        if queued or (worker is not None and worker.pid is not None):
            parts.append(f"{queued} queued · " + (worker.text() if worker else "no worker"))
        in_slurm = [v for v in runs.values() if v.slurm and (v.live or v.state == "queued")]
        if in_slurm:
            waiting = sum(v.state == "queued" for v in in_slurm)
            parts.append(f"Slurm: {len(in_slurm) - waiting} running, {waiting} waiting"
                         + (" (Slurm cannot be asked)" if self.app.slurm_error else ""))
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
        """The selected runs, or the one under the cursor (a sweep's row: its members)."""
        if self.selected:
            return [k for k in self._keys if k in self.selected]
        key = self.cursor_key()
        if key and group_key(key):
            return self._members(key)
        return [key] if key else []

    def _members(self, key: str) -> list[str]:
        """The visible members of a sweep's group row, in table order."""
        group = self.groups.get(group_key(key) or "")
        members = set(group.members) if group else set()
        return [k for k in self._keys if k in members]

    def run_key(self) -> str | None:
        """The run under the cursor; on a sweep's row, None with a hint."""
        key = self.cursor_key()
        if key and group_key(key):
            self.notify("that is a sweep's row: enter expands it; pick one of its runs", severity="warning")
            return None
        return key

    def watched_keys(self) -> tuple[str, ...]:
        return ()

    def palette_commands(self) -> list[tuple[str, str, Callable[[], None]]]:
        return [
            ("Compare selected runs", "overlay curves and diff configs", self.action_compare),
            ("Stop run", "SIGTERM the selected/current run (again: SIGKILL)", self.action_stop),
            ("Resume run", "continue the current run from checkpoints/last.pt", self.action_resume),
            ("Evaluate run", "linear eval, fine-tune or kNN on a checkpoint", self.action_evaluate),
            ("Delete runs", "delete the selected/current runs (asks first)", self.action_delete),
            ("Move up in the queue", "the queued run under the cursor starts earlier", lambda: self.action_move("up")),
            ("Move down in the queue", "the queued run under the cursor starts later", lambda: self.action_move("down")),
            ("Note and tags", "edit the current run's note and tags", self.action_notes),
            ("Sweep and its decisions", "the current sweep's plan, progress and pruning decisions (v)",
             self.action_sweep),
        ]

    # .................................................................. events and actions
    @on(DataTable.RowSelected, "#runs")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self._activate(event.row_key.value)

    def _activate(self, key: str) -> None:
        """Open a run; expand or collapse a sweep's row."""
        name = group_key(key)
        if name is None:
            self.app.open_run(key)
        elif name in self.groups:
            self.expanded[name] = not self.is_expanded(self.groups[name])
            self.refresh_runs()

    @on(DataTable.RowHighlighted, "#runs")
    def _row_highlighted(self) -> None:
        self._update_group_line()

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
            self._activate(key)

    def action_new(self) -> None:
        self.app.new_run()

    def action_clone(self) -> None:
        key = self.run_key()
        if key:
            self.app.new_run(clone=key)

    def action_toggle_select(self) -> None:
        key = self.cursor_key()
        if key:
            if group_key(key):  # a sweep's row: all its members, or none
                members = set(self._members(key))
                self.selected = self.selected - members if members <= self.selected else self.selected | members
            else:
                self.selected ^= {key}
            self.refresh_runs()
            table = self.query_one("#runs", DataTable)
            if table.cursor_row < table.row_count - 1:
                table.move_cursor(row=table.cursor_row + 1)

    def action_select_all(self) -> None:
        self.selected = set(self._keys) if self.selected != set(self._keys) else set()
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
        """The selected runs side by side; on a sweep's group row with nothing selected, that
        sweep's members (its settings, grouped over seeds)."""
        on_group = not self.selected and bool(group_key(self.cursor_key() or ""))
        self.app.compare(self.targets() if len(self.selected) >= 2 or on_group else self.selected)

    def action_stop(self) -> None:
        self.app.stop_runs(self.targets())

    def action_resume(self) -> None:
        for key in self.targets():
            self.app.resume_run(key)

    def action_evaluate(self) -> None:
        key = self.run_key()
        if key:
            self.app.evaluate_run(key)

    def action_delete(self) -> None:
        self.app.delete_runs(self.targets())

    def action_move(self, where: str) -> None:
        key = self.cursor_key()
        if key and group_key(key):
            self.notify("a sweep moves one run at a time: expand it (enter) and move its runs", severity="warning")
        elif key:
            self.app.move_queued(key, where)

    def action_sweep(self) -> None:
        """The sweep under the cursor (its group row or a member): plan, progress, decisions."""
        from .sweep import SweepScreen

        key = self.cursor_key() or ""
        view = self.app.runs.get(key)
        name = group_key(key) or (view.sweep if view else None) or (
            self.app.runs[view.parent].sweep if view and view.parent in self.app.runs else None)
        if name is None:
            self.notify("not a sweep: put the cursor on a sweep's row or one of its runs", severity="warning")
            return
        self.app.push_screen(SweepScreen(name))

    def action_notes(self) -> None:
        key = self.run_key()
        if key:
            self.app.edit_notes(key)
