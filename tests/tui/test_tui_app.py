"""The app end to end with the fake runner: Pilot drives it like a person would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from textual.widgets import DataTable, Input, Select
from tui_helpers import FAKE_RUNNER, screen_text, wait_for, wait_screen, wait_text

from tests.helpers import write_status

from simclr_tui.app import make_app
from simclr_tui.screens.compare import CompareScreen
from simclr_tui.screens.detail import RunDetailScreen
from simclr_tui.screens.dialogs import ConfirmScreen, EvalDialog
from simclr_tui.screens.help import HelpScreen
from simclr_tui.screens.new_run import NewRunScreen
from simclr_tui.screens.runs import RunsScreen
from simclr_tui.widgets.config_field import ConfigField
from simclr_tui.widgets.plot import MetricPlot

pytestmark = pytest.mark.asyncio
SIZE = (120, 36)


def app_for(runs_dir, **kw):
    return make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1, **kw)


def state(app, key):
    view = app.runs.get(key)
    return view.state if view else None


async def new_run(pilot, preset: str | None = "tiny", name: str | None = None, **fields) -> NewRunScreen:
    """Open the form, choose a preset, fill fields (by setting the controls as a person would)."""
    await pilot.press("n")
    screen = await wait_screen(pilot, NewRunScreen, "#preset")
    if preset:
        screen.query_one("#preset", Select).value = preset
        await pilot.pause()
    if name:
        screen.query_one("#run-name", Input).value = name
    for field, value in fields.items():
        screen.query_one(f"#cf-{field}", ConfigField).control.value = value
        await pilot.pause()
    await pilot.pause()
    return screen


def spawn(app, name: str, *flags: str) -> str:
    """Start a run the quick way (the form has its own tests)."""
    app.launcher.pretrain(name, ["--preset", "tiny", *flags])
    app.poll_now()
    return name


async def launch_run(pilot, name: str, **fields) -> str:
    await new_run(pilot, name=name, **fields)
    await pilot.press("ctrl+s")
    await wait_screen(pilot, RunDetailScreen, "#plot-loss")
    return name


# ---------------------------------------------------------------------- the main journey
async def test_create_watch_stop_resume_evaluate(runs_dir, slow_runs):
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_text(pilot, "No runs in")
        key = await launch_run(pilot, "first", epochs="3")
        assert app.screen.key == "first"
        # a real runner starts (python, torch, data): seconds on an idle machine, more under load
        await wait_for(pilot, lambda: state(app, key) == "running", timeout=60, what="running")
        # the loss panel updates as the run logs
        plot = app.screen.query_one("#plot-loss", MetricPlot)
        await wait_for(pilot, lambda: plot.lines and len(plot.lines[0].ys) >= 3, what="loss points")
        n = len(plot.lines[0].ys)
        await wait_for(pilot, lambda: len(plot.lines[0].ys) > n, what="more loss points")
        await wait_text(pilot, "training loss")

        await pilot.press("x")
        await wait_for(pilot, lambda: state(app, key) == "stopped", what="stopped")
        await pilot.press("r")
        await wait_for(pilot, lambda: state(app, key) == "running", timeout=60, what="running again")
        await wait_for(pilot, lambda: state(app, key) == "finished", timeout=30, what="finished")

        await pilot.press("e")
        dialog = await wait_screen(pilot, EvalDialog, "#eval-ckpt")
        assert dialog.query_one("#eval-ckpt", Select).value == "last"
        await pilot.click("#launch")
        job = "first/eval/linear-last"
        await wait_for(pilot, lambda: state(app, job) == "finished", what="linear eval finished")
        await wait_for(pilot, lambda: app.runs[job].best_acc is not None, what="accuracy")
        assert app.runs[job].best_acc == 0.8
        assert app.runs[key].best_acc == 0.8  # the run's best includes its evaluations

        await pilot.press("escape")
        await wait_screen(pilot, RunsScreen, "#runs")
        text = await wait_text(pilot, "└ linear-last", "80.0%", what="the job row on screen")
        assert "└ linear-last" in text and "80.0%" in text


async def test_invalid_form_shows_the_error_and_launches_nothing(runs_dir, fast_runs):
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        form = await new_run(pilot, batch_size="1")
        assert form.error.startswith("--batch-size must be at least 2")
        await wait_text(pilot, "--batch-size must be at least 2")
        assert form.query_one("#cf-batch_size", ConfigField).has_class("-invalid")
        await pilot.press("ctrl+s")
        await pilot.click("#launch")
        await pilot.pause(0.5)
        assert isinstance(app.screen, NewRunScreen)
        # nothing launched: no run directory (the Views panel's pictures live in the hidden .tui-cache)
        assert app.launcher.children == [] and [p for p in runs_dir.iterdir() if not p.name.startswith(".")] == []
        # a bad run name is caught the same way
        form.query_one("#cf-batch_size", ConfigField).control.value = "32"
        form.query_one("#run-name", Input).value = "../escape"
        await wait_for(pilot, lambda: "not allowed" in (form.error or ""), what="the run-name error")
        # fixing it shows the command that will run
        form.query_one("#run-name", Input).value = "ok-name"
        await wait_for(pilot, lambda: form.error is None, what="the form to validate")
        assert form.command == f"simclr pretrain --run-dir {runs_dir.resolve() / 'ok-name'} --preset tiny"


async def test_dataset_sets_its_defaults_and_preset_fills_the_form(runs_dir):
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        form = await new_run(pilot, preset="tiny")
        f = form.fields()
        assert f["epochs"].raw == "2" and f["optimizer"].raw == "adam"  # from the preset
        f["dataset"].control.value = "stl10"
        await pilot.pause(0.2)
        assert f["image_size"].raw == "96" and f["jitter_strength"].raw == "1.0"
        assert form.blur_note == "blur is now on (96 px)"
        f["dataset"].control.value = "cifar10"
        await pilot.pause(0.2)
        assert f["image_size"].raw == "32" and f["jitter_strength"].raw == "0.5"
        assert "--dataset cifar10" in form.command and "--image-size 32" in form.command


async def test_compare_two_runs(runs_dir, fast_runs):
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        spawn(app, "a", "--lr", "0.001")
        spawn(app, "b", "--lr", "0.002")
        await wait_for(pilot, lambda: state(app, "a") == state(app, "b") == "finished", what="finished")
        table = app.screen.query_one("#runs", DataTable)
        table.move_cursor(row=0)
        await pilot.press("space", "space", "c")
        screen = await wait_screen(pilot, CompareScreen, "#diff-table")
        await wait_for(pilot, lambda: "a" in app.details and "b" in app.details, what="details")
        await pilot.pause(0.3)
        diff = screen.query_one("#diff-table", DataTable)
        rows = [diff.get_row_at(i) for i in range(diff.row_count)]
        assert rows == [["lr", "0.001", "0.002"]]
        metrics = screen.query_one("#metrics-table", DataTable)
        assert metrics.get_row_at(0) == ["state", "finished", "finished"]
        await pilot.press("2")
        await pilot.pause(0.3)
        assert len(screen.query_one("#cmp-loss", MetricPlot).lines) == 2
        assert len(screen.query_one("#cmp-acc", MetricPlot).lines) == 2


async def test_quit_and_reattach(runs_dir, slow_runs):
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        await launch_run(pilot, "survivor", epochs="20")
        await wait_for(pilot, lambda: state(app, "survivor") == "running", what="running")
        await pilot.press("q")
    # the app is gone; the run is not
    again = app_for(runs_dir)
    async with again.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: state(again, "survivor") == "running", what="reattached as running")
        step = again.runs["survivor"].step or 0
        await wait_for(pilot, lambda: (again.runs["survivor"].step or 0) > step, what="live progress")
        again.screen.query_one("#runs", DataTable).focus()
        await pilot.press("enter")
        detail = await wait_screen(pilot, RunDetailScreen, "#plot-loss")
        plot = detail.query_one("#plot-loss", MetricPlot)
        await wait_for(pilot, lambda: plot.lines, what="curves after reattaching")
        await pilot.press("x")
        await wait_for(pilot, lambda: state(again, "survivor") == "stopped", what="stopped")


async def test_killed_run_is_shown_as_crashed(runs_dir, slow_runs):
    proc = subprocess.Popen([*FAKE_RUNNER, "pretrain", "--run-dir", str(runs_dir / "victim"), "--preset", "tiny",
                             "--epochs", "20"], start_new_session=True, stdout=subprocess.DEVNULL)
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: state(app, "victim") == "running", what="running")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        await wait_for(pilot, lambda: state(app, "victim") == "crashed", what="crashed")
        await wait_for(pilot, lambda: "crashed" in screen_text(app), what="crashed on screen")


async def test_damaged_files_never_crash_the_app(runs_dir, fast_runs):
    subprocess.run([*FAKE_RUNNER, "pretrain", "--run-dir", str(runs_dir / "good"), "--preset", "tiny"], check=True,
                   stdout=subprocess.DEVNULL)
    broken_files = (("bad-status", "status.json"), ("bad-config", "config.json"), ("bad-metrics", "metrics.jsonl"))
    for name, broken in broken_files:
        src = runs_dir / "good"
        dst = runs_dir / name
        subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
        data = (dst / broken).read_bytes()
        (dst / broken).write_bytes(data[: len(data) // 2] + b"\x00garbage")
    (runs_dir / "empty-status").mkdir()
    (runs_dir / "empty-status" / "status.json").write_text("")  # deliberately broken: by hand, not core's writer
    weird = runs_dir / "wrong-types"
    subprocess.run(["cp", "-r", str(runs_dir / "good"), str(weird)], check=True)
    # deliberately wrong types: by hand, not core's writer
    (weird / "status.json").write_text('{"kind": 5, "state": "running", "pid": "x", "pgid": [], "host": {}, '
                                       '"epoch": "e", "created": "yesterday", "heartbeat": "now"}')
    (weird / "config.json").write_text('{"dataset": 3, "batch_size": "many", "lr": [1]}')
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(app.runs) == 6 and app.polls > 2, what="all runs")
        for name in ("bad-status", "bad-config", "bad-metrics", "empty-status", "wrong-types"):
            assert app.runs[name].display_state == "damaged", name
            assert app.runs[name].damage
        assert app.runs["good"].display_state == "finished"
        assert app.runs["bad-config"].loss is not None  # shows what it can
        await pilot.pause(0.2)
        rows = [ln for ln in screen_text(app).splitlines()[1:] if "damaged" in ln]
        assert len(rows) == 5
        for name in ("bad-status", "bad-config", "bad-metrics", "empty-status", "wrong-types"):
            app.open_run(name)
            await wait_for(pilot, lambda: "damaged" in screen_text(app) or "unreadable" in screen_text(app),
                           what=f"{name} shown damaged")
            await pilot.press("3", "escape")
        assert isinstance(app.screen, RunsScreen)


async def test_delete_asks_first(runs_dir, fast_runs):
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        spawn(app, "doomed")
        await wait_for(pilot, lambda: state(app, "doomed") == "finished", what="finished")
        app.open_run("doomed")
        await pilot.pause()
        await pilot.press("d")
        await wait_screen(pilot, ConfirmScreen, "#yes")
        await pilot.press("n")
        await pilot.pause(0.2)
        assert (runs_dir / "doomed").exists()
        await pilot.press("d")
        await wait_screen(pilot, ConfirmScreen, "#yes")
        await pilot.press("y")
        await wait_for(pilot, lambda: "doomed" not in app.runs, what="gone")
        assert not (runs_dir / "doomed").exists() and isinstance(app.screen, RunsScreen)


async def test_sort_filter_select(runs_dir, fast_runs):
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        for name in ("zeta", "alpha", "mid"):
            spawn(app, name)
        await wait_for(pilot, lambda: all(state(app, n) == "finished" for n in ("zeta", "alpha", "mid")))
        screen = app.screen
        table = screen.query_one("#runs", DataTable)
        assert screen._order == ["alpha", "mid", "zeta"]
        await pilot.click("#runs", offset=(6, 0))  # the "Run" header: reverse
        await pilot.pause(0.1)
        assert screen._order == ["zeta", "mid", "alpha"]
        await pilot.press("slash", "m", "i")
        await pilot.pause(0.1)
        assert screen._order == ["mid"]
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert len(screen._order) == 3
        table.focus()
        await pilot.press("a")
        assert screen.selected == {"zeta", "mid", "alpha"}
        await pilot.press("escape")
        assert screen.selected == set()


async def test_help_palette_and_small_terminal(runs_dir, fast_runs):
    app = app_for(runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        spawn(app, "small")
        await wait_for(pilot, lambda: state(app, "small") == "finished", what="finished")
        app.open_run("small")
        await wait_for(pilot, lambda: "small" in app.details, what="details")
        detail_text = await wait_text(pilot, "training loss", "Stop", what="the detail screen")
        assert "training loss" in detail_text and "Stop" in detail_text
        await pilot.press("escape", "question_mark")
        await wait_screen(pilot, HelpScreen, "Static")
        assert "Runs (home)" in screen_text(app) and "SIGKILL" in screen_text(app)
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"New run")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_screen(pilot, NewRunScreen, "#command")
        text = screen_text(app)
        assert "preset" in text and "Launch" in text


async def test_tensorboard_starts_on_localhost_and_stops_on_exit(runs_dir, tmp_path):
    fake_tb = tmp_path / "fake_tb.py"
    fake_tb.write_text(
        "import sys, http.server\n"
        "a = dict(zip(sys.argv[1::2], sys.argv[2::2]))\n"
        "http.server.HTTPServer((a['--host'], int(a['--port'])), http.server.BaseHTTPRequestHandler).serve_forever()\n")
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1, tensorboard_program=[sys.executable, str(fake_tb)])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        await wait_for(pilot, lambda: app.tensorboard.url, what="tensorboard url")
        assert app.tensorboard.url.startswith("http://127.0.0.1:")
        await wait_for(pilot, lambda: app.tensorboard.url in screen_text(app), what="the TensorBoard url on screen")
        proc = app.tensorboard.proc
    assert proc.poll() is not None  # stopped with the app

    missing = make_app(runs_dir, runner=FAKE_RUNNER, tensorboard_program=["/nonexistent/tensorboard"])
    async with missing.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        await wait_for(pilot, lambda: any("cannot start TensorBoard" in str(n.message)
                                          for n in missing._notifications), what="an error notification")
        assert missing.is_running


async def test_typing_q_in_a_field_does_not_quit(runs_dir):
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        form = await new_run(pilot)
        await pilot.click("#run-name")
        await pilot.press(*"quiet-t1")
        await pilot.pause()
        assert app.is_running and form.query_one("#run-name", Input).value == "quiet-t1"
        assert "--run-dir" in form.command and "quiet-t1" in form.command


async def test_failures_become_notifications(runs_dir, fast_runs):
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        def said(text):
            return any(text in str(n.message) for n in app._notifications)

        app.launch("pretrain", app.launcher.pretrain, "../outside", [])
        await wait_for(pilot, lambda: said("not allowed"), what="launch error")
        # the runner refuses its arguments (exit 2): the log's last lines are shown
        app.launch("background", app.launcher.pretrain, "bad-args", ["--batch-size", "1"])
        await wait_for(pilot, lambda: said("exited with code 2"), what="exit notification")
        assert said("--batch-size must be at least 2")
        assert app.is_running and not (runs_dir / "bad-args" / "status.json").exists()


async def test_demo_starts_a_tiny_run_and_shows_it(runs_dir, fast_runs):
    app = app_for(runs_dir, demo=True)
    async with app.run_test(size=SIZE) as pilot:
        detail = await wait_screen(pilot, RunDetailScreen, "#plot-loss")
        assert detail.key.startswith("demo-synthetic-")
        cfg = await wait_for(pilot, lambda: app.runs.get(detail.key) and app.runs[detail.key].config, what="config")
        assert cfg["dataset"] == "synthetic" and cfg["epochs"] == 3 and cfg["subset"] == 2048  # preset demo



async def test_clone_a_run_into_the_form(runs_dir, fast_runs):
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        spawn(app, "source", "--lr", "0.002", "--epochs", "1")
        await wait_for(pilot, lambda: state(app, "source") == "finished", what="finished")
        app.open_run("source")
        await wait_screen(pilot, RunDetailScreen, "#plot-loss")
        await pilot.press("k")
        form = await wait_screen(pilot, NewRunScreen, "#command")
        await pilot.pause(0.2)
        fields = form.fields()
        assert fields["lr"].raw == "0.002" and fields["dataset"].raw == "synthetic" and fields["image_size"].raw == "16"
        assert form.preset is None
        await wait_text(pilot, "cloned from source")
        assert "--preset" not in form.command and "--lr 0.002" in form.command and "--epochs 1" in form.command


async def test_a_stop_that_did_not_wait_for_its_step_shows_its_note(runs_dir):
    """status.json as core.training.stopping leaves it: stopped at the last checkpoint, with a note."""
    import json
    import socket
    import time as _time
    run = runs_dir / "stuck"
    run.mkdir(parents=True)
    note = ("the step in progress did not end within 60 s of SIGTERM (stuck in native code?); "
            "stopped at the last checkpoint, step 8: --resume continues from there")
    (run / "config.json").write_text(json.dumps({"dataset": "synthetic", "backbone": "resnet18", "epochs": 4}))
    write_status(run, kind="pretrain", state="stopped", pid=1, host=socket.gethostname(), created=_time.time(),
                 heartbeat=_time.time(), epoch=1, step=8, total_steps=32, total_epochs=4, error=None, note=note)
    app = app_for(runs_dir)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_for(pilot, lambda: state(app, "stuck") == "stopped", what="stopped")
        await pilot.press("enter")
        await wait_screen(pilot, RunDetailScreen)
        await wait_for(pilot, lambda: "stopped at the last checkpoint, step 8" in screen_text(app), what="the note")
