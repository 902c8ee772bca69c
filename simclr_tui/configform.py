"""The New-run form's model: generated from `core.config.PretrainConfig`, never hand-listed.

A field added to `PretrainConfig` (with its help string) appears in the form, in the
command preview and in the launched command without touching this package. The form holds
text; `parse_form` turns it into a validated `PretrainConfig` or a `ConfigError` whose
message names the flag to fix.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from typing import Any, get_type_hints

from core.config import (
    PRESETS,
    ConfigError,
    PretrainConfig,
    base_type,
    dash,
    literal_choices,
)

#: Values that follow the dataset when a person picks one in the form (never on load/clone):
#: CIFAR-sized images get the CIFAR recipe (32 px, s=0.5, no blur), STL-10 and folders the
#: ImageNet-style one (s=1.0, blur on through blur=auto at >= 96 px).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar10": {"image_size": 32, "jitter_strength": 0.5, "blur": None},
    "cifar100": {"image_size": 32, "jitter_strength": 0.5, "blur": None},
    "stl10": {"image_size": 96, "jitter_strength": 1.0, "blur": None},
    "folder": {"image_size": 128, "jitter_strength": 1.0, "blur": None},
    "synthetic": {"image_size": 32, "jitter_strength": 0.5, "blur": None},
}

#: Sections of the form, by field name; fields not listed land in "Other".
GROUPS: dict[str, tuple[str, ...]] = {
    "Data": ("dataset", "data_dir", "image_size", "subset", "workers"),
    "Model": ("backbone", "width", "projection_dim"),
    "Schedule": ("batch_size", "micro_batch", "epochs", "max_steps", "time_budget", "warmup_epochs"),
    "Optimiser": ("optimizer", "lr", "lr_scaling", "weight_decay", "temperature"),
    "Augmentation": ("jitter_strength", "blur"),
    "Runtime": ("device", "precision", "data_parallel", "compile", "deterministic", "seed", "nan_policy"),
    "Evaluation & checkpoints": ("ema", "knn_every", "knn_k", "checkpoint_every"),
}


@dataclass(frozen=True)
class FieldSpec:
    """One form field, derived from a PretrainConfig dataclass field."""

    name: str
    kind: type  # int, float, str or bool
    optional: bool
    choices: tuple[str, ...]
    help: str
    default: Any

    @property
    def flag(self) -> str:
        return "--" + dash(self.name)

    @property
    def control(self) -> str:
        """Which widget shows it: select (choices, optional bool), switch (bool) or input."""
        if self.choices or (self.kind is bool and self.optional):
            return "select"
        return "switch" if self.kind is bool else "input"

    @property
    def options(self) -> tuple[str, ...]:
        if self.choices:
            return self.choices
        return ("auto", "true", "false") if self.kind is bool else ()


@functools.cache
def field_specs() -> tuple[FieldSpec, ...]:
    hints = get_type_hints(PretrainConfig)
    defaults = PretrainConfig().to_dict()
    specs = []
    for f in dataclasses.fields(PretrainConfig):
        kind, optional = base_type(hints[f.name])
        specs.append(FieldSpec(f.name, kind, optional, literal_choices(hints[f.name]),
                               f.metadata.get("help", ""), defaults[f.name]))
    return tuple(specs)


def grouped_specs() -> list[tuple[str, list[FieldSpec]]]:
    specs = {s.name: s for s in field_specs()}
    out = []
    for title, names in GROUPS.items():
        group = [specs.pop(n) for n in names if n in specs]
        if group:
            out.append((title, group))
    if specs:
        out.append(("Other", list(specs.values())))
    return out


def base_values(preset: str | None) -> dict[str, Any]:
    """The config a launch starts from: defaults with the preset's overrides."""
    values = PretrainConfig().to_dict()
    if preset:
        values.update(PRESETS[preset])
    return values


def to_text(value: Any) -> str:
    """A value as the form shows it; parse_form reads it back to the same value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_form(raw: dict[str, Any]) -> PretrainConfig:
    """A validated config from the form's text values; raises ConfigError."""
    return PretrainConfig.from_dict(raw).validate()


def config_from_run(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A run's config.json as form values, and the keys this version does not know."""
    known = {s.name for s in field_specs()}
    values = base_values(None)
    dropped = sorted(k for k in config if k not in known)
    values.update({k: v for k, v in config.items() if k in known})
    return values, dropped


def pretrain_args(config: PretrainConfig, preset: str | None) -> list[str]:
    """`--preset P` and a flag for every value that differs from what the preset gives."""
    base = base_values(preset)
    args = ["--preset", preset] if preset else []
    for spec in field_specs():
        value = getattr(config, spec.name)
        if value != base[spec.name]:
            args += [spec.flag, to_text(value) if value is not None else "none"]
    return args


_FLAG_RE = re.compile(r"--([a-z0-9][a-z0-9-]*)|^([a-z][a-z0-9-]*) ")


def field_in_error(message: str) -> str | None:
    """The field a ConfigError message is about (it starts with the flag), if any."""
    names = {dash(s.name): s.name for s in field_specs()}
    for m in _FLAG_RE.finditer(message):
        name = m.group(1) or m.group(2)
        if name in names:
            return names[name]
    return None


__all__ = ["ConfigError", "DATASET_DEFAULTS", "FieldSpec", "base_values", "config_from_run", "field_in_error",
           "field_specs", "grouped_specs", "parse_form", "pretrain_args", "to_text"]
