"""One run, live: curves, progress and ETA, its stdout.log, its config and checkpoints."""

from __future__ import annotations

import time
from typing import Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal
from textual.widgets import (
    DataTable,
    Footer,
    Header,
    ProgressBar,
    Static,
    TabbedContent,
    TabPane,
)

from .. import fmt
from ..series import SeriesData, smooth, sparkline
from ..pictures import cache_path, neighbours_args, picture_device, run_views_args
from ..store import RunDetail, RunView
from ..widgets.embedding_map import EmbeddingView
from ..widgets.log_tail import LogTail
from ..widgets.picture import Picture
from ..widgets.plot import Line, MetricPlot
from .live import LiveScreen

#: the panels of each kind of job: (id, title, y label)
PANELS = {
    "pretrain": [("loss", "training loss (raw, smoothed)"), ("lr", "learning rate"),
                 ("knn", "kNN top-1 % (monitor)"), ("eval", "evaluation top-1 %")],
    "linear": [("loss", "linear probe train loss"), ("eval", "test accuracy %")],
    "finetune": [("loss", "fine-tune train loss"), ("eval", "test accuracy %")],
    "knn": [("eval", "kNN top-1 %")],
}
LOSS = {"pretrain": "train/loss", "linear": "linear/train_loss", "finetune": "finetune/train_loss"}


def job_family(key: str) -> str:
    """pretrain, linear, finetune or knn, from the key alone (works before status.json exists)."""
    if "/eval/" not in key:
        return "pretrain"
    job = key.rsplit("/", 1)[-1]
    return next((f for f in ("linear", "finetune", "knn") if job.startswith(f)), "linear")


def panel_lines(family: str, series: dict[str, SeriesData]) -> dict[str, list[Line]]:
    """What each panel draws, from the run's series."""
    def pct(s: SeriesData) -> tuple[float, ...]:
        return tuple(100 * y for y in s.ys)

    out: dict[str, list[Line]] = {}
    loss = series.get(LOSS.get(family, ""))
    if loss is not None:
        out["loss"] = [Line("raw", loss.xs, loss.ys, "gray"), Line("smoothed", loss.xs, tuple(smooth(loss.ys)), "cyan")]
    if "train/lr" in series:
        out["lr"] = [Line("lr", series["train/lr"].xs, series["train/lr"].ys, "orange")]
    if "knn/top1" in series and family == "pretrain":
        out["knn"] = [Line("kNN", series["knn/top1"].xs, pct(series["knn/top1"]), "green")]
    evals = []
    for tag, s in sorted(series.items()):
        base, _, job = tag.partition("@")
        if family == "pretrain" and job and base.endswith("top1"):
            evals.append(Line(f"{job} {base.split('/')[-1]}", s.xs, pct(s)))
        elif family != "pretrain" and not job and base.endswith(("top1", "top5")):
            evals.append(Line(base.split("/")[-1], s.xs, pct(s)))
    if evals:
        out["eval"] = evals
    return out


class RunDetailScreen(LiveScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("x", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("e", "evaluate", "Eval"),
        Binding("d", "delete", "Delete"),
        Binding("k", "clone", "Clone", show=False),
        Binding("N", "notes", "Note", show=False),
        Binding("1", "tab('curves')", "Curves", show=False),
        Binding("2", "tab('log')", "Log", show=False),
        Binding("3", "tab('config')", "Config", show=False),
        Binding("4", "tab('checkpoints')", "Checkpoints", show=False),
        Binding("5", "tab('views')", "Views", show=False),
        Binding("6", "tab('neighbours')", "Neighbours", show=False),
        Binding("7", "tab('embedding')", "Embedding", show=False),
        Binding("n", "other_queries", "Other queries", show=False),
    ]

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.family = job_family(key)
        self._config_shown: object = None
        self._ckpts_shown: object = None
        self.neighbours_seed = 0  # n draws other queries
        self.sub_title = key

    @property
    def run(self) -> RunView | None:
        return self.app.runs.get(self.key)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="detail-summary")
        with Horizontal(id="detail-progress"):
            yield ProgressBar(total=1000, show_eta=False, show_percentage=True, id="progress")
            yield Static(id="detail-eta")
        with TabbedContent(id="tabs"):
            with TabPane("Curves", id="curves"):
                with Grid(id="plots", classes=f"panels-{len(PANELS[self.family])}"):
                    for pid, title in PANELS[self.family]:
                        yield MetricPlot(title, id=f"plot-{pid}")
            with TabPane("Log", id="log"):
                yield LogTail(self.app.runs_dir / self.key / "stdout.log", id="log-tail")
            with TabPane("Config", id="config"):
                yield DataTable(id="config-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Checkpoints", id="checkpoints"):
                yield DataTable(id="ckpt-table", cursor_type="row", zebra_stripes=True)
            if self.family == "pretrain":  # pictures of the run: made when their tab opens
                with TabPane("Views", id="views"):
                    yield Picture(id="views-picture", classes="tab-picture")
                with TabPane("Neighbours", id="neighbours"):
                    yield Picture(id="neighbours-picture", classes="tab-picture")
                with TabPane("Embedding", id="embedding"):
                    yield EmbeddingView(id="embedding-map")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#config-table", DataTable).add_columns("key", "value")
        self.query_one("#ckpt-table", DataTable).add_columns(("checkpoint", "name"), ("size", "size"),
                                                             ("saved", "saved"))
        self.refresh_runs()
        self.app.poll_now()  # fetch this run's series now rather than at the next tick

    def on_screen_resume(self) -> None:
        self.refresh_runs()

    def watched_keys(self) -> tuple[str, ...]:
        return (self.key,)

    def palette_commands(self) -> list[tuple[str, str, Callable[[], None]]]:
        return [("Stop this run", "SIGTERM (again: SIGKILL)", self.action_stop),
                ("Resume this run", "from checkpoints/last.pt", self.action_resume),
                ("Evaluate this run", "linear / fine-tune / kNN on a checkpoint", self.action_evaluate),
                ("Delete this run", "asks first", self.action_delete),
                ("Clone this run", "New-run form with this config", self.action_clone),
                ("Note and tags", "edit this run's note and tags", self.action_notes)]

    # .................................................................. rendering
    def _refresh_runs(self) -> None:
        view = self.run
        detail = self.app.details.get(self.key)
        self._summary(view)
        if view is None:
            return
        if detail is not None:
            lines = panel_lines(self.family, detail.series)
            for pid, _ in PANELS[self.family]:
                self.query_one(f"#plot-{pid}", MetricPlot).set_lines(lines.get(pid, []))
            self._checkpoints(detail)
        self._config(view)

    def _summary(self, view: RunView | None) -> None:
        summary = self.query_one("#detail-summary", Static)
        if view is None:
            if (self.app.runs_dir / self.key).is_dir():
                summary.update(Text(f"{self.key}\nwaiting for the run to write status.json…", style="dim"))
            else:
                summary.update(Text(f"{self.key}\ngone: {self.app.runs_dir / self.key} no longer exists "
                                    f"(deleted?); esc goes back", style="bold red"))
            return
        t = Text()
        t.append(view.name, style="bold")
        t.append("  ")
        t.append_text(fmt.state_text(view.display_state))
        t.append(f"  {view.kind}")
        if view.dataset:
            t.append(f"  {view.dataset}/{view.backbone}")
        if view.status and view.live and not view.slurm:
            t.append(f"  pid {view.status.get('pid')}", style="dim")
        if view.state == "queued" and not view.slurm:
            t.append(f"  {fmt.queue_place(view.position)}", style=fmt.STATE_STYLES["queued"])
        if view.sweep:
            swept = ", ".join(f"{k}={v}" for k, v in view.swept.items())
            t.append(f"  sweep {view.sweep}" + (f": {swept}" if swept else ""), style=fmt.GROUP_STYLE)
        if view.slurm:
            t.append(f"\n{view.slurm.text()}", style=fmt.STATE_STYLES["queued"] if view.state == "queued" else "")
            why = view.slurm.reason or ""
            if why and not why.startswith("Slurm: "):  # those say what the line above says
                t.append(f"\n{why}", style="bold red" if view.state in ("crashed", "failed") else "dim")
            if view.slurm.error:
                t.append(f"\nSlurm cannot be asked now ({view.slurm.error}); the state is the run directory's",
                         style="yellow")
        t.append("\n")
        t.append(f"epoch {fmt.progress(view.epoch, view.total_epochs)}")
        if view.step is not None:
            t.append(f"  step {view.step}" + (f"/{view.total_steps}" if view.total_steps else ""))
        t.append(f"  loss {fmt.number(view.loss)}  best {fmt.percent(view.best_acc)}")
        t.append(f"  {fmt.throughput(view.images_per_sec)} img/s")
        detail = self.app.details.get(self.key)
        ips = detail.series.get("train/images_per_sec") if detail else None
        if ips is not None and ips.ys:
            t.append(" " + sparkline(ips.ys, 8), style="green")
        if view.health == "ok":  # status.json's verdict on the training (core.training.health)
            t.append("  health ok", style="dim")
        elif view.health:
            t.append(f"\nhealth: {view.health}" + (f" · {view.health_reason}" if view.health_reason else ""),
                     style=fmt.health_style(view.health))
        problems = list(view.damage) + ([f"error: {view.error}"] if view.error else [])
        if problems:
            t.append("\n" + " · ".join(problems), style="bold red")
        if view.stop_note:  # a pruned run's says why: its rung, value and cutoff
            t.append(f"\nnote: {view.stop_note}", style=fmt.state_style("pruned") if view.state == "pruned" else "yellow")
        if view.tags:
            t.append(f"\ntags: {fmt.tags(view.tags)}", style="bold cyan")
        if view.note:
            t.append(f"\n✎ {view.note}", style="italic")
        summary.update(t)
        bar = self.query_one("#progress", ProgressBar)
        bar.update(progress=round(1000 * (view.progress or 0)))
        eta = f"ETA {fmt.duration(view.eta)}" if view.live and view.eta is not None else ""
        self.query_one("#detail-eta", Static).update(f"elapsed {fmt.duration(view.elapsed)}  {eta}")

    def _config(self, view: RunView) -> None:
        rows: list[tuple[str, str]] = []
        if view.parent:
            st = view.status or {}
            rows += [("evaluates", view.parent), ("checkpoint", str(st.get("checkpoint", "")))]
            rows += [(f"result {k}", str(v)) for k, v in (view.result or {}).items() if not isinstance(v, (dict, list))]
        rows += [(k, fmt.number(v) if isinstance(v, float) else str(v)) for k, v in sorted((view.config or {}).items())]
        if rows == self._config_shown:
            return
        self._config_shown = rows
        table = self.query_one("#config-table", DataTable)
        table.clear()
        for k, v in rows:
            table.add_row(k, v)

    def _checkpoints(self, detail: RunDetail) -> None:
        if detail.checkpoints == self._ckpts_shown:
            return
        self._ckpts_shown = detail.checkpoints
        table = self.query_one("#ckpt-table", DataTable)
        table.clear()
        for c in sorted(detail.checkpoints, key=lambda c: (c.name != "last", c.name)):
            saved = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.mtime))
            table.add_row(c.name, f"{c.size / 1e6:.1f} MB", saved, key=c.name)

    # .................................................................. pictures
    @on(TabbedContent.TabActivated, "#tabs")
    def _tab_opened(self, event: TabbedContent.TabActivated) -> None:
        self._pictures(event.pane.id or "")

    def _pictures(self, tab: str) -> None:
        """Draw the open tab's picture (in a worker; a cached one at once)."""
        run_dir = self.app.runs_dir / self.key
        if tab == "views":
            args = run_views_args(run_dir)
            out = cache_path(self.app.runs_dir, "views-run", args, (run_dir / "config.json",))
            self.query_one("#views-picture", Picture).request(
                args, out, "Views: 6 training images × 4 augmented views, as this run's config draws them")
        elif tab == "neighbours":
            seed = self.neighbours_seed
            args = neighbours_args(run_dir, seed, picture_device(self.app.runs.values()))
            out = cache_path(self.app.runs_dir, "neighbours", args, (run_dir / "checkpoints" / "last.pt",))
            self.query_one("#neighbours-picture", Picture).request(
                args, out, f"Neighbours: 6 test queries (seed {seed}) and their 6 nearest training images "
                           f"· n: other queries", waiting="embedding (simclr neighbours)…")
        elif tab == "embedding":
            self.query_one("#embedding-map", EmbeddingView).load(self.key)

    def action_other_queries(self) -> None:
        """Six other test queries for the Neighbours tab (the next seed)."""
        if self.family != "pretrain":
            return
        self.neighbours_seed += 1
        tabs = self.query_one("#tabs", TabbedContent)
        if tabs.active == "neighbours":
            self._pictures("neighbours")
        else:
            tabs.active = "neighbours"  # drawn by _tab_opened

    # .................................................................. actions
    def action_tab(self, tab: str) -> None:
        if tab in ("views", "neighbours", "embedding") and self.family != "pretrain":
            return
        self.query_one("#tabs", TabbedContent).active = tab

    def action_stop(self) -> None:
        self.app.stop_runs([self.key])

    def action_notes(self) -> None:
        self.app.edit_notes(self.key)

    def action_resume(self) -> None:
        self.app.resume_run(self.key)

    def action_evaluate(self) -> None:
        checkpoint = None
        if self.query_one("#tabs", TabbedContent).active == "checkpoints":
            table = self.query_one("#ckpt-table", DataTable)
            if table.row_count:
                checkpoint = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        self.app.evaluate_run(self.key, checkpoint)

    @on(DataTable.RowSelected, "#ckpt-table")
    def _checkpoint_chosen(self, event: DataTable.RowSelected) -> None:
        self.app.evaluate_run(self.key, event.row_key.value)

    def action_delete(self) -> None:
        self.app.delete_runs([self.key])

    def action_clone(self) -> None:
        self.app.new_run(clone=self.key if self.family == "pretrain" else self.key.split("/eval/")[0])
