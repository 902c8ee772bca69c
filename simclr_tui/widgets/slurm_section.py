"""The New-run form's "Slurm" section: the `--slurm-*` options of a run submitted to Slurm.

Its fields are generated from `core.jobs.slurm.SlurmOptions` (one per field, its help as the
tooltip); the form shows the section when its launcher is slurm. `options()` gives the
validated `SlurmOptions`, the same object `simclr pretrain --launcher slurm` builds from
its flags, so the form and the command line cannot disagree.
"""

from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Select, Static

from core.config import ConfigError, base_type, dash
from core.jobs.launch import slurm_flag
from core.jobs.slurm import SlurmOptions

#: --slurm-extra holds several sbatch lines in one input, separated by this
EXTRA_SEPARATOR = ";"


def slurm_fields() -> list[tuple[str, type, str]]:
    """(name, type, help) of every SlurmOptions field."""
    hints = get_type_hints(SlurmOptions)
    return [(f.name, base_type(hints[f.name])[0] if f.name != "extra" else tuple, f.metadata.get("help", ""))
            for f in dataclasses.fields(SlurmOptions)]


def parse_slurm(raw: dict[str, Any]) -> SlurmOptions:
    """Validated options from the section's values (text, or a bool for requeue); empty
    text is the field's default. Raises ConfigError naming the --slurm-* flag."""
    values: dict[str, Any] = {}
    for name, kind, _ in slurm_fields():
        value = raw.get(name)
        if kind is bool:
            values[name] = value in (True, "yes")
            continue
        text = str(value or "").strip()
        if not text:
            continue
        if kind is int:
            try:
                values[name] = int(text)
            except ValueError:
                raise ConfigError(f"{slurm_flag(name)} must be a whole number (got {text!r})") from None
        elif kind is tuple:
            values[name] = tuple(x.strip() for x in text.split(EXTRA_SEPARATOR) if x.strip())
        else:
            values[name] = text
    try:
        return SlurmOptions(**values).validate()
    except ValueError as e:
        raise ConfigError(str(e)) from None


class SlurmSection(Vertical):
    DEFAULT_CSS = """
    SlurmSection {
        height: auto;
    }
    SlurmSection .form-row {
        height: 1;
        padding: 0 1;
    }
    SlurmSection .field-label {
        width: 20;
        padding: 0 1 0 0;
    }
    SlurmSection Input, LauncherSection Select {
        width: 1fr;
    }
    SlurmSection Switch {
        height: 1;
        border: none;
        padding: 0;
    }
    SlurmSection .-invalid .field-label {
        color: $error;
        text-style: bold reverse;
    }
    """

    def __init__(self, options: SlurmOptions | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._options = options or SlurmOptions()

    def compose(self) -> ComposeResult:
        yield Static("Slurm (sbatch; the runs directory must be on a filesystem the nodes share)",
                     classes="group-title")
        for name, kind, help_text in slurm_fields():
            value = getattr(self._options, name)
            with Horizontal(classes="form-row", id=f"slurm-row-{dash(name)}"):
                yield Label(slurm_flag(name).removeprefix("--") if name != "requeue" else "slurm-requeue",
                            classes="field-label")
                if kind is bool:
                    yield Select([("yes", "yes"), ("no", "no")], value="yes" if value else "no", allow_blank=False,
                                 compact=True, id=f"slurm-{dash(name)}", tooltip=help_text)
                else:
                    text = EXTRA_SEPARATOR.join(value) if kind is tuple else ("" if value is None else str(value))
                    hint = (f"sbatch lines separated by '{EXTRA_SEPARATOR}', e.g. --qos=high" if kind is tuple
                            else "one per GPU, else 1" if name == "procs_per_node"
                            else "the cluster's default" if value is None else "")
                    yield Input(text, placeholder=hint, compact=True, id=f"slurm-{dash(name)}", tooltip=help_text)

    def raw(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, _, _ in slurm_fields():
            control = self.query_one(f"#slurm-{dash(name)}")
            out[name] = control.value
        return out

    def options(self) -> SlurmOptions:
        """The validated options (a ConfigError names the --slurm-* flag to fix)."""
        return parse_slurm(self.raw())

    def mark(self, message: str | None) -> None:
        """Highlight the row an error message is about (its --slurm-* flag)."""
        for name, _, _ in slurm_fields():
            flag = slurm_flag(name) if name != "requeue" else "--slurm-requeue"
            self.query_one(f"#slurm-row-{dash(name)}").set_class(bool(message) and flag in (message or ""), "-invalid")
