"""One sweep (`v` on its group row or a member): its plan, how far it got, and its pruning
decisions, the record `simclr sweep show NAME` prints.

The plan and the decision log come from the poll thread (`Snapshot.sweeps`, read by
`simclr_tui.sweep_files` with core's readers); the members' states from the runs table's
views. The highlighted decision's reason (and the settings it was compared with) shows
under the table.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static

from .. import fmt
from ..sweeps import summarise
from .live import LiveScreen

COLUMNS = ("Rung", "Epoch", "Member", "Value", "Setting mean (n)", "Cutoff", "Decision")


def value_text(v: Any) -> str:
    """A metric as `simclr sweep show` writes it (4 decimals), ``-`` when absent."""
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def decision_cells(d: dict[str, Any], sweep: str) -> list[Any]:
    member = str(d.get("member", ""))
    short = member[len(sweep) + 1:] if member.startswith(f"{sweep}-") else member
    word = Text("prune", style=fmt.state_style("pruned")) if d.get("prune") else Text("go on", style="green")
    return [str(d.get("rung", "")), str(d.get("epoch", "")), Text(short),
            Text(value_text(d.get("value")), justify="right"),
            Text(f"{value_text(d.get('setting_value'))} (n={d.get('seeds_in_mean')})", justify="right"),
            Text(value_text(d.get("cutoff")), justify="right"), word]


class SweepScreen(LiveScreen):
    DEFAULT_CSS = """
    #sweep-head, #sweep-reason, #sweep-empty {
        height: auto;
        padding: 0 1;
    }
    #sweep-reason, #sweep-empty {
        color: $text-muted;
    }
    #sweep-decisions {
        height: 1fr;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, name: str) -> None:
        super().__init__()
        self.sweep = name
        self.decisions: tuple[dict[str, Any], ...] | None = None  # as last drawn
        self.sub_title = f"sweep {name}"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="sweep-head")
        table: DataTable = DataTable(id="sweep-decisions", cursor_type="row", zebra_stripes=True)
        for col in COLUMNS:
            table.add_column(col, key=col)
        yield table
        yield Static(id="sweep-reason")
        yield Static(id="sweep-empty")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#sweep-decisions", DataTable).focus()
        self.refresh_runs()

    def watched_keys(self) -> tuple[str, ...]:
        return ()

    def _refresh_runs(self) -> None:
        files = self.app.sweeps.get(self.sweep)
        group = summarise(self.app.runs, self.app.sweeps).get(self.sweep)
        head = Text(f"sweep {self.sweep}", style="bold")
        head.append(f": {files.description}" if files else ": made before sweeps kept a plan")
        if group is not None:
            head.append("\n" + group.summary_text())
            if group.best_text():
                head.append(" · " + group.best_text())
        elif files is None:
            head.append("\nno such sweep any more (deleted?); esc goes back", style="bold red")
        self.query_one("#sweep-head", Static).update(head)
        decisions = files.decisions if files else ()
        if decisions != self.decisions:
            self.decisions = decisions
            table = self.query_one("#sweep-decisions", DataTable)
            row = table.cursor_row
            table.clear()
            for d in decisions:
                table.add_row(*decision_cells(d, self.sweep))
            if decisions:
                table.move_cursor(row=min(max(row, 0), len(decisions) - 1), scroll=False)
        prunes = bool(files and files.plan and files.plan.get("prune"))
        empty = self.query_one("#sweep-empty", Static)
        empty.display = not decisions
        empty.update("no pruning decisions yet: members are judged at the end of each rung epoch" if prunes
                     else "this sweep does not prune (made without --prune): no decisions to show")
        self._show_reason()

    @on(DataTable.RowHighlighted, "#sweep-decisions")
    def _show_reason(self) -> None:
        table = self.query_one("#sweep-decisions", DataTable)
        reason = self.query_one("#sweep-reason", Static)
        if not self.decisions or not 0 <= table.cursor_row < len(self.decisions):
            reason.display = False
            return
        d = self.decisions[table.cursor_row]
        compared = d.get("compared") or {}
        text = Text(f"{d.get('member')} ({d.get('setting')}), rung {d.get('rung')}: {d.get('reason', '')}")
        if compared:
            text.append("\ncompared: " + ", ".join(f"{s} {value_text(v)}" for s, v in compared.items()), style="dim")
        reason.display = True
        reason.update(text)
