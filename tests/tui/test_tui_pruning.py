"""Pruned sweeps and run health in the TUI, on hand-written run directories.

A sweep's own folder (``.sweeps/NAME/sweep.json`` and ``decisions.jsonl``) is written here as
core.jobs.plan / core.jobs.prune write it; the members are ordinary run directories
(tests/helpers.make_run). Every screen check waits for the text (tui_helpers.wait_text).
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select
from tui_helpers import FAKE_RUNNER, cursor_to, screen_text, wait_for, wait_screen, wait_text

from tests.helpers import make_run

from core.jobs.prune import LOG, Decision
from core.report.states import state_style
from simclr_tui.app import make_app
from simclr_tui.enqueue import check_prune
from simclr_tui.screens.compare import CompareScreen
from simclr_tui.screens.detail import RunDetailScreen
from simclr_tui.screens.new_run import NewRunScreen
from simclr_tui.screens.sweep import SweepScreen
from simclr_tui.sweeps import summarise
from simclr_tui.views import SweepFiles

pytestmark = pytest.mark.asyncio
SIZE = (120, 40)
HOST, NOW = socket.gethostname(), 1_700_000_000.0
NOTE = "pruned at epoch 1 by its sweep (asha): knn_top1 0.2000 (mean of 1 seed(s)) worse than 0.4000"


def member(runs: Path, sweep: str, index: int, swept: dict, state: str, knn: float | None = None,
           **status) -> str:
    name = f"{sweep}-" + ",".join(f"{k}={v}" for k, v in swept.items())
    fields = dict(kind="pretrain", state=state, pid=0, pgid=0, host=HOST, created=NOW, heartbeat=NOW + 60,
                  epoch=1 if state == "pruned" else 4, total_epochs=4, error=None)
    fields.update(status)
    metrics = [{"step": 10, "epoch": 1, "time": 0, "tag": "knn/top1", "value": knn}] if knn is not None else None
    make_run(runs, name, config={"dataset": "synthetic", "backbone": "resnet18", "epochs": 4, "seed": 0,
                                 **swept},
             sweep={"sweep": sweep, "index": index, "size": 5, "swept": swept}, metrics=metrics,
             checkpoints=("last",), **fields)
    return name


def decision(sweep: str, name: str, setting: str, value: float, prune: bool, cutoff: float) -> dict:
    d = Decision(rung=0, epoch=1, member=name, setting=setting, seed=None, value=value, setting_value=value,
                 seeds_in_mean=1, rule="asha", metric="knn_top1", cutoff=cutoff, compared={"lr=0.001": 0.4},
                 prune=prune, reason=f"knn_top1 {value:.4f} (mean of 1 seed(s)) {'worse' if prune else 'not worse'} "
                 f"than {cutoff:.4f}, among the best 1 of 2 settings at epoch 1", time=NOW)
    return vars(d)


def write_sweep_folder(runs: Path, name: str, decisions: list[dict], **plan) -> Path:
    """``.sweeps/NAME``: the plan (as core.jobs.plan.write_plan) and the decision log (one JSON line each)."""
    folder = runs / ".sweeps" / name
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"sweep": name, "created": NOW, "mode": "grid",
                                                   "grid": {"lr": [0.001, 1e-06, 0.003]}, "seeds": None,
                                                   "prune": {"rule": "asha", "metric": "knn_top1",
                                                             "min_epochs": 1, "reduction_factor": 2},
                                                   **plan}))
    (folder / LOG).write_text("".join(json.dumps(d, sort_keys=True) + "\n" for d in decisions))
    return folder


@pytest.fixture
def pruned_sweep(runs_dir):
    """Sweep s1 (asha, lr x 4 + one queued): 1 finished, 2 pruned, 1 queued; a TPE plan with 2 still to come."""
    runs = runs_dir
    done = member(runs, "s1", 0, {"lr": 0.001}, "finished", 0.4)
    p1 = member(runs, "s1", 1, {"lr": 1e-06}, "pruned", 0.2, note=NOTE)
    p2 = member(runs, "s1", 2, {"lr": 1e-05}, "pruned", 0.1, note=NOTE)
    member(runs, "s1", 3, {"lr": 0.003}, "queued")
    write_sweep_folder(runs, "s1", [decision("s1", done, "lr=0.001", 0.4, False, 0.4),
                                    decision("s1", p1, "lr=1e-06", 0.2, True, 0.4),
                                    decision("s1", p2, "lr=1e-05", 0.1, True, 0.4)],
                       mode="sample", sampler="tpe", sample=6)
    return runs


#: seconds the app's first screen of runs may take: over 15 s was seen twice under the full
#: suite's load (two tests of this file, on different days; never alone, cause not found)
FIRST_SCREEN_S = 60


def app_for(runs_dir):
    return make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1, start_worker=False)


# ---------------------------------------------------------------------- 1, 4: pruned, the sweep row
async def test_pruned_members_and_the_sweep_row(pruned_sweep):
    app = app_for(pruned_sweep)
    async with app.run_test(size=SIZE) as pilot:
        text = await wait_text(pilot, "▾ s1", "1/4 done", timeout=FIRST_SCREEN_S)
        assert "1 queued 2 pruned" in text  # the group row's state
        assert "1/4 done, 2 pruned, 1 queued, 2 to come" in text  # its summary (6 settings planned, 4 made)
        table = app.screen.query_one("#runs", DataTable)
        cell = table.get_cell("s1-lr=1e-06", "state")
        assert cell.plain == "pruned" and str(cell.style) == state_style("pruned") != ""
        # a pruned run is left out of the best setting's mean (its kNN is from a rung)
        group = app.screen.groups["s1"]
        assert (group.best_setting, group.best_n, group.pruned, group.to_come) == ("lr=0.001", 1, 2, 2)
        await cursor_to(pilot, "sweep:s1")
        await wait_text(pilot, "sweep s1 · 1/4 done, 2 pruned, 1 queued, 2 to come", "enter collapses")
        await cursor_to(pilot, "s1-lr=1e-06")
        await wait_text(pilot, NOTE)  # why it was pruned, under the table
        await pilot.press("enter")
        detail = await wait_screen(pilot, RunDetailScreen, "#detail-summary")
        await wait_text(pilot, f"note: {NOTE}")
        assert detail.key == "s1-lr=1e-06"


async def test_the_sweep_view_shows_the_decision_log(pruned_sweep):
    app = app_for(pruned_sweep)
    async with app.run_test(size=SIZE) as pilot:
        await wait_text(pilot, "▾ s1", timeout=FIRST_SCREEN_S)
        await cursor_to(pilot, "s1-lr=0.001")  # a member's row opens its sweep too
        await pilot.press("v")
        screen = await wait_screen(pilot, SweepScreen, "#sweep-decisions")
        text = await wait_text(pilot, "sweep s1: 6 settings drawn by tpe", "prune asha on knn_top1 from epoch 1",
                               "1/4 done, 2 pruned, 1 queued, 2 to come", "Setting mean (n)")
        rows = [line.split() for line in text.splitlines()]
        assert ["0", "1", "lr=0.001", "0.4000", "0.4000", "(n=1)", "0.4000", "go", "on"] in rows
        assert ["0", "1", "lr=1e-06", "0.2000", "0.2000", "(n=1)", "0.4000", "prune"] in rows
        table = screen.query_one("#sweep-decisions", DataTable)
        assert table.row_count == 3
        table.move_cursor(row=1)
        await wait_text(pilot, "s1-lr=1e-06 (lr=1e-06), rung 0: knn_top1 0.2000 (mean of 1 seed(s)) worse than "
                               "0.4000", "compared: lr=0.001 0.4000")
        # a new decision in the log shows on the next poll (read in the poll thread)
        with open(pruned_sweep / ".sweeps" / "s1" / LOG, "a") as f:
            f.write(json.dumps(decision("s1", "s1-lr=0.003", "lr=0.003", 0.5, False, 0.5)) + "\n")
        await wait_for(pilot, lambda: table.row_count == 4, what="the new decision")
        await pilot.press("escape")
        await wait_text(pilot, "▾ s1")


async def test_a_sweep_without_pruning_says_so(runs_dir):
    member(runs_dir, "plain", 0, {"lr": 0.1}, "finished", 0.3)
    app = app_for(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_text(pilot, "▾ plain", timeout=FIRST_SCREEN_S)
        await cursor_to(pilot, "sweep:plain")
        await pilot.press("v")
        await wait_screen(pilot, SweepScreen, "#sweep-decisions")
        await wait_text(pilot, "made before sweeps kept a plan", "this sweep does not prune")
        await pilot.press("escape")
        await cursor_to(pilot, "plain-lr=0.1")


async def test_summary_counts_and_to_come():
    from simclr_tui.store import RunView

    def view(key, state, swept):
        return RunView(key=key, path=Path("/r") / key, kind="pretrain", state=state, damage=(), status={},
                       config={}, sweep="s", swept=swept, monitor_acc=0.5)

    views = {v.key: v for v in (view("s-a", "finished", {"lr": 1}), view("s-b", "pruned", {"lr": 2}),
                                 view("s-c", "running", {"lr": 3}))}
    plain = summarise(views)["s"]
    assert plain.summary_text() == "1/3 done, 1 pruned, 1 running" and plain.state_text() == "1 running 1 pruned"
    tpe = SweepFiles("s", {"sweep": "s", "mode": "sample", "sampler": "tpe", "sample": 8})
    assert summarise(views, {"s": tpe})["s"].summary_text() == "1/3 done, 1 pruned, 1 running, 5 to come"
    rand = SweepFiles("s", {"sweep": "s", "mode": "sample", "sampler": "random", "sample": 8})
    assert summarise(views, {"s": rand})["s"].to_come == 0  # random draws are all made at once


# ---------------------------------------------------------------------- 2: health
async def test_health_badge_reason_and_filter(runs_dir):
    reason = "the embeddings' std fell to 0.0010 of its first value: every image maps to one point"
    make_run(runs_dir, "well", config={"dataset": "synthetic", "backbone": "resnet18"}, kind="pretrain",
             state="finished", pid=0, host=HOST, created=NOW, heartbeat=NOW, epoch=2, total_epochs=2, health="ok",
             health_reason="loss fell 30%")
    make_run(runs_dir, "flat", config={"dataset": "synthetic", "backbone": "resnet18"}, kind="pretrain",
             state="finished", pid=0, host=HOST, created=NOW, heartbeat=NOW, epoch=2, total_epochs=2,
             health="collapsed", health_reason=reason)
    make_run(runs_dir, "young", config={"dataset": "synthetic", "backbone": "resnet18"}, kind="pretrain",
             state="stopped", pid=0, host=HOST, created=NOW, heartbeat=NOW, epoch=0, total_epochs=2)
    app = app_for(runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        text = await wait_text(pilot, "flat", "well", "young", timeout=FIRST_SCREEN_S)
        lines = {line.split()[0]: line for line in text.splitlines() if line.split() and
                 line.split()[0] in ("flat", "well", "young")}
        assert lines["flat"].split()[1:3] == ["finished", "✗"] and lines["well"].split()[1:3] == ["finished", "✓"]
        assert lines["young"].split()[1:3] == ["stopped", "0/2"]  # no verdict yet: no badge
        assert "ETA" in text  # Run, State, H, Progress, Loss, Best acc and ETA fit at 80 columns
        table = app.screen.query_one("#runs", DataTable)
        assert str(table.get_cell("flat", "health").style) == "bold red"
        assert str(table.get_cell("well", "health").style) == "dim"
        await cursor_to(pilot, "flat")
        await wait_text(pilot, "collapsed: the embeddings' std fell to 0.0010")
        await pilot.press("slash")
        app.screen.query_one("#filter", Input).value = "collapsed"
        await wait_for(pilot, lambda: app.screen._order == ["flat"], what="the filter")
        app.push_screen(RunDetailScreen("flat"))
        await wait_text(pilot, "health: collapsed · the embeddings' std fell")
        app.pop_screen()
        app.push_screen(RunDetailScreen("well"))
        await wait_text(pilot, "health ok")


# ---------------------------------------------------------------------- 3: the form
def cli_error(runs_dir: Path, flags: list[str]) -> str:
    """`simclr sweep`'s own one-line error for the same flags (the real command line)."""
    proc = subprocess.run([sys.executable, "-m", "core", "sweep", "cmp", "--runs-dir", str(runs_dir), "--seeds", "0",
                           *flags, "--no-start", "--", "--preset", "tiny"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    return line.removeprefix("simclr: error: ").split(" (see `simclr")[0]


async def test_the_form_prunes_with_the_clis_flags_and_errors(runs_dir, tmp_path):
    from core.runs import read_json

    app = make_app(runs_dir, runner=[sys.executable, str(Path(__file__).with_name("queue_cli_runner.py"))],
                   poll_interval=0.1, start_worker=False)
    cases = [  # (rule, metric, min epochs, factor) -> the same flags given to `simclr sweep`
        (("", "knn_top1", "x", "3"), ["--min-epochs", "x"]),
        (("", "loss", "1", "3"), ["--prune-metric", "loss"]),
        (("asha", "knn_top1", "1", "1"), ["--prune", "asha", "--reduction-factor", "1"]),
        (("median", "knn_top1", "0", "3"), ["--prune", "median", "--min-epochs", "0"]),
        (("asha", "knn_top1", "5", "3"), ["--prune", "asha", "--min-epochs", "5"]),
    ]
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        form = await wait_screen(pilot, NewRunScreen, "#prune-rule")
        form.query_one("#preset", Select).value = "tiny"
        form.query_one("#sweep-name", Input).value = "pr"
        form.query_one("#sweep-seeds", Input).value = "0,1"
        for (rule, metric, r, eta), flags in cases:
            form.query_one("#prune-rule", Select).value = rule
            form.query_one("#prune-metric", Select).value = metric
            form.query_one("#prune-min-epochs", Input).value = r
            form.query_one("#prune-factor", Input).value = eta
            want = cli_error(tmp_path / "cli-runs", flags)
            await wait_for(pilot, lambda: form.error == want, what=f"{want!r} (form: {form.error!r})")
            form.query_one("#prune-row").scroll_visible(animate=False)
            await wait_text(pilot, f"✗ {want}")
            assert form.query_one("#prune-row").has_class("-invalid")
        form.query_one("#prune-rule", Select).value = "asha"
        form.query_one("#prune-metric", Select).value = "loss"
        form.query_one("#prune-min-epochs", Input).value = "1"
        form.query_one("#prune-factor", Input).value = "2"
        await wait_for(pilot, lambda: form.error is None and form.sweep is not None, what="a valid sweep")
        runs = runs_dir.resolve()
        assert form.command == (f"simclr sweep pr --runs-dir {runs} --seeds 0,1 --prune asha --prune-metric loss "
                                f"--min-epochs 1 --reduction-factor 2 -- --preset tiny")
        form.query_one("#sweep-size").scroll_visible(animate=False)
        await wait_text(pilot, "sweep pr: 2 runs", "asha on loss at epochs 1")
        # pruning without a sweep is refused
        form.query_one("#sweep-seeds", Input).value = ""
        await wait_for(pilot, lambda: (form.error or "").startswith("--prune stops a sweep's members early"),
                       what="the no-sweep error")
        form.query_one("#sweep-seeds", Input).value = "0,1"
        await wait_for(pilot, lambda: form.error is None and form.sweep is not None, what="valid again")
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: (runs_dir / ".sweeps" / "pr" / "sweep.json").exists(), what="the plan")
        plan = read_json(runs_dir / ".sweeps" / "pr" / "sweep.json")
        assert plan["prune"] == {"rule": "asha", "metric": "loss", "min_epochs": 1, "reduction_factor": 2}
    assert check_prune("", "knn_top1", "1", "3") is None


# ---------------------------------------------------------------------- 5: groups
async def test_compare_leaves_pruned_members_out_of_the_mean(runs_dir):
    names = [member(runs_dir, "g", i, {"lr": 0.1, "seed": s}, state, knn)
             for i, (s, state, knn) in enumerate([(0, "finished", 0.50), (1, "finished", 0.56),
                                                  (2, "pruned", 0.10), (3, "finished", 0.53)])]
    app = app_for(runs_dir)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_for(pilot, lambda: all(n in app.runs for n in names), FIRST_SCREEN_S, what="the runs")
        app.push_screen(CompareScreen(names))
        kept = [0.50, 0.56, 0.53]
        mean, std = statistics.fmean(kept), statistics.stdev(kept)
        want = f"{100 * mean:.1f} ± {100 * std:.1f}% (n=3, 1 pruned)"
        await wait_text(pilot, want, "3 finished, 1 pruned")
        assert "(n=4" not in screen_text(app)
