"""The New-run form's "Queue and sweep" section: `--then` jobs, and a grid of values × seeds.

Each row varies one config field (any field but seed, device and workers: seeds have their
own input) over comma-separated values; `+ key` adds a row, `✕` removes one. The form
checks what the section holds with `simclr_tui.enqueue` and shows the run count and the
`simclr sweep ...` command.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from core.config import dash

from ..configform import field_specs
from ..enqueue import NOT_IN_GRID, then_specs

SECTION_HELP = ("Queue (ctrl+g) adds this run to the queue, started by the queue worker when a slot is free, "
                "followed by the checked evaluations. A key with values or seeds makes a sweep: one queued run "
                "per combination.")


def grid_options() -> list[tuple[str, str]]:
    return [(dash(s.name), s.name) for s in field_specs() if s.name not in NOT_IN_GRID]


class SweepKeyRow(Horizontal):
    """One swept key: the field and its comma-separated values."""

    def __init__(self, key: str | None = None, values: str = "") -> None:
        super().__init__(classes="sweep-row")
        self._key, self._values = key, values

    def compose(self) -> ComposeResult:
        yield Label("vary", classes="field-label")
        yield Select(grid_options(), prompt="config key", value=self._key or Select.NULL, compact=True,
                     classes="sweep-key", tooltip="the config field this row varies")
        yield Input(self._values, placeholder="values, comma-separated: 0.1,0.2", compact=True,
                    classes="sweep-values", tooltip="the values to try, comma-separated (e.g. 0.1,0.2,0.5)")
        yield Button("✕", compact=True, classes="sweep-remove", tooltip="remove this key")

    @property
    def key(self) -> str | None:
        value = self.query_one(".sweep-key", Select).value
        return None if value == Select.NULL else str(value)

    @property
    def values(self) -> str:
        return self.query_one(".sweep-values", Input).value


class QueueSection(Vertical):
    DEFAULT_CSS = """
    QueueSection, QueueSection #sweep-keys {
        height: auto;
    }
    QueueSection .form-row, QueueSection .sweep-row {
        height: 1;
        padding: 0 1;
    }
    QueueSection .field-label {
        width: 20;
        padding: 0 1 0 0;
    }
    QueueSection .sweep-row Select {
        width: 24;
    }
    QueueSection Input {
        width: 1fr;
    }
    QueueSection Checkbox {
        width: auto;
        margin: 0 2 0 0;
    }
    QueueSection #then-fraction {
        width: 8;
    }
    QueueSection .sweep-remove, QueueSection #sweep-add {
        margin: 0 0 0 1;
    }
    QueueSection #sweep-add {
        margin: 0 0 0 21;
    }
    QueueSection .-invalid .field-label {
        color: $error;
        text-style: bold reverse;
    }
    #section-note, #sweep-size {
        padding: 0 1;
        color: $text-muted;
        height: auto;
    }
    """

    def compose(self) -> ComposeResult:
        yield Static("Queue and sweep", classes="group-title")
        yield Static(SECTION_HELP, id="section-note")
        with Horizontal(classes="form-row", id="then-row"):
            yield Label("then", classes="field-label")
            yield Checkbox("linear-eval", compact=True, id="then-linear",
                           tooltip="queue a linear evaluation after each run finishes")
            yield Checkbox("knn", compact=True, id="then-knn", tooltip="queue a kNN evaluation after each run")
            yield Checkbox("finetune, labels", compact=True, id="then-finetune",
                           tooltip="queue fine-tuning on this fraction of the labels after each run")
            yield Input("0.1", compact=True, id="then-fraction", tooltip="the label fraction, in (0, 1]")
        with Horizontal(classes="form-row"):
            yield Label("sweep name", classes="field-label")
            yield Input(placeholder="the run name above, or automatic; runs are NAME-key=value,seed=s",
                        compact=True, id="sweep-name", tooltip="the sweep's name: its runs are NAME-<what differs>")
        with Vertical(id="sweep-keys"):
            yield SweepKeyRow()
        yield Button("+ key", compact=True, id="sweep-add", tooltip="vary another config key")
        with Horizontal(classes="form-row", id="seeds-row"):
            yield Label("seeds", classes="field-label")
            yield Input(placeholder="e.g. 0,1,2 or 0-4: every setting once per seed", compact=True,
                        id="sweep-seeds", tooltip="seeds to repeat every setting with")
        yield Static(id="sweep-size", markup=False)

    # .................................................................. values
    def rows(self) -> list[tuple[str | None, str]]:
        return [(r.key, r.values) for r in self.query(SweepKeyRow)]

    @property
    def seeds(self) -> str:
        return self.query_one("#sweep-seeds", Input).value

    @property
    def sweep_name(self) -> str:
        return self.query_one("#sweep-name", Input).value.strip()

    def then(self) -> list[str]:
        """The --then jobs checked; raises ConfigError for a bad label fraction."""
        return then_specs(self.query_one("#then-linear", Checkbox).value, self.query_one("#then-knn", Checkbox).value,
                          self.query_one("#then-finetune", Checkbox).value,
                          self.query_one("#then-fraction", Input).value.strip())

    def show(self, text: str) -> None:
        self.query_one("#sweep-size", Static).update(text)

    def mark(self, message: str | None) -> None:
        """Highlight the rows an error message is about (its key, the seeds, the fraction)."""
        message = message or ""
        for row in self.query(SweepKeyRow):
            key = row.key
            row.set_class(bool(key) and (f"{dash(key)}=" in message or f"{key}=" in message), "-invalid")
        self.query_one("#seeds-row").set_class("--seeds" in message, "-invalid")
        self.query_one("#then-row").set_class("--then" in message, "-invalid")

    # .................................................................. rows
    @on(Button.Pressed, "#sweep-add")
    def _add(self, event: Button.Pressed) -> None:
        event.stop()
        row = SweepKeyRow()
        self.query_one("#sweep-keys", Vertical).mount(row)
        self.call_after_refresh(lambda: row.query_one(".sweep-key", Select).focus())

    @on(Button.Pressed, ".sweep-remove")
    def _remove(self, event: Button.Pressed) -> None:
        event.stop()
        row = next(a for a in event.button.ancestors if isinstance(a, SweepKeyRow))
        if len(self.query(SweepKeyRow)) > 1:
            row.remove()
        else:  # the last row is cleared, not removed
            row.query_one(".sweep-key", Select).clear()
            row.query_one(".sweep-values", Input).value = ""
        self.post_message(self.Edited())

    class Edited(Message):
        """A row was removed (the form validates again)."""
