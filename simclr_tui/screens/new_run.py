"""The New-run form: every PretrainConfig field, a preset or a cloned run to start from,
live validation, and the `simclr pretrain ...` command that the Launch button runs."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static, Switch

from core.config import PRESET_NOTES, PRESETS, ConfigError, PretrainConfig
from core.rundir import check_run_name, generate_run_name, resolve_run_dir

from ..configform import (
    DATASET_DEFAULTS,
    base_values,
    config_from_run,
    field_in_error,
    grouped_specs,
    parse_form,
    pretrain_args,
)
from ..widgets.config_field import ConfigField

NO_PRESET = "-"


class NewRunScreen(Screen):
    BINDINGS = [
        Binding("ctrl+s", "launch", "Launch", priority=True),
        Binding("ctrl+o", "copy_command", "Copy command", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, clone: str | None = None, preset: str | None = None) -> None:
        super().__init__()
        self.clone = clone
        self.preset = preset if preset in PRESETS else None
        self.config: PretrainConfig | None = None
        self.error: str | None = None
        self.command = ""
        self._launching = False
        # Selects also post Changed when mounted or set from code: react only to new values
        self._dataset: str | None = None
        self._invalid: str | None = None  # the field marked in red
        self._validate_soon = False
        self.blur_note = ""
        self._focused_field: ConfigField | None = None

    # .................................................................. layout
    def _initial_values(self) -> dict[str, Any]:
        view = self.app.runs.get(self.clone) if self.clone else None
        if view is not None and view.config:
            values, dropped = config_from_run(view.config)
            if dropped:
                self.notify(f"ignored keys this version does not know: {', '.join(dropped)}", severity="warning")
            return values
        self.clone = None
        return base_values(self.preset)

    def compose(self) -> ComposeResult:
        values = self._initial_values()
        self._dataset = values["dataset"]
        clones = [(v.name, k) for k, v in self.app.runs.items() if v.kind == "pretrain" and v.config]
        yield Header()
        with Horizontal(classes="form-row"):
            yield Label("preset", classes="form-label")
            yield Select([("defaults (no preset)", NO_PRESET)] + [(p, p) for p in PRESETS],
                         value=self.preset or NO_PRESET, allow_blank=False, compact=True, id="preset")
            yield Label(" clone", classes="form-label-short")
            yield Select(clones, prompt="—", value=self.clone if self.clone else Select.NULL, compact=True,
                         id="clone")
        with Horizontal(classes="form-row"):
            yield Label("run name", classes="form-label")
            yield Input(placeholder="automatic: <dataset>-<backbone>-<date>-<time>", compact=True, id="run-name")
        yield Static(self._note(), id="preset-note", markup=False)
        with VerticalScroll(id="fields"):
            for title, specs in grouped_specs():
                yield Static(title, classes="group-title")
                for spec in specs:
                    yield ConfigField(spec, values[spec.name])
        yield Static(id="field-help", markup=False)
        yield Static(id="form-error", markup=False)
        yield Static(id="command", markup=False)
        with Horizontal(classes="buttons"):
            yield Button("Launch", variant="primary", id="launch", compact=True)
            yield Button("Copy command", id="copy", compact=True)
            yield Button("Cancel", id="cancel", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.validate()

    def _note(self) -> str:
        if self.clone:
            return f"cloned from {self.clone}"
        if self.preset:
            return f"preset {self.preset}: {PRESET_NOTES.get(self.preset, '')}"
        return "PretrainConfig defaults; choose a preset or clone a run to start from its values"

    # .................................................................. values
    def fields(self) -> dict[str, ConfigField]:
        return {f.spec.name: f for f in self.query(ConfigField)}

    def raw_values(self) -> dict[str, Any]:
        return {name: f.raw for name, f in self.fields().items()}

    def set_values(self, values: dict[str, Any]) -> None:
        """Fill the form without triggering the dataset defaults."""
        fields = self.fields()
        self._dataset = values.get("dataset", self._dataset)
        with self.prevent(Input.Changed, Select.Changed, Switch.Changed):
            for name, value in values.items():
                if name in fields:
                    fields[name].set_value(value)
        self.validate()

    def run_name(self) -> str:
        name = self.query_one("#run-name", Input).value.strip()
        if name:
            return name
        cfg = self.config or PretrainConfig()
        return generate_run_name(self.app.runs_dir, cfg.dataset, cfg.backbone)

    def validate(self) -> bool:
        """Parse and check the form; show the error (and mark its field) or the command."""
        self._validate_soon = False
        fields = self.fields()
        self.config, self.error = None, None
        try:
            self.config = parse_form(self.raw_values())
            name = self.query_one("#run-name", Input).value.strip()
            if name:
                try:
                    check_run_name(name)
                    resolve_run_dir(self.app.runs_dir, name)
                except ValueError as e:
                    raise ConfigError(str(e)) from None
                if (self.app.runs_dir / name).exists():
                    raise ConfigError(f"a run named {name!r} already exists; choose another name or leave it empty")
        except ConfigError as e:
            self.error = str(e)
        bad = field_in_error(self.error) if self.error else None
        if bad != self._invalid:
            if self._invalid in fields:
                fields[self._invalid].set_invalid(False)
            if bad in fields:
                fields[bad].set_invalid(True)
            self._invalid = bad
        error = self.query_one("#form-error", Static)
        error.update(f"✗ {self.error}" if self.error else "")
        error.display = bool(self.error)
        if self.config is not None:
            args = pretrain_args(self.config, self.preset)
            self.command = self.app.launcher.pretrain_command(self.run_name(), args)
            self.blur_note = f"blur is now {'on' if self.config.use_blur else 'off'} ({self.config.image_size} px)"
            self._show_help()
        self.query_one("#command", Static).update(
            f"$ {self.command}" if self.config is not None else "fix the error above to see the command")
        return self.error is None

    # .................................................................. events
    def on_descendant_focus(self, event) -> None:
        field = next((a for a in event.widget.ancestors_with_self if isinstance(a, ConfigField)), None)
        if field is not None:
            self._focused_field = field
            self._show_help()

    def _show_help(self) -> None:
        f = self._focused_field
        text = f"{f.spec.flag}: {f.help}" if f else "tab moves between fields; hover or focus one for its help"
        if f and f.spec.name in ("blur", "image_size", "dataset") and self.blur_note:
            text += f"  [{self.blur_note}]"
        self.query_one("#field-help", Static).update(text)

    @on(Select.Changed, "#preset")
    def _preset_changed(self, event: Select.Changed) -> None:
        preset = None if event.value == NO_PRESET else str(event.value)
        if preset == self.preset and (preset or not self.clone):
            return
        self.preset = preset
        self.clone = None
        with self.prevent(Select.Changed):
            self.query_one("#clone", Select).clear()
        self.query_one("#preset-note", Static).update(self._note())
        self.set_values(base_values(self.preset))

    @on(Select.Changed, "#clone")
    def _clone_changed(self, event: Select.Changed) -> None:
        if event.value == Select.NULL or event.value == self.clone:
            return
        self.clone, self.preset = str(event.value), None
        with self.prevent(Select.Changed):
            self.query_one("#preset", Select).value = NO_PRESET
        self.set_values(self._initial_values())
        self.query_one("#preset-note", Static).update(self._note())

    @on(Select.Changed, "#field-dataset")
    def _dataset_changed(self, event: Select.Changed) -> None:
        if event.value == self._dataset:
            return
        self._dataset = str(event.value)
        defaults = DATASET_DEFAULTS.get(str(event.value), {})
        if defaults:
            self.set_values(defaults)
            shown = ", ".join(f"{k.replace('_', '-')} {'auto' if v is None else v}" for k, v in defaults.items())
            self.notify(f"{event.value}: {shown}", title="Dataset defaults", timeout=4)

    @on(Input.Changed)
    @on(Select.Changed, "ConfigField Select")
    @on(Switch.Changed)
    def _changed(self) -> None:
        # a burst of changes (mounting, a preset filling 30 fields) validates once
        if not self._validate_soon:
            self._validate_soon = True
            self.call_after_refresh(self.validate)

    @on(Button.Pressed, "#launch")
    def action_launch(self) -> None:
        if self._launching:
            return
        if not self.validate() or self.config is None:
            self.notify(self.error or "the form has an error", title="Not launched", severity="error")
            if (bad := field_in_error(self.error or "")) in self.fields():
                self.fields()[bad].control.focus()
            return
        name = self.run_name()
        self._launching = True
        self.app.launch("pretrain", self.app.launcher.pretrain, name, pretrain_args(self.config, self.preset))
        self.set_timer(2.0, self._launch_done)

    def _launch_done(self) -> None:
        self._launching = False  # a failed launch leaves the form open to try again

    @on(Button.Pressed, "#copy")
    def action_copy_command(self) -> None:
        if self.validate():
            self.app.copy_to_clipboard(self.command)
            self.notify("command copied to the clipboard", timeout=3)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.app.pop_screen()

    def watched_keys(self) -> tuple[str, ...]:
        return ()
