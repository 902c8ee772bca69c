"""The New-run form's "Queue and sweep" section: `--then` jobs, and a grid of values × seeds.

Each row varies one config field (any field but seed, device and workers: seeds have their
own input) over comma-separated values; `+ key` adds a row, `✕` removes one. The prune row
is `simclr sweep --prune asha|median --prune-metric M --min-epochs R --reduction-factor ETA`
(stop hopeless members at rungs R, R·ETA, ...: core.jobs.prune). The form
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
from core.jobs.prune import DEFAULTS as PRUNE_DEFAULTS

from ..configform import field_specs
from ..enqueue import NOT_IN_GRID, then_specs

SECTION_HELP = ("Queue (ctrl+g) adds this run to the queue, started by the queue worker when a slot is free, "
                "followed by the checked evaluations. A key with values or seeds makes a sweep: one queued run "
                "per combination.")
#: the prune row's rules (`simclr sweep --prune`) and metrics (`--prune-metric`)
PRUNE_RULES = [("none", ""), ("asha", "asha"), ("median", "median")]
PRUNE_METRICS = [("knn_top1", "knn_top1"), ("loss", "loss")]


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
    QueueSection #then-fraction, QueueSection #prune-row Input {
        width: 6;
    }
    QueueSection #prune-row Select {
        width: 14;
    }
    QueueSection #prune-row .prune-label {
        width: auto;
        padding: 0 1;
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
        with Horizontal(classes="form-row", id="prune-row"):
            yield Label("prune", classes="field-label")
            yield Select(PRUNE_RULES, value="", allow_blank=False, compact=True, id="prune-rule",
                         tooltip="--prune: stop hopeless members at rungs; asha (successive halving: the best "
                                 "1/factor go on) or median (worse than the completed settings' median); a "
                                 "setting's seeds are judged together, by their mean")
            yield Label("on", classes="prune-label")
            yield Select(PRUNE_METRICS, value="knn_top1", allow_blank=False, compact=True, id="prune-metric",
                         tooltip="--prune-metric: the kNN monitor's top-1 (needs labelled data) or the epoch's "
                                 "mean training loss")
            yield Label("from epoch", classes="prune-label")
            yield Input(str(PRUNE_DEFAULTS["min_epochs"]), compact=True, id="prune-min-epochs",
                        tooltip="--min-epochs R: the first rung, in epochs")
            yield Label("factor", classes="prune-label")
            yield Input(str(PRUNE_DEFAULTS["reduction_factor"]), compact=True, id="prune-factor",
                        tooltip="--reduction-factor ETA: rungs at R, R*ETA, R*ETA^2 ... epochs")
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

    def prune(self) -> tuple[str | None, str, str, str]:
        """(rule or None, metric, min epochs, reduction factor) as entered (enqueue.check_prune)."""
        rule = self.query_one("#prune-rule", Select).value
        return (str(rule) if rule else None, str(self.query_one("#prune-metric", Select).value),
                self.query_one("#prune-min-epochs", Input).value, self.query_one("#prune-factor", Input).value)

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
        self.query_one("#prune-row").set_class(any(f in message for f in ("--prune", "--min-epochs",
                                                                          "--reduction-factor")), "-invalid")

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
