"""The help screen: what each screen is for and its keys."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

INTRO = ("Everything shown is read from the run directories (status.json, metrics.jsonl, stdout.log): "
         "quitting never stops a run, and starting again reattaches to it.")

SECTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Runs (home)", [
        ("enter, click", "open the run; a sweep's row: expand / collapse"),
        ("n", "new run (the form)"),
        ("k", "clone the current run's config into the form"),
        ("space", "select / unselect (a sweep: its runs); a: all"),
        ("c", "compare the selected runs"),
        ("/", "filter: name, kind, state, health, data, model, sweep, tags, note; tag:x"),
        ("s, header click", "sort by the next column / by that one (again: reverse)"),
        ("x", "stop (SIGTERM; again: SIGKILL); queued: cancel; Slurm: the job (again: scancel)"),
        ("[ ]", "move a queued run up / down (also ctrl+up / ctrl+down)"),
        ("N", "edit the run's note and tags"),
        ("v", "the sweep under the cursor: plan, progress, pruning decisions"),
        ("r", "resume from checkpoints/last.pt"),
        ("e", "evaluate: linear, fine-tune or kNN on a checkpoint"),
        ("d", "delete (asks first)"),
        ("R", "the results table (simclr results), grouped by sweep"),
        ("esc", "clear the filter, then the selection"),
    ]),
    ("Run detail", [
        ("1 2 3 4", "curves, log, config, checkpoints"),
        ("5 6 7", "pictures: augmented views, nearest neighbours, embedding map"),
        ("n", "the Neighbours tab: other queries (the next seed)"),
        ("x r e d", "stop (a queued run: cancel), resume, evaluate, delete"),
        ("N", "edit the note and tags"),
        ("enter", "on the Checkpoints tab: evaluate that checkpoint"),
        ("k", "clone into a new run"),
        ("esc", "back"),
    ]),
    ("New run", [
        ("ctrl+s", "launch now (only when the form is valid); with a sweep: queue it; launcher slurm: submit"),
        ("ctrl+g", "queue the run, or the sweep of the Queue and sweep section"),
        ("ctrl+o", "copy the command (simclr pretrain, or simclr sweep)"),
        ("tab", "next field; the line above the command explains it"),
        ("esc", "cancel"),
    ]),
    ("Compare", [
        ("1 2 3", "summary (groups of seeds: mean ± std, n), curves, the first two runs' embedding maps"),
        ("m", "grouped curves: mean ± std band / one line per seed"),
        ("E", "export CSV, markdown and LaTeX to <runs>/exports/"),
    ]),
    ("Results", [
        ("g", "group by sweep, by config, or show every result"),
        ("E", "export CSV, markdown and LaTeX to <runs>/exports/"),
    ]),
    ("Everywhere", [
        ("t", "TensorBoard on the runs directory (localhost) on / off"),
        ("ctrl+p", "command palette: every action, open or clone any run"),
        ("?", "this help"),
        ("q", "quit (runs keep going)"),
    ]),
]


def help_renderable() -> Group:
    parts: list = [Text("simclr-tui", style="bold"), Text(INTRO, style="dim"), Text("")]
    for title, rows in SECTIONS:
        table = Table(title=title, title_justify="left", title_style="bold", show_header=False, box=None,
                      padding=(0, 1), expand=True)
        table.add_column(style="bold cyan", no_wrap=True, width=16)
        table.add_column(ratio=1)
        for key, what in rows:
            table.add_row(key, what)
        parts += [table, Text("")]
    return Group(*parts)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Static(help_renderable())
