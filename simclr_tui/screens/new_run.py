"""The New-run form: every PretrainConfig field, a preset or a cloned run to start from,
live validation, and the `simclr pretrain ...` command that the Launch button runs.

Its "Queue and sweep" section queues the run instead (`simclr pretrain --queue`), with
evaluations to follow it, or a sweep of it (`simclr sweep`): a grid of config values times
seeds, checked member by member as you type. Its launcher (default: `simclr-tui
--launcher`) is local, or slurm: the run, its evaluations or the sweep are then submitted
with the Slurm section's `--slurm-*` options (`simclr pretrain/sweep ... --launcher slurm`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Header, Input, Label, Select, Static, Switch

from core.config import PRESET_NOTES, PRESETS, ConfigError, PretrainConfig
from core.jobs.launch import saved_options, slurm_args
from core.runs import check_run_name, generate_run_name, resolve_run_dir
from core.jobs.slurm import SlurmOptions

from ..configform import (
    DATASET_DEFAULTS,
    base_values,
    config_from_run,
    field_in_error,
    grouped_specs,
    parse_form,
    pretrain_args,
)
from ..enqueue import (CliResult, Sweep, check_prune, check_sweep, grid_rows_defined, grid_size, queue_args, run_cli,
                       sweep_args)
from ..launcher import display_command
from ..widgets.config_field import ConfigField
from ..widgets.memory_line import MemoryLine
from ..widgets.queue_section import SECTION_HELP, QueueSection
from ..widgets.slurm_section import SlurmSection
from ..widgets.views_panel import ViewsPanel

NO_PRESET = "-"


class NewRunScreen(Screen):
    DEFAULT_CSS = """
    NewRunScreen #launch {
        width: auto;
        min-width: 16;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "launch", "Launch", priority=True),
        # ctrl+q quits Textual; ctrl+e/u/k/w/x/d/a edit an Input: ctrl+g is free in both
        Binding("ctrl+g", "queue", "Queue", priority=True),
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
        self.sweep: Sweep | None = None  # the sweep the section describes, when it is valid
        self.then: list[str] = []  # --then jobs for a queued run or sweep
        self.slurm: SlurmOptions | None = None  # the Slurm options when the launcher is slurm
        self._sweep_error = False  # the error is the section's, not a config field's
        self._launching = False
        # Selects also post Changed when mounted or set from code: react only to new values
        self._dataset: str | None = None
        self._invalid: str | None = None  # the field marked in red
        self._validate_soon = False
        self.blur_note = ""
        self._focused_field: ConfigField | None = None
        self._section_help = ""  # the help of the focused control of the queue section

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
        cloned = self.app.runs.get(self.clone) if self.clone else None
        slurm = saved_options(cloned.path) if cloned is not None and cloned.slurm else None  # a clone asks alike
        launcher = "slurm" if slurm else self.app.launcher.default
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
            yield Label(" launcher", id="launcher-label")
            yield Select([("local", "local"), ("slurm", "slurm")], value=launcher, allow_blank=False, compact=True,
                         id="launcher", tooltip="local: run on this machine now; slurm: submit with sbatch and "
                                                "return at once (with the options of the Slurm section below)")
        yield Static(self._note(), id="preset-note", markup=False)
        with VerticalScroll(id="fields"):
            section = SlurmSection(slurm, id="slurm-section")
            section.display = launcher == "slurm"
            yield section
            for title, specs in grouped_specs():
                yield Static(title, classes="group-title")
                for spec in specs:
                    yield ConfigField(spec, values[spec.name])
                    if spec.name == "micro_batch":  # what a step needs at this batch, and whether it fits
                        yield MemoryLine(id="memory-line")
                if title == "Augmentation":  # what these fields do to a few images, redrawn as they change
                    yield ViewsPanel(id="views-panel")
            yield QueueSection(id="queue-section")
        yield Static(id="field-help", markup=False)
        yield Static(id="form-error", markup=False)
        yield Static(id="command", markup=False)
        with Horizontal(classes="buttons"):
            yield Button("Launch now", variant="primary", id="launch", compact=True)
            yield Button("Queue", id="queue", compact=True)
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

    @property
    def launcher(self) -> str:
        return str(self.query_one("#launcher", Select).value)

    def _then_flags(self) -> list[str]:
        return [a for t in self.then for a in ("--then", t)]

    def run_name(self) -> str:
        name = self.query_one("#run-name", Input).value.strip()
        if name:
            return name
        cfg = self.config or PretrainConfig()
        return generate_run_name(self.app.runs_dir, cfg.dataset, cfg.backbone)

    def sweep_name(self) -> str:
        section = self.query_one(QueueSection)
        return section.sweep_name or self.query_one("#run-name", Input).value.strip() or self.run_name()

    def _check_section(self, config: PretrainConfig) -> None:
        """The --then jobs and the sweep; raises ConfigError (marked as the section's)."""
        section = self.query_one(QueueSection)
        self._sweep_error = True
        self.then = section.then()
        prune = check_prune(*section.prune())
        if grid_rows_defined(section.rows(), section.seeds):
            taken = {v.sweep for v in self.app.runs.values() if v.sweep}
            self.sweep = check_sweep(self.sweep_name(), section.rows(), section.seeds, config.to_dict(),
                                     self.app.runs_dir, taken, prune)
        elif prune is not None:
            raise ConfigError("--prune stops a sweep's members early: give a key with values or seeds too")
        self._sweep_error = False

    def _show_section(self) -> None:
        section = self.query_one(QueueSection)
        rows, seeds = section.rows(), section.seeds
        section.mark(self.error if self._sweep_error else None)
        if self.sweep is not None:
            first = self.sweep.members[0].name
            more = f" … {self.sweep.members[-1].name}" if self.sweep.size > 1 else ""
            prune, epochs = self.sweep.prune, min(m.config.epochs for m in self.sweep.members)
            rungs = f"; {prune.rule} on {prune.metric} at epochs {', '.join(map(str, prune.rungs(epochs)))}" if prune else ""
            section.show(f"sweep {self.sweep.name}: {self.sweep.size} run{'s' * (self.sweep.size > 1)} "
                         f"({first}{more}){rungs}")
        elif grid_rows_defined(rows, seeds):
            section.show(f"sweep: {grid_size(rows, seeds)} runs once the error above is fixed")
        else:
            section.show("no sweep: Queue adds this one run")
        launch = self.query_one("#launch", Button)
        slurm = self.launcher == "slurm"
        if self.sweep is not None:
            label = f"{'Submit' if slurm else 'Queue'} sweep ({self.sweep.size} runs)"
        else:
            label = "Submit to Slurm" if slurm else "Launch now"
        if launch.label.plain != label:
            launch.label = label
            launch.refresh(layout=True)  # the label is not a layout reactive: the width follows it here
        self.query_one("#queue", Button).display = self.sweep is None and not slurm

    def validate(self) -> bool:
        """Parse and check the form; show the error (and mark its field) or the command."""
        self._validate_soon = False
        fields = self.fields()
        self.config, self.error, self.sweep, self._sweep_error, self.slurm = None, None, None, False, None
        try:
            config = parse_form(self.raw_values())
            name = self.query_one("#run-name", Input).value.strip()
            if name:
                try:
                    check_run_name(name)
                    resolve_run_dir(self.app.runs_dir, name)
                except ValueError as e:
                    raise ConfigError(str(e)) from None
            self._check_section(config)
            if self.launcher == "slurm":
                self.slurm = self.query_one(SlurmSection).options()
            if name and self.sweep is None and (self.app.runs_dir / name).exists():
                raise ConfigError(f"a run named {name!r} already exists; choose another name or leave it empty")
            self.config = config
        except ConfigError as e:
            self.error = str(e)
        self._show_section()
        self.query_one(SlurmSection).mark(self.error)
        bad = field_in_error(self.error) if self.error and not self._sweep_error else None
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
            if self.sweep is not None:
                self.command = display_command(self._sweep_argv(args, start=True))
            elif self.slurm is not None:  # submitted with its evaluations (afterok jobs)
                self.command = self.app.launcher.pretrain_command(self.run_name(), self._then_flags() + args,
                                                                  self.slurm)
            else:
                self.command = self.app.launcher.pretrain_command(self.run_name(), args)
            self.blur_note = f"blur is now {'on' if self.config.use_blur else 'off'} ({self.config.image_size} px)"
            self._show_help()
        self.query_one("#command", Static).update(
            f"$ {self.command}" if self.config is not None else "fix the error above to see the command")
        self.query_one(ViewsPanel).show_config(self.config)
        self.query_one(MemoryLine).show_config(self.config, self.launcher)
        return self.error is None

    # .................................................................. events
    def on_descendant_focus(self, event) -> None:
        field = next((a for a in event.widget.ancestors_with_self if isinstance(a, ConfigField)), None)
        if field is not None:
            self._focused_field = field
            self._show_help()
        elif any(isinstance(a, QueueSection) for a in event.widget.ancestors):
            tip = event.widget.tooltip
            self._focused_field = None
            self._section_help = tip if isinstance(tip, str) else SECTION_HELP
            self._show_help()

    def _show_help(self) -> None:
        f = self._focused_field
        text = f"{f.spec.flag}: {f.help}" if f else (self._section_help or
                                                      "tab moves between fields; hover or focus one for its help")
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

    @on(Select.Changed, "#launcher")
    def _launcher_changed(self, event: Select.Changed) -> None:
        self.query_one(SlurmSection).display = event.value == "slurm"
        self._changed()

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
    @on(Select.Changed, "QueueSection Select")
    @on(Select.Changed, "SlurmSection Select")
    @on(Switch.Changed)
    @on(Checkbox.Changed)
    @on(QueueSection.Edited)
    def _changed(self) -> None:
        # a burst of changes (mounting, a preset filling 30 fields) validates once
        if not self._validate_soon:
            self._validate_soon = True
            self.call_after_refresh(self.validate)

    def _refuse(self, title: str) -> None:
        self.notify(self.error or "the form has an error", title=title, severity="error")
        if not self._sweep_error and (bad := field_in_error(self.error or "")) in self.fields():
            self.fields()[bad].control.focus()

    @on(Button.Pressed, "#launch")
    def action_launch(self) -> None:
        if self._launching:
            return
        if not self.validate() or self.config is None:
            self._refuse("Not launched")
            return
        if self.query_one(MemoryLine).holds("Launch"):  # will not fit: a second press launches
            return
        if self.sweep is not None:  # a sweep is never started here: it goes to the queue (or to Slurm)
            self.action_queue()
            return
        name = self.run_name()
        self._launching = True
        args = pretrain_args(self.config, self.preset)
        if self.slurm is not None:
            self.app.launch("pretrain", self.app.launcher.pretrain, name, self._then_flags() + args, self.slurm)
        else:
            self.app.launch("pretrain", self.app.launcher.pretrain, name, args)
        self.set_timer(2.0, self._launch_done)

    def _launch_done(self) -> None:
        self._launching = False  # a failed launch leaves the form open to try again

    @on(Button.Pressed, "#queue")
    def action_queue(self) -> None:
        """Queue the run (`simclr pretrain --queue`) or the sweep (`simclr sweep --no-start`;
        the app starts the queue worker) in a thread; errors show in the form."""
        if self._launching:
            return
        if not self.validate() or self.config is None:
            self._refuse("Not queued")
            return
        if self.query_one(MemoryLine).holds("Queue"):
            return
        if self.slurm is not None and self.sweep is None:  # Slurm is the queue: submit the run
            self.action_launch()
            return
        args = pretrain_args(self.config, self.preset)
        runs_dir = self.app.runs_dir
        if self.sweep is not None:
            argv, what = self._sweep_argv(args, start=self.slurm is not None), f"sweep {self.sweep.name}"
        else:
            name = self.run_name()
            argv, what = queue_args(runs_dir, name, self.then, args), name
        self._launching = True
        runner = list(self.app.launcher.runner)

        def work() -> None:
            result = run_cli(runner, argv)
            self.app.call_from_thread(self._queued, result, what)

        self.run_worker(work, thread=True, group="queue", name="queue", exit_on_error=False)

    def _sweep_argv(self, args: list[str], start: bool) -> list[str]:
        """`simclr sweep ...`; with the slurm launcher its --launcher flags go before the `--`."""
        argv = sweep_args(self.app.runs_dir, self.sweep, self.then, args, start=start)
        if self.slurm is None:
            return argv
        cut = argv.index("--")
        return argv[:cut] + slurm_args(self.slurm) + argv[cut:]

    def _queued(self, result: CliResult, what: str) -> None:
        self._launching = False
        if not result.ok:
            self.notify(result.error, title="Not queued", severity="error", timeout=10)
            if self.is_mounted:  # the runner's one line, where the form's errors go
                self.error, self._sweep_error = result.error, True
                error = self.query_one("#form-error", Static)
                error.update(f"✗ {result.error}")
                error.display = True
            return
        lines = [ln.strip() for ln in result.output.splitlines() if ln.strip()]
        self.notify(lines[0] if lines else f"queued {what}", title="Queued")
        self.app.queue_changed()
        if self.app.screen is self:  # to the runs screen, under whatever opened the form
            while len(self.app.screen_stack) > 1:
                self.app.pop_screen()

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
