"""Modal dialogs: a yes/no confirmation, the evaluation launcher, a run's note and tags."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, TextArea

EVAL_CHOICES = [("linear evaluation (frozen encoder)", "linear"), ("fine-tune on a label fraction", "finetune"),
                ("kNN classifier", "knn")]


class ConfirmScreen(ModalScreen[bool]):
    """Asks a yes/no question; dismisses with True only on an explicit yes."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, markup=False, id="question")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", variant="error", compact=True, id="yes")
                yield Button("Cancel (n)", compact=True, id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class EvalDialog(ModalScreen[tuple[str, str, float | None] | None]):
    """Which evaluation, on which checkpoint; dismisses with (kind, checkpoint, fraction)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "launch", "Launch")]

    def __init__(self, run_name: str, checkpoints: list[str], checkpoint: str | None = None) -> None:
        super().__init__()
        self.run_name = run_name
        self.checkpoints = checkpoints
        self.checkpoint = checkpoint if checkpoint in checkpoints else checkpoints[0]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Evaluate [b]{self.run_name}[/b]")
            yield Label("Evaluation")
            yield Select(EVAL_CHOICES, value="linear", allow_blank=False, compact=True, id="eval-kind")
            yield Label("Checkpoint")
            yield Select([(c, c) for c in self.checkpoints], value=self.checkpoint, allow_blank=False, compact=True,
                         id="eval-ckpt")
            yield Label("Label fraction (fine-tune only)")
            yield Input("0.1", compact=True, id="eval-fraction")
            yield Static("", id="eval-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Launch", variant="primary", compact=True, id="launch")
                yield Button("Cancel", compact=True, id="cancel")

    @on(Button.Pressed, "#launch")
    def action_launch(self) -> None:
        kind = self.query_one("#eval-kind", Select).value
        ckpt = self.query_one("#eval-ckpt", Select).value
        fraction = None
        if kind == "finetune":
            text = self.query_one("#eval-fraction", Input).value.strip()
            try:
                fraction = float(text)
                if not 0 < fraction <= 1:
                    raise ValueError
            except ValueError:
                self.query_one("#eval-error", Static).update(
                    f"label fraction must be a number in (0, 1], e.g. 0.1 or 0.01 (got {text!r})")
                return
        self.dismiss((str(kind), str(ckpt), fraction))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class NotesDialog(ModalScreen[tuple[str, str] | None]):
    """A run's note (several lines) and tags; dismisses with (note, tags text) on save.

    The tags text is split on commas and spaces by `core.runs.write_notes`.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "save", "Save")]

    def __init__(self, run_name: str, note: str, tags: tuple[str, ...] | list[str]) -> None:
        super().__init__()
        self.run_name = run_name
        self.note = note
        self.tags = ", ".join(tags)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Note and tags of [b]{self.run_name}[/b]")
            yield Label("Note")
            yield TextArea(self.note, id="notes-note", soft_wrap=True)
            yield Label("Tags (separated by commas or spaces)")
            yield Input(self.tags, compact=True, id="notes-tags")
            with Horizontal(classes="buttons"):
                yield Button("Save (ctrl+s)", variant="primary", compact=True, id="save")
                yield Button("Cancel (esc)", compact=True, id="cancel")

    def on_mount(self) -> None:
        self.query_one("#notes-note", TextArea).focus()

    @on(Button.Pressed, "#save")
    @on(Input.Submitted, "#notes-tags")
    def action_save(self) -> None:
        self.dismiss((self.query_one("#notes-note", TextArea).text, self.query_one("#notes-tags", Input).value))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
