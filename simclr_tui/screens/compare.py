"""Two or more runs side by side: the config keys that differ, their metrics, their curves."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane

from .. import fmt
from ..series import SeriesData, smooth
from ..store import RunView
from ..widgets.plot import Line, MetricPlot
from .live import LiveScreen

MISSING = object()


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


def best(series: dict[str, SeriesData], base: str) -> float | None:
    vals = [s.vmax for t, s in series.items() if t.split("@")[0] == base and s.vmax is not None]
    return max(vals) if vals else None


def final(series: dict[str, SeriesData], tag: str) -> float | None:
    s = series.get(tag)
    return s.last if s is not None else None


class CompareScreen(LiveScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"),
                Binding("1", "tab('summary')", "Summary"), Binding("2", "tab('curves')", "Curves")]

    def __init__(self, keys: list[str]) -> None:
        super().__init__()
        self.keys = list(keys)
        self._shown: object = None
        self.sub_title = f"comparing {len(self.keys)} runs"

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="compare-tabs"):
            with TabPane("Summary", id="summary"):
                with VerticalScroll():
                    yield Static("Metrics", classes="group-title")
                    yield DataTable(id="metrics-table", cursor_type="row", zebra_stripes=True)
                    yield Static("Config keys that differ", classes="group-title")
                    yield DataTable(id="diff-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Curves", id="curves"):
                with Grid(id="compare-plots"):
                    yield MetricPlot("training loss (smoothed)", id="cmp-loss")
                    yield MetricPlot("top-1 accuracy %", id="cmp-acc")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        for tid in ("#metrics-table", "#diff-table"):
            table = self.query_one(tid, DataTable)
            table.add_column("", key="label")
            for i, key in enumerate(self.keys):
                table.add_column(self.app.runs[key].name if key in self.app.runs else key, key=f"r{i}")
        self.refresh_runs()
        self.app.poll_now()

    def on_screen_resume(self) -> None:
        self.refresh_runs()

    def watched_keys(self) -> tuple[str, ...]:
        return tuple(self.keys)

    def action_tab(self, tab: str) -> None:
        self.query_one("#compare-tabs", TabbedContent).active = tab

    # .................................................................. rendering
    def _refresh_runs(self) -> None:
        runs, details = self.app.runs, self.app.details
        views = [runs.get(k) for k in self.keys]
        series = [details[k].series if k in details else {} for k in self.keys]
        metrics = self._metric_rows(views, series)
        configs = [config_of(v, runs) if v else {} for v in views]
        diff = [(k, ["–" if v is MISSING else str(v) for v in vals]) for k, vals in config_diff(configs)]
        if (metrics, diff) != self._shown:
            self._shown = (metrics, diff)
            self._fill("#metrics-table", metrics)
            self._fill("#diff-table", diff or [("(no differences)", [""] * len(self.keys))])
        self._plots(views, series)

    def _fill(self, table_id: str, rows: list[tuple[str, list[str]]]) -> None:
        table = self.query_one(table_id, DataTable)
        table.clear()
        for label, vals in rows:
            table.add_row(label, *vals)

    def _metric_rows(self, views: list[RunView | None],
                     series: list[dict[str, SeriesData]]) -> list[tuple[str, list[str]]]:
        def row(label: str, f: Any) -> tuple[str, list[str]]:
            return label, [f(v, s) if v else "–" for v, s in zip(views, series, strict=True)]

        return [
            row("state", lambda v, s: v.display_state),
            row("kind", lambda v, s: v.kind),
            row("epoch", lambda v, s: fmt.progress(v.epoch, v.total_epochs)),
            row("final loss", lambda v, s: fmt.number(v.loss)),
            row("lowest loss", lambda v, s: fmt.number(s["train/loss"].vmin) if "train/loss" in s else "–"),
            row("best acc", lambda v, s: fmt.percent(v.best_acc)),
            row("best kNN top-1", lambda v, s: fmt.percent(best(s, "knn/top1"))),
            row("final kNN top-1", lambda v, s: fmt.percent(final(s, "knn/top1"))),
            row("best linear top-1", lambda v, s: fmt.percent(best(s, "linear/test_top1"))),
            row("best fine-tune top-1", lambda v, s: fmt.percent(best(s, "finetune/test_top1"))),
            row("img/s", lambda v, s: fmt.throughput(v.images_per_sec)),
            row("elapsed", lambda v, s: fmt.duration(v.elapsed)),
        ]

    def _plots(self, views: list[RunView | None], series: list[dict[str, SeriesData]]) -> None:
        loss, acc = [], []
        for key, view, s in zip(self.keys, views, series, strict=True):
            name = view.name if view else key
            for tag in ("train/loss", "linear/train_loss", "finetune/train_loss"):
                if tag in s:
                    loss.append(Line(name, s[tag].xs, tuple(smooth(s[tag].ys))))
                    break
            for tag in ("knn/top1", "linear/test_top1", "finetune/test_top1"):
                if tag in s:
                    acc.append(Line(name, s[tag].xs, tuple(100 * y for y in s[tag].ys)))
                    break
        self.query_one("#cmp-loss", MetricPlot).set_lines(loss)
        self.query_one("#cmp-acc", MetricPlot).set_lines(acc)
