"""The results table: `simclr results` in the TUI, grouped by sweep, by config, or not at all.

Read with `core.evaluation.results` (torch-free): every finished evaluation
(``runs/NAME/eval/<job>.json``), a row each, or one row per setting with the mean ± sample
std over its seeds and n -- the same rows `simclr results [--group-by ...]` prints. It is
read again in a thread worker whenever an evaluation job appears or changes state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static

from core.evaluation import results

from ..export import export_stem, write_files
from .live import LiveScreen

#: what `g` cycles through: `--group-by sweep`, `--group-by config`, every result
MODES: tuple[str | None, ...] = ("sweep", "config", None)
#: `simclr results`' columns, the run and its accuracy first so that 80 columns show them
SHOWN = ("Run", "Accuracy", *(c for c in results.COLUMNS if c not in ("Run", "Accuracy")))


def records_for(found: list[Any], mode: str | None, pruned: list[Any] = ()) -> list[dict[str, Any]]:
    return results.groups(found, mode, pruned) if mode else results.rows(found)


class ResultsScreen(LiveScreen):
    DEFAULT_CSS = """
    #results-bar {
        height: 1;
        padding: 0 1;
        color: $text-muted;
    }
    #results-table {
        height: 1fr;
    }
    #results-empty {
        height: auto;
        padding: 1 2;
        color: $text-muted;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("g", "group", "Group by"),
        Binding("E", "export", "Export", key_display="E"),
    ]

    def __init__(self, mode: str | None = "sweep") -> None:
        super().__init__()
        self.mode = mode
        self.found: list[Any] | None = None  # core.evaluation.results.collect's, once read
        self.pruned: list[Any] = []  # core.evaluation.results.collect_pruned's: counted apart in groups
        self.records: list[dict[str, Any]] = []
        self._seen: object = None  # the eval jobs (and states) the last read saw
        self._reading = False
        self.sub_title = "results"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="results-bar", markup=False)
        table: DataTable = DataTable(id="results-table", cursor_type="row", zebra_stripes=True)
        for col in SHOWN:
            table.add_column(col, key=col)
        yield table
        yield Static(id="results-empty", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#results-table", DataTable).focus()
        self.refresh_runs()

    def watched_keys(self) -> tuple[str, ...]:
        return ()

    # .................................................................. reading
    def _jobs(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, v.state) for k, v in self.app.runs.items() if v.parent))

    def _refresh_runs(self) -> None:
        jobs = self._jobs()
        if jobs != self._seen and not self._reading:
            self._seen = jobs
            self._read()

    def _read(self) -> None:
        self._reading = True
        runs_dir = self.app.runs_dir

        def work() -> None:
            found, pruned = None, []
            try:
                found, pruned = results.collect(runs_dir), results.collect_pruned(runs_dir)
            finally:  # an error is the app's notification; the next change reads again
                self.app.call_from_thread(self._show, found, pruned)

        self.run_worker(work, thread=True, group="results", name="results", exit_on_error=False)

    def _show(self, found: list[Any] | None, pruned: list[Any] = ()) -> None:
        self._reading = False
        if found is None:
            return
        self.found, self.pruned = found, list(pruned)
        self._draw()
        if self._jobs() != self._seen:  # something finished while reading
            self.refresh_runs()

    def _draw(self) -> None:
        if not self.is_mounted or self.found is None:
            return
        self.records = records_for(self.found, self.mode, self.pruned)
        table = self.query_one("#results-table", DataTable)
        table.clear()
        for r in self.records:
            table.add_row(*[Text(str(r.get(c, ""))) for c in SHOWN])  # Text: "[temperature=0.1]" is no markup
        how = {"sweep": "grouped by sweep setting: mean ± sample std over seeds (n)",
               "config": "grouped by config (seed, device, workers aside): mean ± sample std (n)",
               None: "every result"}[self.mode]
        self.query_one("#results-bar", Static).update(
            f"{len(self.records)} row(s), {how}  ·  g: group by {self._next_mode() or 'nothing'}  ·  E: export")
        empty = self.query_one("#results-empty", Static)
        empty.display = not self.records
        if not self.found:
            empty.update(f"No finished evaluations in {self.app.runs_dir} yet: evaluate a run (e), or queue "
                         f"a sweep with evaluations after it (the New-run form's Queue and sweep section).")
        elif not self.records:
            empty.update("None of the evaluated runs belongs to a sweep: g groups them by config instead.")

    def _next_mode(self) -> str | None:
        return MODES[(MODES.index(self.mode) + 1) % len(MODES)]

    def palette_commands(self) -> list[tuple[str, str, Callable[[], None]]]:
        return [("Export results", "CSV, markdown and LaTeX of this table to <runs>/exports/ (E)", self.action_export),
                (f"Group results by {self._next_mode() or 'nothing'}", "sweep, config or every result (g)",
                 self.action_group)]

    # .................................................................. actions
    def action_group(self) -> None:
        self.mode = self._next_mode()
        self._draw()

    def action_export(self) -> None:
        """The table as CSV, markdown and LaTeX (`simclr results --format ...`) under exports/."""
        if not self.records:
            self.notify("nothing to export yet", severity="warning", timeout=3)
            return
        texts = {"csv": results.render(self.records, "csv"), "md": results.render(self.records, "markdown"),
                 "tex": results.render(self.records, "latex")}
        try:
            paths = write_files(export_stem(self.app.runs_dir, f"results-{self.mode or 'all'}"), texts)
        except OSError as e:
            self.notify(f"cannot write the export: {e.strerror or e}", title="Export", severity="error")
            return
        self.notify("\n".join(str(p) for p in paths), title="Exported", timeout=10)
