"""The New-run form's model is generated from PretrainConfig and round-trips through flags."""

from __future__ import annotations

import dataclasses

import pytest

from core.config import PRESETS, ConfigError, PretrainConfig, preset
from simclr_tui.configform import (
    DATASET_DEFAULTS,
    base_values,
    config_from_run,
    field_in_error,
    field_specs,
    grouped_specs,
    parse_form,
    pretrain_args,
    to_text,
)


def cli_parse(args: list[str]) -> PretrainConfig:
    """An independent reading of `--preset P --flag value ...` the way the runner applies it."""
    values: dict = {}
    it = iter(args)
    for flag in it:
        value = next(it)
        if flag == "--preset":
            values.update(preset(value))
        else:
            values[flag[2:].replace("-", "_")] = value
    return PretrainConfig.from_dict(values).validate()


def test_every_config_field_is_in_the_form_once():
    names = [f.name for f in dataclasses.fields(PretrainConfig)]
    assert [s.name for s in field_specs()] == names
    grouped = [s.name for _, specs in grouped_specs() for s in specs]
    assert sorted(grouped) == sorted(names)
    assert all(s.help for s in field_specs())


@pytest.mark.parametrize("name", [None, *PRESETS])
def test_form_text_round_trips_through_the_command_line(name):
    values = base_values(name)
    config = parse_form({k: to_text(v) if not isinstance(v, bool) else v for k, v in values.items()})
    assert config == PretrainConfig.from_dict(values)
    changed = config.replace(lr=0.123, blur=True, ema=0.99, subset=None, data_parallel=True)
    args = pretrain_args(changed, name)
    assert cli_parse(args) == changed
    if name:
        assert args[:2] == ["--preset", name]
    assert "--blur" in args and args[args.index("--blur") + 1] == "true"


def test_only_differences_from_the_preset_become_flags():
    config = PretrainConfig.from_dict(preset("tiny")).replace(epochs=3)
    assert pretrain_args(config, "tiny") == ["--preset", "tiny", "--epochs", "3"]
    # clearing an optional value the preset sets is spelled out as none
    cpu = PretrainConfig.from_dict(preset("cifar10-cpu")).replace(time_budget=None)
    assert pretrain_args(cpu, "cifar10-cpu")[-2:] == ["--time-budget", "none"]


def test_dataset_defaults_follow_the_paper_recipes():
    assert DATASET_DEFAULTS["stl10"]["image_size"] == 96 and DATASET_DEFAULTS["stl10"]["jitter_strength"] == 1.0
    assert DATASET_DEFAULTS["cifar10"]["image_size"] == 32 and DATASET_DEFAULTS["cifar10"]["jitter_strength"] == 0.5
    stl = PretrainConfig(**{**PretrainConfig().to_dict(), "dataset": "stl10", **DATASET_DEFAULTS["stl10"]})
    assert stl.use_blur and not PretrainConfig().use_blur


@pytest.mark.parametrize("raw, field", [
    ({"batch_size": "1"}, "batch_size"),
    ({"batch_size": "many"}, "batch_size"),
    ({"lr": "-1"}, "lr"),
    ({"temperature": "0"}, "temperature"),
    ({"device": "gpu"}, "device"),
    ({"ema": "1.5"}, "ema"),
    ({"epochs": ""}, "epochs"),
])
def test_errors_name_the_field_to_fix(raw, field):
    with pytest.raises(ConfigError) as e:
        parse_form(raw)
    assert field_in_error(str(e.value)) == field


def test_cloning_drops_unknown_keys():
    values, dropped = config_from_run({"dataset": "stl10", "lr": 0.3, "from_the_future": 1})
    assert dropped == ["from_the_future"] and values["dataset"] == "stl10" and values["lr"] == 0.3
