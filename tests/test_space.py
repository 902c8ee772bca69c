"""`simclr sweep --sample N --space KEY=DIST`: the search space (core/jobs/space.py) on its own.

Parsing refuses every bad spec with one line naming it; drawing gives distinct, validated,
reproducible settings, multiplied by the seeds exactly as a grid is; the space survives a
round trip through the JSON a sweep records.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from core.config import ConfigError
from core.jobs import space, sweep

ROOT = Path(__file__).resolve().parents[1]
LR_BATCH = ["lr=loguniform:1e-4:1e-2", "batch_size=choice:32,64"]


def refusal(specs: list[str], grid: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        space.parse_space(specs, grid=grid)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_each_kind_becomes_the_optuna_distribution_typed_by_the_field():
    parsed = space.parse_space(["lr=loguniform:1e-4:1e-2", "temperature=uniform:0.05:0.5", "epochs=int:10:100",
                                "width=logint:8:64", "batch-size=choice:128,256", "optimizer=choice:adam,lars",
                                "ema=choice:none,0.996", "blur=choice:yes,no"])
    assert list(parsed) == ["lr", "temperature", "epochs", "width", "batch_size", "optimizer", "ema", "blur"]
    assert parsed["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert parsed["temperature"] == FloatDistribution(0.05, 0.5)
    assert parsed["epochs"] == IntDistribution(10, 100)
    assert parsed["width"] == IntDistribution(8, 64, log=True)
    assert parsed["batch_size"] == CategoricalDistribution([128, 256])
    assert all(type(c) is int for c in parsed["batch_size"].choices)
    assert parsed["optimizer"].choices == ("adam", "lars")
    assert parsed["ema"].choices == (None, 0.996) and parsed["blur"].choices == (True, False)
    assert space.size(parsed) is None and space.size({k: parsed[k] for k in ("epochs", "batch_size")}) == 91 * 2


@pytest.mark.parametrize("specs, grid, expected", [
    (["lr=gaussian:0:1"], (), "--space 'lr=gaussian:0:1': unknown kind 'gaussian'; use one of uniform, loguniform"),
    (["lr=logunif:1e-4:1e-2"], (), "unknown kind 'logunif' (did you mean loguniform?)"),
    (["lr=uniform:0.1"], (), "--space 'lr=uniform:0.1': uniform takes two bounds LOW:HIGH, got 1"),
    (["lr=loguniform:1e-4:1e-3:1e-2"], (), "loguniform takes two bounds LOW:HIGH, got 3"),
    (["temperature=uniform:0.5:0.5"], (), "--space 'temperature=uniform:0.5:0.5': LOW must be below HIGH (got 0.5 >= 0.5)"),
    (["epochs=int:100:10"], (), "LOW must be below HIGH (got 100 >= 10)"),
    (["lr=loguniform:0:1e-2"], (), "--space 'lr=loguniform:0:1e-2': loguniform needs LOW > 0 (got 0)"),
    (["width=logint:0:64"], (), "logint needs LOW >= 1 (got 0)"),
    (["lr=uniform:a:1"], (), "--space 'lr=uniform:a:1': the bound 'a' is not a finite number"),
    (["lr=uniform:0:inf"], (), "the bound 'inf' is not a finite number"),
    (["epochs=int:1.5:10"], (), "--space 'epochs=int:1.5:10': int takes integer bounds, got 1.5:10"),
    (["lr=uniform:0.1:1", "lr=loguniform:1e-4:1"], (), "--space 'lr=loguniform:1e-4:1': lr is given twice"),
    (["lr=uniform:0.1:1", "learning-rate=uniform:0.1:1"], (), "--space learning-rate: not a config key"),
    (["temperature=uniform:0.1:0.5"], ("lr", "temperature"),
     "--space 'temperature=uniform:0.1:0.5': temperature is also given to --grid"),
    (["batch_size=choice:"], (), "--space 'batch_size=choice:': an empty choice"),
    (["batch_size=choice:32,,64"], (), "--space 'batch_size=choice:32,,64': an empty choice"),
    (["batch_size=choice:32,64,32"], (), "--space 'batch_size=choice:32,64,32': the choice '32' is listed twice"),
    (["temperature=choice:0.1,1e-1"], (), "the choice '1e-1' is listed twice (as 0.1)"),
    (["batch_size=choice:32,big"], (), "--space 'batch_size=choice:32,big': batch-size expects int, got 'big'"),
    (["optimizer=choice:adam,lamb"], (), "--space 'optimizer=choice:adam,lamb': optimizer must be one of lars, adam, sgd"),
    (["batch_size=uniform:32:512"], (), "batch-size takes integers; use int:LOW:HIGH or logint:LOW:HIGH"),
    (["optimizer=uniform:0:1"], (), "optimizer is not a number; give its values with choice:A,B"),
    (["lr"], (), "--space 'lr': write KEY=KIND:..., e.g. --space lr=loguniform:1e-4:1e-2"),
    (["lr=0.1,0.2"], (), "--space 'lr=0.1,0.2': write KEY=KIND:"),
    (["temprature=uniform:0.1:0.5"], (), "--space temprature: not a config key (did you mean temperature?)"),
    (["device=choice:cpu,cuda"], (), "--space device: device says where a run runs"),
])
def test_every_bad_spec_is_one_line_naming_it(specs, grid, expected):
    assert expected in refusal(specs, grid)


def test_grid_keys_keep_their_own_flag_in_errors():
    with pytest.raises(ConfigError, match=r"^--grid temprature: not a config key \(did you mean temperature\?\)"):
        sweep.parse_grid(["temprature=0.1,0.2"])
    with pytest.raises(ConfigError, match="^--space temprature: not a config key"):
        sweep.field_name("temprature", "--space")


def test_six_members_are_valid_distinct_within_bounds_and_reproducible():
    members = space.draw(space.parse_space(LR_BATCH), 6, 3, {}, None, "s")
    assert len(members) == 6 and [m.index for m in members] == list(range(6))
    settings = [(m.swept["lr"], m.swept["batch_size"]) for m in members]
    assert len(set(settings)) == 6
    assert all(1e-4 <= lr <= 1e-2 and batch in (32, 64) and type(batch) is int for lr, batch in settings)
    assert all(m.config.lr == m.swept["lr"] and m.config.batch_size == m.swept["batch_size"] for m in members)
    assert all(list(m.swept) == ["lr", "batch_size"] for m in members)
    again = space.draw(space.parse_space(LR_BATCH), 6, 3, {}, None, "s")
    assert again == members
    other = space.draw(space.parse_space(LR_BATCH), 6, 4, {}, None, "s")
    assert [m.swept for m in other] != [m.swept for m in members]
    assert len({m.name for m in members}) == 6


def test_loguniform_spreads_evenly_in_log_space():
    lrs = [m.swept["lr"] for m in space.draw(space.parse_space(LR_BATCH), 200, 0, {}, None, "s")]
    below = sum(lr < 1e-3 for lr in lrs) / len(lrs)  # 1e-3: the geometric mean of the bounds
    assert 0.35 < below < 0.65  # a plain uniform would put ~9% below it
    assert 0.15 < sum(lr < 10 ** -3.5 for lr in lrs) / len(lrs) < 0.35  # a quarter below the log-space quartile


def test_seeds_multiply_the_settings_seeds_outermost():
    members = space.draw(space.parse_space(LR_BATCH), 3, 3, {"epochs": 5}, [0, 1], "s")
    assert [m.swept["seed"] for m in members] == [0, 0, 0, 1, 1, 1]
    assert [m.config.seed for m in members] == [0, 0, 0, 1, 1, 1] and all(m.config.epochs == 5 for m in members)
    settings = [{k: v for k, v in m.swept.items() if k != "seed"} for m in members]
    assert settings[:3] == settings[3:] and len({json.dumps(s) for s in settings[:3]}) == 3
    alone = space.draw(space.parse_space(LR_BATCH), 3, 3, {}, None, "s")
    assert settings[:3] == [m.swept for m in alone]  # the seeds do not change what is drawn
    assert list(members[0].swept) == ["seed", "lr", "batch_size"]
    assert members[0].name.endswith(",seed=0") and members[3].name.endswith(",seed=1")
    assert members[0].name.startswith("s-lr=") and len({m.name for m in members}) == 6
    with pytest.raises(ConfigError, match="give the seeds once"):
        space.draw(space.parse_space(["seed=int:0:9"]), 2, 0, {}, [0, 1], "s")


def test_names_round_floats_but_swept_and_config_keep_them_exact():
    member = space.draw(space.parse_space(["lr=loguniform:1e-4:1e-2"]), 1, 3, {}, None, "s")[0]
    lr = member.swept["lr"]
    assert member.name == f"s-lr={float(f'{lr:.4g}')}" and member.config.lr == lr
    assert repr(lr) != repr(float(f"{lr:.4g}"))  # the exact value is longer than the name's


def test_a_choice_only_space_redraws_repeats_and_says_how_many_it_holds():
    specs = ["batch_size=choice:32,64", "temperature=choice:0.1,0.2,0.3"]
    members = space.draw(space.parse_space(specs), 6, 0, {}, None, "s")
    assert sorted((m.swept["batch_size"], m.swept["temperature"]) for m in members) == \
        [(b, t) for b in (32, 64) for t in (0.1, 0.2, 0.3)]
    with pytest.raises(ConfigError, match=r"^--sample 7: the --space holds only 6 distinct settings; ask for at most 6"):
        space.draw(space.parse_space(specs), 7, 0, {}, None, "s")
    with pytest.raises(ConfigError, match="--sample 0: draw at least 1"):
        space.draw(space.parse_space(specs), 0, 0, {}, None, "s")
    one = space.draw(space.parse_space(["batch_size=choice:32", "epochs=int:1:2"]), 2, 0, {}, None, "s")
    assert sorted(m.name for m in one) == ["s-epochs=1", "s-epochs=2"]  # a single choice does not vary


def test_a_draw_that_fails_validation_names_the_setting_and_the_space_to_narrow():
    with pytest.raises(ConfigError) as info:
        space.draw(space.parse_space(["temperature=uniform:0.1:0.5", "lr=uniform:-1:1"]), 20, 0, {}, None, "s")
    message = str(info.value)
    assert message.startswith("sweep s, drawn setting temperature=") and ",lr=-" in message
    assert "--lr must be positive" in message and message.endswith("narrow --space lr so that every draw is valid")
    with pytest.raises(ConfigError, match="^sweep s, the base config: --batch-size must be at least 2"):
        space.draw(space.parse_space(["lr=loguniform:1e-4:1e-2"]), 2, 0, {"batch_size": 1}, None, "s")


def test_describe_round_trips_through_json():
    specs = ["lr=loguniform:1e-4:1e-2", "temperature=uniform:0.05:0.5", "epochs=int:10:100", "width=logint:8:64",
             "batch_size=choice:128,256", "optimizer=choice:adam,lars", "ema=choice:none,0.996", "blur=choice:yes,no"]
    parsed = space.parse_space(specs)
    described = space.describe(parsed)
    assert described["lr"] == {"kind": "float", "low": 1e-4, "high": 1e-2, "log": True}
    assert described["width"] == {"kind": "int", "low": 8, "high": 64, "log": True}
    assert described["batch_size"] == {"kind": "choice", "choices": [128, 256]}
    back = space.from_description(json.loads(json.dumps(described)))
    assert back == parsed and list(back) == list(parsed)
    assert space.draw(back, 4, 1, {}, None, "s") == space.draw(parsed, 4, 1, {}, None, "s")


@pytest.mark.parametrize("description, expected", [
    ({"lr": {"kind": "normal", "low": 0, "high": 1}}, "the sweep's saved space, lr: kind 'normal' is not float, int or choice"),
    ({"lr": {"kind": "float", "low": 0}}, "the sweep's saved space, lr: {'kind': 'float', 'low': 0} lacks low or high"),
    ({"lr": {"kind": "float", "low": "a", "high": 1}}, "low and high must be numbers"),
    ({"lr": {"kind": "float", "low": 0, "high": 1, "log": True}}, "loguniform needs LOW > 0"),
    ({"batch_size": {"kind": "choice", "choices": []}}, "an empty choice"),
    ({"lr": "uniform"}, "kind None is not float, int or choice"),
    ({"lrr": {"kind": "float", "low": 0, "high": 1}}, "--space lrr: not a config key"),
    ([1], "must be a mapping"),
])
def test_a_damaged_description_is_refused_in_one_line(description, expected):
    with pytest.raises(ConfigError) as info:
        space.from_description(description)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_importing_the_space_does_not_import_optuna():
    code = "import sys, core.jobs.space, core.jobs.sweep; print('optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_floats_at_the_bounds_stay_within_them():
    members = space.draw(space.parse_space(["temperature=uniform:0.05:0.5", "epochs=logint:1:3"]), 50, 7, {}, None, "t")
    assert all(0.05 <= m.swept["temperature"] <= 0.5 and m.swept["epochs"] in (1, 2, 3) for m in members)
    assert all(math.isfinite(m.config.temperature) for m in members)
