"""The queue, sweeps and notes in the TUI: Pilot drives it, the files on disk are the truth.

Queued runs come from a real `python -m core sweep ... --no-start` (torch-free, ~0.2 s);
finished sweep members with known accuracies are written by hand, so the group row's best
setting is checked against means computed here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import Input, TextArea
from tui_helpers import FAKE_RUNNER, cursor_to, screen_text, wait_for, wait_screen, wait_text

from tests.helpers import write_status

from core.jobs.queue import positions
from core.jobs.worker import worker_info
from core.runs import atomic_write_json, read_notes, write_notes
from simclr_tui import fmt
from simclr_tui.app import make_app
from simclr_tui.screens.detail import RunDetailScreen
from simclr_tui.screens.dialogs import ConfirmScreen, NotesDialog

pytestmark = pytest.mark.asyncio
SIZE = (140, 36)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def queue_dir(runs_dir):
    """The runs directory; a queue worker left running at the end is stopped (its runs end soon)."""
    yield runs_dir
    info = worker_info(runs_dir)
    if info and isinstance(info.get("pid"), int):
        try:
            os.kill(info["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass


def sweep(runs_dir: Path, name: str, *args: str) -> list[str]:
    """Queue a sweep (not started) with the real CLI; returns its member names in queue order."""
    subprocess.run([sys.executable, "-m", "core", "sweep", name, "--runs-dir", str(runs_dir), *args, "--no-start",
                    "--", "--preset", "tiny", "--epochs", "1"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    where = positions(runs_dir)
    return sorted((n for n in where if n.startswith(f"{name}-")), key=where.get)


def app_for(runs_dir, start_worker=False):
    return make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1, start_worker=start_worker)


def write_member(runs_dir: Path, name: str, sweep_name: str, swept: dict, state: str, knn: float | None) -> None:
    """A sweep member as the runner leaves it: finished with a kNN monitor value, or still queued."""
    d = runs_dir / name
    d.mkdir(parents=True)
    atomic_write_json(d / "config.json", {"dataset": "synthetic", "backbone": "resnet18", "epochs": 1})
    atomic_write_json(d / "sweep.json", {"sweep": sweep_name, "index": 0, "size": 5, "swept": swept})
    write_status(d, kind="pretrain", state=state, pid=None, host=socket.gethostname(), created=time.time(),
                 heartbeat=time.time(), epoch=1 if state == "finished" else 0, step=5, total_steps=5,
                 total_epochs=1, error=None)
    if knn is not None:
        (d / "metrics.jsonl").write_text(json.dumps({"step": 5, "epoch": 1, "time": 0, "tag": "knn/top1",
                                                     "value": knn}) + "\n")


# ---------------------------------------------------------------------- queued rows
async def test_queued_rows_show_state_and_position(queue_dir):
    names = sweep(queue_dir, "q", "--grid", "temperature=0.1,0.2")
    app = app_for(queue_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: all(n in app.runs for n in names), what="queued runs")
        for i, name in enumerate(names, start=1):
            assert app.runs[name].state == "queued" and app.runs[name].position == i
        await wait_for(pilot, lambda: "queued #2" in screen_text(app), what="positions on screen")
        text = screen_text(app)
        assert "queued #1" in text and "2 queued · no worker" in text
        assert fmt.state_text("queued").style == fmt.STATE_STYLES["queued"]


async def test_cancel_asks_first_then_removes_the_queued_run(queue_dir):
    names = sweep(queue_dir, "q", "--grid", "temperature=0.1,0.2")
    app = app_for(queue_dir)
    async with app.run_test(size=SIZE) as pilot:
        await cursor_to(pilot, names[0])
        await pilot.press("x")
        await wait_screen(pilot, ConfirmScreen, "#yes")
        assert "Cancel 1 queued run" in screen_text(app)
        await pilot.press("n")
        await pilot.pause(0.3)
        assert (queue_dir / names[0]).exists()
        await pilot.press("x")
        await wait_screen(pilot, ConfirmScreen, "#yes")
        await pilot.press("y")
        await wait_for(pilot, lambda: names[0] not in app.runs, what="cancelled")
        assert not (queue_dir / names[0]).exists()
        assert positions(queue_dir) == {names[1]: 1}
        await wait_for(pilot, lambda: app.runs[names[1]].position == 1, what="renumbered")


async def test_move_up_and_down_changes_the_queue_on_disk(queue_dir):
    names = sweep(queue_dir, "m", "--seeds", "0,1,2")
    app = app_for(queue_dir)
    async with app.run_test(size=SIZE) as pilot:
        last = names[2]
        await cursor_to(pilot, last)
        await pilot.press("left_square_bracket")
        await wait_for(pilot, lambda: positions(queue_dir)[last] == 2, what="moved up on disk")
        await wait_for(pilot, lambda: app.runs[last].position == 2, what="moved up in the table")
        assert positions(queue_dir)[names[1]] == 3
        await pilot.press("left_square_bracket")
        await wait_for(pilot, lambda: positions(queue_dir)[last] == 1, what="moved to the top")
        await wait_for(pilot, lambda: app.runs[last].position == 1, what="top in the table")
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: positions(queue_dir)[last] == 2, what="moved down")
        await wait_for(pilot, lambda: app.runs[last].position == 2, what="down in the table")
        assert app.screen.cursor_key() == last  # the cursor stays on the run it moved


async def test_delete_of_a_queued_run_cancels_it(queue_dir):
    names = sweep(queue_dir, "d", "--seeds", "0,1")
    app = app_for(queue_dir)
    async with app.run_test(size=SIZE) as pilot:
        await cursor_to(pilot, names[1])
        await pilot.press("d")
        await wait_screen(pilot, ConfirmScreen, "#yes")
        await pilot.press("y")
        await wait_for(pilot, lambda: names[1] not in app.runs, what="gone")
        assert positions(queue_dir) == {names[0]: 1}


# ---------------------------------------------------------------------- sweep group rows
def write_sweep(runs_dir: Path) -> dict[str, float | None]:
    """Sweep ts: temperature 0.1 (kNN 0.50, 0.60), 0.2 (0.58, 0.62), 0.5 (seed 0 queued)."""
    accs = {("0.1", 0): 0.50, ("0.1", 1): 0.60, ("0.2", 0): 0.58, ("0.2", 1): 0.62, ("0.5", 0): None}
    for (t, seed), acc in accs.items():
        write_member(runs_dir, f"ts-temperature={t},seed={seed}", "ts", {"seed": seed, "temperature": float(t)},
                     "finished" if acc is not None else "queued", acc)
    write_member(runs_dir, "lonely", "", {}, "finished", 0.3)  # not in a sweep (empty name)
    return {f"ts-temperature={t},seed={s}": a for (t, s), a in accs.items()}


async def test_sweep_group_row_summarises_collapses_and_selects(queue_dir):
    members = write_sweep(queue_dir)
    app = app_for(queue_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: all(m in app.runs for m in members) and app.polls > 2, what="members")
        screen = app.screen
        await wait_for(pilot, lambda: "sweep:ts" in screen._order, what="the group row")
        # five members: collapsed at first
        assert not any(m in screen._order for m in members)
        mean = (0.58 + 0.62) / 2
        best = f"best temperature=0.2 (kNN monitor {100 * mean:.1f}%, n=2)"
        await wait_for(pilot, lambda: best in screen_text(app), what="the best setting")
        text = screen_text(app)
        assert "▸ ts" in text and "4/5 done" in text and "1 queued" in text
        assert f"{100 * mean:.1f}%" in screen._cells["sweep:ts"][screen_col("acc")].plain

        await cursor_to(pilot, "sweep:ts")  # the line under the table repeats the group, on any width
        await wait_for(pilot, lambda: f"sweep ts · 4/5 done, 1 queued · {best} · enter expands" in screen_text(app),
                       what="the group line")
        await pilot.press("enter")
        await wait_for(pilot, lambda: all(m in screen._order for m in members), what="expanded")
        await wait_text(pilot, "▾ ts", "  temperature=0.1,seed=0", what="the expanded group on screen")
        i = screen._order.index("sweep:ts")
        assert set(screen._order[i + 1: i + 6]) == set(members)  # indented right under it
        await pilot.press("enter")
        await wait_for(pilot, lambda: not any(m in screen._order for m in members), what="collapsed again")

        assert not screen.selected
        await pilot.press("c")  # on the group row, nothing selected: that sweep's settings
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CompareScreen", what="compare the sweep")
        assert sorted(app.screen.keys) == sorted(members)
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, what="back")
        await pilot.press("space")
        assert screen.selected == set(members)
        await pilot.press("c")  # compares the whole sweep
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CompareScreen", what="compare")
        assert sorted(app.screen.keys) == sorted(members)
        await pilot.press("escape")

        # a member matching the filter shows its group; the rest of the sweep is hidden
        await wait_for(pilot, lambda: app.screen is screen)
        screen.expanded["ts"] = True
        screen.query_one("#filter", Input).value = "temperature=0.5"
        await wait_for(pilot, lambda: screen._order == ["sweep:ts", "ts-temperature=0.5,seed=0"], what="filtered")


def screen_col(key: str) -> int:
    from simclr_tui.screens.runs import COLUMNS
    return [c[0] for c in COLUMNS].index(key)


# ---------------------------------------------------------------------- notes and tags
async def test_note_dialog_writes_notes_and_the_filter_matches_tags(queue_dir):
    write_member(queue_dir, "alpha", "", {}, "finished", 0.4)
    write_member(queue_dir, "beta", "", {}, "finished", 0.5)
    write_notes(queue_dir / "beta", "old idea", "baseline")
    app = app_for(queue_dir)
    async with app.run_test(size=SIZE) as pilot:
        await cursor_to(pilot, "alpha")
        await pilot.press("N")
        dialog = await wait_screen(pilot, NotesDialog, "#notes-note")
        await pilot.press(*"lr too high")
        dialog.query_one("#notes-tags", Input).value = "keep, lr-study keep"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: read_notes(queue_dir / "alpha") == ("lr too high", ["keep", "lr-study"]),
                       what="notes.json")
        await wait_for(pilot, lambda: app.runs["alpha"].tags == ("keep", "lr-study"), what="tags in the view")
        screen = app.screen
        tags = screen_col("tags")
        await wait_for(pilot, lambda: str(screen._cells["alpha"][tags]) == "keep, lr-study", what="the Tags column")

        async def shown(text, want):
            screen.query_one("#filter", Input).value = text
            await wait_for(pilot, lambda: screen._order == want, what=f"filter {text!r} showing {want}")

        await shown("tag:keep", ["alpha"])
        await shown("tag:kee", [])  # tag: matches whole tags only
        await shown("kee", ["alpha"])  # plain words match tags too
        await shown("idea", ["beta"])  # and the note
        await shown("tag:baseline finished", ["beta"])
        await shown("", ["alpha", "beta"])

        app.open_run("alpha")
        await wait_screen(pilot, RunDetailScreen, "#detail-summary")
        await wait_for(pilot, lambda: "tags: keep, lr-study" in screen_text(app) and "lr too high" in screen_text(app),
                       what="note and tags in the summary")
        # the detail screen edits them too; the dialog starts from what is saved
        await pilot.press("N")
        dialog = await wait_screen(pilot, NotesDialog, "#notes-note")
        assert dialog.query_one("#notes-note", TextArea).text == "lr too high"
        assert dialog.query_one("#notes-tags", Input).value == "keep, lr-study"
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert read_notes(queue_dir / "alpha") == ("lr too high", ["keep", "lr-study"])


# ---------------------------------------------------------------------- the worker
async def test_the_tui_starts_a_worker_for_queued_work(queue_dir, fast_runs):
    (name,) = sweep(queue_dir, "w", "--seeds", "0", "--then", "knn")
    app = app_for(queue_dir, start_worker=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.worker_status is not None and app.worker_status.pid is not None,
                       what="a worker")
        await wait_for(pilot, lambda: name in app.runs and app.runs[name].state == "finished", timeout=60,
                       what="the queued run finished")
        job = f"{name}/eval/knn-last"
        await wait_for(pilot, lambda: job in app.runs and app.runs[job].state == "finished", timeout=60,
                       what="its --then job finished")
        assert f"started {name}" in (queue_dir / ".queue" / "worker.log").read_text()
