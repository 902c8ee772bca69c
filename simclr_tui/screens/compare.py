"""Two or more runs side by side: their metrics, the config keys that differ, their curves.

When some of the runs are seeds of one setting (a sweep's members, or runs whose configs
differ only in seed, device or workers), they are also shown as groups: each metric's mean
± sample std with n, the keys that differ between the groups, and the group's mean curve
with a ± std band (`m`: one line per seed instead).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual import on
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane

from .. import fmt
from ..aggregate import mean_curve
from ..comparison import (GROUP_METRICS, METRICS, Series, csv_records, group_stats, metric, pruned_keys,
                          run_values, stat_text)
from ..export import csv_table, export_stem, latex_table, markdown_table, write_files
from ..groups import NOT_A_SETTING, Group, differing_keys, group_runs, is_grouped, states
from ..series import smooth
from ..store import RunView
from ..widgets.embedding_map import EmbeddingView
from ..widgets.plot import COLOURS, Line, MetricPlot
from .live import LiveScreen

MISSING = object()
LOSS_TAGS = ("train/loss", "linear/train_loss", "finetune/train_loss")
ACC_TAGS = ("knn/top1", "linear/test_top1", "finetune/test_top1")
Rows = list[tuple[str, list[str]]]


def config_of(view: RunView, runs: dict[str, RunView]) -> dict[str, Any]:
    """The config that describes a run; an eval job adds its checkpoint to its parent's."""
    if view.parent:
        parent = runs.get(view.parent)
        cfg = dict(parent.config or {}) if parent else {}
        cfg["evaluates"] = view.parent
        cfg["checkpoint"] = (view.status or {}).get("checkpoint")
        return cfg
    return dict(view.config or {})


def config_diff(configs: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Keys whose values are not all equal (a key one run lacks counts as different)."""
    keys = sorted(set().union(*configs)) if configs else []
    out = []
    for k in keys:
        vals = [c.get(k, MISSING) for c in configs]
        if any(v != vals[0] for v in vals[1:]):
            out.append((k, vals))
    return out


def curve(series: Series, tags: tuple[str, ...]) -> tuple[str, tuple[float, ...], tuple[float, ...]] | None:
    """(tag, xs, ys) of the first of ``tags`` the run has."""
    for tag in tags:
        if tag in series and series[tag].ys:
            return tag, series[tag].xs, series[tag].ys
    return None


class CompareScreen(LiveScreen):
    DEFAULT_CSS = """
    #groups-table {
        height: auto;
        max-height: 20;
    }
    #compare-notes {
        height: auto;
        padding: 0 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back"),
                Binding("1", "tab('summary')", "Summary"), Binding("2", "tab('curves')", "Curves"),
                Binding("3", "tab('maps')", "Maps", show=False),
                Binding("m", "toggle_seeds", "Mean/seeds"),
                Binding("E", "export", "Export", key_display="E")]

    def __init__(self, keys: list[str]) -> None:
        super().__init__()
        self.keys = list(keys)
        self.per_seed = False  # grouped curves: one line per seed instead of mean ± std
        self.groups: list[Group] = []
        self._shown: object = None
        self._columns: dict[str, tuple[str, ...]] = {}
        self.sub_title = f"comparing {len(self.keys)} runs"

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="compare-tabs"):
            with TabPane("Summary", id="summary"), VerticalScroll():
                yield Static("Groups: mean ± sample std over seeds", classes="group-title grouped-only")
                yield DataTable(id="groups-table", cursor_type="row", zebra_stripes=True,
                                classes="grouped-only")
                yield Static("Metrics", classes="group-title")
                yield DataTable(id="metrics-table", cursor_type="row", zebra_stripes=True)
                yield Static("Config keys that differ", classes="group-title", id="diff-title")
                yield DataTable(id="diff-table", cursor_type="row", zebra_stripes=True)
                yield Static("Notes", classes="group-title notes-only")
                yield Static(id="compare-notes", classes="notes-only", markup=False)
            with TabPane("Curves", id="curves"), Grid(id="compare-plots"):
                yield MetricPlot("training loss (smoothed)", id="cmp-loss")
                yield MetricPlot("top-1 accuracy %", id="cmp-acc")
            with TabPane("Maps", id="maps"), Horizontal(id="compare-maps"):  # the first two runs' maps
                yield EmbeddingView(id="map-0")
                yield EmbeddingView(id="map-1")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.refresh_runs()
        self.app.poll_now()

    def on_screen_resume(self) -> None:
        self.refresh_runs()

    def watched_keys(self) -> tuple[str, ...]:
        return tuple(self.keys)

    def palette_commands(self) -> list[tuple[str, str, Callable[[], None]]]:
        out = [("Export comparison", "CSV, markdown and LaTeX of these runs' metrics to <runs>/exports/ (E)",
                self.action_export)]
        if is_grouped(self.groups):
            out.append(("Mean or seeds", "grouped curves: mean ± std band / one line per seed (m)",
                        self.action_toggle_seeds))
        return out

    def action_tab(self, tab: str) -> None:
        self.query_one("#compare-tabs", TabbedContent).active = tab

    @on(TabbedContent.TabActivated, "#compare-tabs")
    def _tab_opened(self, event: TabbedContent.TabActivated) -> None:
        """The embedding maps of the first two runs (an evaluation job: its run's), side by side."""
        if event.pane.id == "maps":
            runs = list(dict.fromkeys(k.split("/eval/")[0] for k in self.keys))[:2]
            for i, key in enumerate(runs):
                self.query_one(f"#map-{i}", EmbeddingView).load(key)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`m` is offered (and shown in the footer) only while some runs form a group."""
        return is_grouped(self.groups) if action == "toggle_seeds" else True

    def action_toggle_seeds(self) -> None:
        if not is_grouped(self.groups):
            return
        self.per_seed = not self.per_seed
        self.notify("one line per seed" if self.per_seed else "mean ± std per setting", timeout=2)
        self.refresh_runs()

    # .................................................................. what is shown
    def _names(self) -> list[str]:
        runs = self.app.runs
        return [runs[k].name if k in runs else k for k in self.keys]

    def _series(self) -> list[Series]:
        details = self.app.details
        return [details[k].series if k in details else {} for k in self.keys]

    def _values(self, views: list[RunView | None], series: list[Series]) -> dict[str, dict[str, float | None]]:
        return {k: run_values(v, s) for k, v, s in zip(self.keys, views, series, strict=True)}

    def _metric_rows(self, views: list[RunView | None], values: dict[str, dict[str, float | None]],
                     series: list[Series]) -> Rows:
        def row(label: str, f: Any) -> tuple[str, list[str]]:
            return label, [f(v, s) if v else "–" for v, s in zip(views, series, strict=True)]

        def shown(key: str) -> tuple[str, list[str]]:
            m = metric(key)
            cells = [(fmt.percent if m.accuracy else fmt.number)(values[k][key]) if v else "–"
                     for k, v in zip(self.keys, views, strict=True)]
            return m.label, cells

        return [
            row("state", lambda v, s: v.display_state),
            row("kind", lambda v, s: v.kind),
            row("epoch", lambda v, s: fmt.progress(v.epoch, v.total_epochs)),
            *[shown(m.key) for m in METRICS],
            row("img/s", lambda v, s: fmt.throughput(v.images_per_sec)),
            row("elapsed", lambda v, s: fmt.duration(v.elapsed)),
        ]

    def _group_rows(self, values: dict[str, dict[str, float | None]]) -> Rows:
        runs = self.app.runs
        pruned = pruned_keys(self.keys, runs)
        stats = [group_stats(g, values, pruned) for g in self.groups]
        rows: Rows = [("runs", [f"{g.n}: {states(g, runs)}" for g in self.groups])]
        for key in GROUP_METRICS:
            m = metric(key)
            rows.append((m.label, [stat_text(m, s[key]) for s in stats]))
        return rows

    def _group_diff(self, views: dict[str, RunView]) -> Rows:
        """The keys that tell the groups apart (for a sweep: its swept keys, seed aside)."""
        configs = []
        for g in self.groups:
            view = views.get(g.keys[0])
            cfg = config_of(view, views) if view else {}
            configs.append({k: v for k, v in cfg.items() if k not in NOT_A_SETTING})
        return [(k, ["–" if k not in c else str(c[k]) for c in configs]) for k in differing_keys(configs)]

    def _notes(self, views: list[RunView | None]) -> str:
        lines = []
        for v in views:
            if v is not None and (v.note or v.tags):
                tags = "  " + " ".join(f"#{t}" for t in v.tags) if v.tags else ""
                note = " ".join(v.note.split())
                lines.append(f"{v.name}: {note}{tags}" if note else f"{v.name}:{tags}")
        return "\n".join(lines)

    # .................................................................. rendering
    def _refresh_runs(self) -> None:
        runs = self.app.runs
        views = [runs.get(k) for k in self.keys]
        series = self._series()
        was_grouped = is_grouped(self.groups)
        self.groups = group_runs(self.keys, runs)
        grouped = is_grouped(self.groups)
        if grouped != was_grouped:
            self.refresh_bindings()
        values = self._values(views, series)
        metrics = self._metric_rows(views, values, series)
        if grouped:
            diff = self._group_diff(runs)
            diff_columns = tuple(g.label for g in self.groups)
        else:
            configs = [config_of(v, runs) if v else {} for v in views]
            diff = [(k, ["–" if v is MISSING else str(v) for v in vals]) for k, vals in config_diff(configs)]
            diff_columns = tuple(self._names())
        group_rows = self._group_rows(values) if grouped else []
        notes = self._notes(views)
        shown = (metrics, diff, diff_columns, group_rows, notes)
        if shown != self._shown:
            self._shown = shown
            for widget in self.query(".grouped-only"):
                widget.display = grouped
            for widget in self.query(".notes-only"):
                widget.display = bool(notes)
            self.query_one("#diff-title", Static).update(
                "Config keys that differ between the groups" if grouped else "Config keys that differ")
            self.query_one("#compare-notes", Static).update(notes)
            self._fill("#metrics-table", tuple(self._names()), metrics)
            self._fill("#diff-table", diff_columns, diff or [("(no differences)", [""] * len(diff_columns))])
            if grouped:
                self._fill("#groups-table", tuple(g.label for g in self.groups), group_rows)
        self._plots(views, series, grouped)

    def _fill(self, table_id: str, columns: tuple[str, ...], rows: Rows) -> None:
        table = self.query_one(table_id, DataTable)
        if self._columns.get(table_id) != columns:
            table.clear(columns=True)
            table.add_column("", key="label")
            for i, name in enumerate(columns):
                table.add_column(name, key=f"c{i}")
            self._columns[table_id] = columns
        else:
            table.clear()
        for label, vals in rows:
            table.add_row(label, *vals)
        table.refresh(layout=True)  # a table shown again (display) keeps a zero height otherwise

    def _plots(self, views: list[RunView | None], series: list[Series], grouped: bool) -> None:
        if grouped:
            loss, acc = self._group_lines(series, LOSS_TAGS, smoothed=True), self._group_lines(series, ACC_TAGS)
        else:
            loss, acc = [], []
            for key, view, s in zip(self.keys, views, series, strict=True):
                name = view.name if view else key
                if (c := curve(s, LOSS_TAGS)) is not None:
                    loss.append(Line(name, c[1], tuple(smooth(c[2]))))
                if (c := curve(s, ACC_TAGS)) is not None:
                    acc.append(Line(name, c[1], tuple(100 * y for y in c[2])))
        self.query_one("#cmp-loss", MetricPlot).set_lines(loss)
        self.query_one("#cmp-acc", MetricPlot).set_lines(acc)

    def _group_lines(self, series: list[Series], tags: tuple[str, ...], smoothed: bool = False) -> list[Line]:
        """Per group: its mean with a ± std band (drawn first, darker), or a line per seed."""
        by_key = dict(zip(self.keys, series, strict=True))
        bands: list[Line] = []
        means: list[Line] = []
        for i, g in enumerate(self.groups):
            colour = COLOURS[i % len(COLOURS)]
            found = [curve(by_key[k], tags) for k in g.keys]
            tag = next((c[0] for c in found if c is not None), None)  # the same metric for every seed
            curves = [(c[1], tuple(smooth(c[2])) if smoothed else c[2]) for c in found if c is not None and c[0] == tag]
            if not curves:
                continue
            scale = 1.0 if smoothed else 100.0
            label = f"{g.label} (n={len(curves)})"
            if self.per_seed:
                for j, (xs, ys) in enumerate(curves):
                    means.append(Line(label if j == 0 else "", tuple(xs), tuple(scale * y for y in ys), colour))
                continue
            band = mean_curve(curves)
            if len(curves) > 1:
                bands.append(Line("", band.xs, tuple(scale * y for y in band.lower()), colour, dim=True))
                bands.append(Line("", band.xs, tuple(scale * y for y in band.upper()), colour, dim=True))
            means.append(Line(label, band.xs, tuple(scale * y for y in band.mean), colour))
        return bands + means

    # .................................................................. export
    def action_export(self) -> None:
        """CSV of every run's and group's metrics, and the summary as markdown and LaTeX."""
        runs = self.app.runs
        views = [runs.get(k) for k in self.keys]
        series = self._series()
        values = self._values(views, series)
        names = dict(zip(self.keys, self._names(), strict=True))
        state = {k: v.display_state for k, v in zip(self.keys, views, strict=True) if v}
        pruned = pruned_keys(self.keys, self.app.runs)
        header, rows = csv_records(self.keys, names, state, self.groups, values, pruned)
        tables = []
        if is_grouped(self.groups):
            tables.append((["", *[g.label for g in self.groups]], self._group_rows(values)))
        tables.append((["", *self._names()], self._metric_rows(views, values, series)))
        texts = {"csv": csv_table(header, rows),
                 "md": "\n".join(markdown_table(h, [[label, *cells] for label, cells in r]) for h, r in tables),
                 "tex": "\n".join(latex_table(h, [[label, *cells] for label, cells in r]) for h, r in tables)}
        try:
            paths = write_files(export_stem(self.app.runs_dir, "compare"), texts)
        except OSError as e:
            self.notify(f"cannot write the export: {e.strerror or e}", title="Export", severity="error")
            return
        self.notify("\n".join(str(p) for p in paths), title="Exported", timeout=10)
