"""One row of the New-run form, built from a `FieldSpec` (the config field's type and help)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Label, Select, Switch

from ..configform import FieldSpec, to_text


class ConfigField(Horizontal):
    """The flag name and the right control for the field's type; the help is its tooltip
    (and the form shows it for the focused field).

    The control's id is ``field-<name>``; `raw` gives the text `PretrainConfig.from_dict`
    understands ("" for none/auto).
    """

    DEFAULT_CSS = """
    ConfigField {
        height: auto;
        padding: 0 1;
    }
    ConfigField .field-label {
        width: 20;
        padding: 0 1 0 0;
    }
    ConfigField Input, ConfigField Select {
        width: 1fr;
    }
    ConfigField Switch {
        height: 1;
        border: none;
        padding: 0;
    }
    ConfigField.-invalid .field-label {
        color: $error;
        text-style: bold reverse;
    }
    """

    def __init__(self, spec: FieldSpec, value: Any) -> None:
        super().__init__(id=f"cf-{spec.name}")
        self.spec = spec
        self._initial = value

    @property
    def help(self) -> str:
        spec = self.spec
        return spec.help + (" (empty = none)" if spec.optional and spec.control == "input" else "")

    def compose(self) -> ComposeResult:
        spec = self.spec
        yield Label(spec.flag[2:], classes="field-label")
        control_id = f"field-{spec.name}"
        if spec.control == "select":
            control = Select([(o, o) for o in spec.options], value=self._select_value(self._initial),
                             allow_blank=False, compact=True, id=control_id)
        elif spec.control == "switch":
            control = Switch(value=bool(self._initial), id=control_id)
        else:
            kind = {int: "integer", float: "number"}.get(spec.kind, "text")
            # plain text on purpose: the config's own parser gives the error message
            control = Input(to_text(self._initial), placeholder="none" if spec.optional else kind, compact=True,
                            id=control_id)
        control.tooltip = self.help
        yield control

    def _select_value(self, value: Any) -> str:
        if self.spec.kind is bool:
            return "auto" if value is None else to_text(value)
        return str(value)

    @property
    def control(self) -> Input | Select | Switch:
        return self.query_one(f"#field-{self.spec.name}")

    @property
    def raw(self) -> Any:
        c = self.control
        if isinstance(c, Switch):
            return c.value
        if isinstance(c, Select):
            return "" if self.spec.kind is bool and c.value == "auto" else c.value
        return c.value

    def set_value(self, value: Any) -> None:
        c = self.control
        if isinstance(c, Switch):
            c.value = bool(value)
        elif isinstance(c, Select):
            c.value = self._select_value(value)
        else:
            c.value = to_text(value)

    def set_invalid(self, invalid: bool) -> None:
        self.set_class(invalid, "-invalid")
