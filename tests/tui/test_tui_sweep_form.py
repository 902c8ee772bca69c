"""The New-run form's Queue and sweep section, driven by Pilot; the files on disk are the truth.

Queueing runs the real `python -m core sweep` / `pretrain --queue` (torch-free, well under a
second) through tests/tui/queue_cli_runner.py, which never starts a queue worker, and the app
is made with `start_worker=False`: nothing trains, the queued runs stay queued.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from textual.widgets import Checkbox, Input, Select
from tui_helpers import screen_text, wait_for, wait_screen, wait_text

from core.runs import read_json
from simclr_tui.app import make_app
from simclr_tui.screens.new_run import NewRunScreen
from simclr_tui.screens.runs import RunsScreen
from simclr_tui.widgets.queue_section import SweepKeyRow

pytestmark = pytest.mark.asyncio
SIZE = (120, 40)
QUEUE_CLI = [sys.executable, str(Path(__file__).with_name("queue_cli_runner.py"))]
REFUSING = [sys.executable, "-c",
            "import sys; print('simclr: error: the queue is full (a test)', file=sys.stderr); sys.exit(2)"]


def app_for(runs_dir, runner=None):
    return make_app(runs_dir, runner=runner or QUEUE_CLI, poll_interval=0.1, start_worker=False)


async def open_form(pilot) -> NewRunScreen:
    await pilot.press("n")
    form = await wait_screen(pilot, NewRunScreen, "#sweep-seeds")
    form.query_one("#preset", Select).value = "tiny"
    await pilot.pause()
    return form


async def sweep_in(pilot, form: NewRunScreen, name: str, keys: dict[str, str], seeds: str = "", **then: bool):
    """Fill the section as a person would: a row per key (`+ key` for more), seeds, then-boxes."""
    form.query_one("#sweep-name", Input).value = name
    for i, (key, values) in enumerate(keys.items()):
        if i:
            await pilot.click("#sweep-add")
            await pilot.pause()
        row = list(form.query(SweepKeyRow))[i]
        row.query_one(".sweep-key", Select).value = key
        row.query_one(".sweep-values", Input).value = values
    form.query_one("#sweep-seeds", Input).value = seeds
    for box, on in then.items():
        form.query_one(f"#then-{box}", Checkbox).value = on
    form.query_one("#sweep-seeds", Input).focus()
    await pilot.pause(0.2)
    form.query_one("#sweep-size").scroll_visible(animate=False)
    await pilot.pause()


def queued_dirs(runs_dir: Path) -> list[Path]:
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


async def test_the_sweep_shows_its_run_count_and_command(runs_dir):
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot)
        form.query_one("#sweep-size").scroll_visible(animate=False)
        await wait_for(pilot, lambda: "no sweep: Queue adds this one run" in screen_text(app), what="the sweep line")
        await sweep_in(pilot, form, "ts", {"temperature": "0.1,0.2"}, "0,1,2", knn=True)
        assert form.error is None and form.sweep.size == 6
        runs = runs_dir.resolve()
        assert form.command == (f"simclr sweep ts --runs-dir {runs} --grid temperature=0.1,0.2 --seeds 0,1,2 "
                                f"--then knn -- --preset tiny")
        text = screen_text(app)
        assert "sweep ts: 6 runs" in text and "Queue sweep (6 runs)" in text
        # a second key multiplies; a key the form also sets is left to the grid
        form.fields()["lr"].control.value = "0.005"
        await sweep_in(pilot, form, "ts", {"temperature": "0.1,0.2", "lr": "0.001,0.002,0.003"}, "0,1",
                       linear=True, knn=False, finetune=True)
        assert form.sweep.size == 12
        assert form.command == (f"simclr sweep ts --runs-dir {runs} --grid temperature=0.1,0.2 "
                                f"--grid lr=0.001,0.002,0.003 --seeds 0,1 --then linear-eval "
                                f"--then 'finetune --label-fraction 0.1' -- --preset tiny")
        assert form.sweep.members[0].name == "ts-temperature=0.1,lr=0.001,seed=0"
        await pilot.press("ctrl+o")  # copies the sweep command (no error)
        assert form.error is None


async def test_a_bad_value_shows_the_error_and_queues_nothing(runs_dir):
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot)
        await sweep_in(pilot, form, "bad", {"temperature": "0.1,x"}, "0,1")
        assert form.error == "sweep bad, seed=0,temperature=x: temperature expects float, got 'x'"
        await wait_text(pilot, "temperature expects float")
        assert form.query_one(SweepKeyRow).has_class("-invalid")
        await pilot.press("ctrl+g")
        await pilot.press("ctrl+s")
        await pilot.pause(0.5)
        assert isinstance(app.screen, NewRunScreen) and queued_dirs(runs_dir) == []
        # bad seeds and a bad label fraction are caught the same way
        await sweep_in(pilot, form, "bad", {"temperature": "0.1,0.2"}, "one,two")
        assert form.error.startswith("--seeds 'one,two'")
        await sweep_in(pilot, form, "bad", {"temperature": "0.1,0.2"}, "0", finetune=True)
        form.query_one("#then-fraction", Input).value = "2"
        await pilot.pause(0.2)
        assert form.error.startswith("--then finetune: the label fraction must be in (0, 1]")
        await pilot.press("ctrl+g")
        await pilot.pause(0.5)
        assert queued_dirs(runs_dir) == []


async def test_queue_makes_the_sweeps_queued_runs(runs_dir):
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot)
        await sweep_in(pilot, form, "ts", {"temperature": "0.1,0.2"}, "0,1", knn=True)
        await pilot.press("ctrl+g")
        await wait_screen(pilot, RunsScreen, "#runs")
        names = [p.name for p in queued_dirs(runs_dir)]
        assert names == ["ts-temperature=0.1,seed=0", "ts-temperature=0.1,seed=1", "ts-temperature=0.2,seed=0",
                         "ts-temperature=0.2,seed=1"]
        for name in names:
            sweep = read_json(runs_dir / name / "sweep.json")
            assert sweep["sweep"] == "ts" and sweep["size"] == 4 and set(sweep["swept"]) == {"seed", "temperature"}
            assert read_json(runs_dir / name / "status.json")["state"] == "queued"
            assert [t["argv"] for t in read_json(runs_dir / name / "queue.json")["then"]] == [["knn"]]
            cfg = read_json(runs_dir / name / "config.json")
            assert cfg["temperature"] == sweep["swept"]["temperature"] and cfg["seed"] == sweep["swept"]["seed"]
            assert cfg["epochs"] == 2 and cfg["dataset"] == "synthetic"  # the form's preset
        await wait_for(pilot, lambda: all(app.runs.get(n) and app.runs[n].state == "queued" for n in names),
                       what="queued rows")
        assert any("4 runs queued" in str(n.message) for n in app._notifications)
        # the same sweep name again is refused by the form, before any command runs
        await pilot.press("n")
        form = await wait_screen(pilot, NewRunScreen, "#sweep-seeds")
        await sweep_in(pilot, form, "ts", {"temperature": "0.3"}, "")
        assert form.error == f"sweep ts already exists in {runs_dir}; choose another sweep name"


async def test_queue_one_run_with_an_evaluation_after_it(runs_dir):
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot)
        form.query_one("#run-name", Input).value = "later"
        form.query_one("#then-linear", Checkbox).value = True
        await wait_text(pilot, "Launch now", "Queue")
        assert form.sweep is None
        await pilot.click("#queue")
        await wait_screen(pilot, RunsScreen, "#runs")
        assert read_json(runs_dir / "later" / "status.json")["state"] == "queued"
        queue = json.loads((runs_dir / "later" / "queue.json").read_text())
        assert [t["argv"] for t in queue["then"]] == [["linear-eval"]]
        assert read_json(runs_dir / "later" / "config.json")["epochs"] == 2
        assert not (runs_dir / "later" / "sweep.json").exists()
        await wait_for(pilot, lambda: app.runs.get("later") and app.runs["later"].state == "queued", what="row")


async def test_the_runners_error_is_shown_in_the_form(runs_dir):
    app = app_for(runs_dir, runner=REFUSING)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot)
        await sweep_in(pilot, form, "ts", {"temperature": "0.1,0.2"})
        await pilot.press("ctrl+s")  # with a sweep defined, the primary action queues it
        await wait_for(pilot, lambda: form.error == "the queue is full (a test)", what="the runner's error")
        assert isinstance(app.screen, NewRunScreen)
        # the attribute is set before the form repaints: wait for the screen to show it (CI under load)
        await wait_for(pilot, lambda: "✗ the queue is full (a test)" in screen_text(app), what="the error shown")
