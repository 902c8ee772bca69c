"""Text snapshots of the main screens at 80x24, from a fixed runs directory.

pytest-textual-snapshot would be the usual tool, but it pins syrupy 4.8, which needs
pytest < 9; these compare the screen's text (what a terminal shows, colours aside) with
tests/tui/snapshots/*.txt instead. After an intended change to the UI, regenerate with
`SIMCLR_TUI_UPDATE_SNAPSHOTS=1 pytest tests/tui/test_tui_snapshots.py` and review the diff.
A missing snapshot is written and its test fails: review and commit the new file.
"""

from __future__ import annotations

import difflib
import math
import os
import socket
from pathlib import Path

import pytest
from textual.widgets import Input, Select
from tui_helpers import FAKE_RUNNER, screen_text, wait_for

from tests.helpers import make_eval_job, make_run

from core.config import PretrainConfig, preset
from simclr_tui.app import make_app
from simclr_tui.screens.compare import CompareScreen
from simclr_tui.screens.detail import RunDetailScreen
from simclr_tui.screens.help import HelpScreen
from simclr_tui.screens.new_run import NewRunScreen

pytestmark = pytest.mark.asyncio
SNAPSHOTS = Path(__file__).with_name("snapshots")
UPDATE = os.environ.get("SIMCLR_TUI_UPDATE_SNAPSHOTS") == "1"


def write_run(runs: Path, name: str, preset_name: str, steps: int, decay: float, lr: float, **health: str) -> None:
    cfg = PretrainConfig.from_dict(preset(preset_name)).replace(lr=lr, epochs=10)
    per_epoch = steps // 10
    lines = []
    for s in range(1, steps + 1):
        e = s / per_epoch
        lines.append({"step": s, "epoch": e, "time": 0, "tag": "train/loss",
                      "value": 2 + 4 * math.exp(-s / decay) + 0.2 * math.sin(s)})
        lines.append({"step": s, "epoch": e, "time": 0, "tag": "train/lr",
                      "value": lr * 0.5 * (1 + math.cos(math.pi * s / steps))})
        if s % per_epoch == 0:
            lines.append({"step": s, "epoch": e, "time": 0, "tag": "knn/top1", "value": 0.9 - 0.6 * math.exp(-e / 3)})
    make_run(runs, name, config=cfg.to_dict(), metrics=lines, checkpoints=("last",),
             kind="pretrain", state="finished", pid=0, pgid=0, start_time=None, host=socket.gethostname(),
             created=1_700_000_000.0, heartbeat=1_700_000_000.0 + steps * 1.5, epoch=10, step=steps,
             total_steps=steps, total_epochs=10, images_per_sec=2345.6, error=None, **health)


@pytest.fixture
def fixed_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the app shows "runs", not a temporary path
    runs = Path("runs")
    write_run(runs, "cifar10-a", "cifar10-resnet18", 200, 40.0, 1.0, health="ok")
    write_run(runs, "stl10-b", "stl10-resnet18", 200, 80.0, 0.5, health="not learning",
              health_reason="the loss fell 0.4% over the last 5 epochs")
    make_eval_job(runs / "cifar10-a", "linear-last", result={"test_top1": 0.8123, "test_top5": 0.99},
                  kind="linear-eval", state="finished", pid=0, host=socket.gethostname(), created=1_700_000_400.0,
                  heartbeat=1_700_000_460.0, epoch=3, total_epochs=3, parent="cifar10-a", checkpoint="last")
    return runs


def check(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if UPDATE or not path.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(text)
        if not UPDATE:
            # a missing snapshot fails (it never passes or skips), so CI cannot pass without it
            pytest.fail(f"{name} had no snapshot: wrote {path}; review it, commit it and run again")
        return
    want = path.read_text()
    if text != want:
        diff = "\n".join(difflib.unified_diff(want.splitlines(), text.splitlines(), "snapshot", "now", lineterm=""))
        pytest.fail(f"{name} differs from {path} (SIMCLR_TUI_UPDATE_SNAPSHOTS=1 to accept):\n{diff}")


async def settle(pilot, app, keys=()):
    await wait_for(pilot, lambda: app.polls >= 2 and not app.loading and all(k in app.details for k in keys))
    await pilot.pause(0.3)


async def test_runs_screen(fixed_runs):
    app = make_app(fixed_runs, runner=FAKE_RUNNER, poll_interval=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        check("runs", screen_text(app))


async def test_detail_screen(fixed_runs):
    app = make_app(fixed_runs, runner=FAKE_RUNNER, poll_interval=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(RunDetailScreen("cifar10-a"))
        await settle(pilot, app, ["cifar10-a"])
        check("detail", screen_text(app))
        await pilot.press("3")
        await pilot.pause(0.2)
        check("detail-config", screen_text(app))


async def test_compare_screen(fixed_runs):
    app = make_app(fixed_runs, runner=FAKE_RUNNER, poll_interval=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        app.push_screen(CompareScreen(["cifar10-a", "stl10-b"]))
        await settle(pilot, app, ["cifar10-a", "stl10-b"])
        check("compare-summary", screen_text(app))
        await pilot.press("2")
        await pilot.pause(0.3)
        check("compare-curves", screen_text(app))


async def test_new_run_and_help(fixed_runs, monkeypatch):
    # the form's Views panel draws in the background (its height changes when the picture comes):
    # without images it is one fixed line, so the form's layout, and its scrollbar, hold still
    monkeypatch.setenv("SIMCLR_TUI_IMAGES", "none")
    app = make_app(fixed_runs, runner=FAKE_RUNNER, poll_interval=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        app.push_screen(NewRunScreen())
        await pilot.pause(0.3)
        form = app.screen
        form.query_one("#preset", Select).value = "tiny"
        form.query_one("#run-name", Input).value = "my-run"
        await pilot.pause(0.3)
        check("new-run", screen_text(app))
        form.query_one("#field-batch_size", Input).value = "1"
        form.query_one("#field-batch_size", Input).focus()
        await pilot.pause(0.3)
        check("new-run-error", screen_text(app))
        app.push_screen(HelpScreen())
        await pilot.pause(0.3)
        check("help", screen_text(app))
