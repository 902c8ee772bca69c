"""The TUI driving the real runner (`python -m core ...`) on a tiny synthetic run.

Slow (about a minute on two CPU cores: torch starts, trains 16 steps, evaluates); skipped
until `python -m core pretrain --help` works.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from textual.widgets import Input, Select
from tui_helpers import wait_for, wait_screen

from simclr_tui.app import make_app
from simclr_tui.screens.detail import RunDetailScreen
from simclr_tui.screens.dialogs import EvalDialog
from simclr_tui.screens.new_run import NewRunScreen
from simclr_tui.widgets.plot import MetricPlot

ROOT = Path(__file__).resolve().parents[2]


def _runner_ready() -> bool:
    try:
        return subprocess.run([sys.executable, "-m", "core", "pretrain", "--help"], cwd=ROOT, capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio,
    pytest.mark.skipif(not _runner_ready(), reason="the runner (python -m core) is not there yet"),
]


def state(app, key):
    view = app.runs.get(key)
    return view.state if view else None


async def test_real_tiny_run_stop_resume_and_evaluate(runs_dir):
    app = make_app(runs_dir, poll_interval=0.25)  # the default runner: python -m core
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("n")
        form = await wait_screen(pilot, NewRunScreen, "#preset")
        form.query_one("#preset", Select).value = "tiny"
        await pilot.pause()
        form.query_one("#run-name", Input).value = "real"
        form.query_one("#field-epochs", Input).value = "3"
        await wait_for(pilot, lambda: form.error is None and "--epochs 3" in (form.command or ""),
                       what=f"the form to validate (error: {form.error})")
        await pilot.press("ctrl+s")
        await wait_screen(pilot, RunDetailScreen, "#plot-loss")
        plot = app.screen.query_one("#plot-loss", MetricPlot)
        await wait_for(pilot, lambda: plot.lines and len(plot.lines[0].ys) >= 2, timeout=90, what="loss points")

        await pilot.press("x")
        await wait_for(pilot, lambda: state(app, "real") == "stopped", timeout=60, what="stopped")
        assert (runs_dir / "real" / "checkpoints" / "last.pt").exists()
        await pilot.press("r")
        await wait_for(pilot, lambda: state(app, "real") in ("starting", "running"), timeout=30, what="resumed")
        await wait_for(pilot, lambda: state(app, "real") == "finished", timeout=180, what="finished")

        for kind in ("linear", "knn"):
            await pilot.press("e")
            dialog = await wait_screen(pilot, EvalDialog, "#eval-kind")
            dialog.query_one("#eval-kind", Select).value = kind
            await pilot.pause()
            await pilot.click("#launch")
            job = f"real/eval/{kind}-last"
            await wait_for(pilot, lambda job=job: state(app, job) == "finished", timeout=120, what=f"{kind} finished")
            await wait_for(pilot, lambda job=job: app.runs[job].best_acc is not None, what=f"{kind} accuracy")
            assert 0.0 < app.runs[job].best_acc <= 1.0
        assert app.runs["real"].best_acc is not None
        log = (runs_dir / "real" / "stdout.log").read_text()
        assert log.count("$ simclr pretrain") == 2  # the launch and the resume, both appended
