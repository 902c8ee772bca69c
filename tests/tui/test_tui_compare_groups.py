"""Compare and Results on a sweep: seeds folded into groups (mean ± sample std, n), their
mean curves, the export files. The runs are written by hand with known numbers, and every
expected value is computed here independently (statistics, numpy)."""

from __future__ import annotations

import csv
import json
import math
import socket
import statistics
from pathlib import Path

import numpy as np
import pytest
from textual.widgets import DataTable
from tui_helpers import FAKE_RUNNER, screen_text, wait_for, wait_screen, wait_text

from tests.helpers import make_eval_job, write_status

from core.runs import atomic_write_json, write_notes
from simclr_tui.app import make_app
from simclr_tui.screens.compare import CompareScreen
from simclr_tui.screens.results import ResultsScreen
from simclr_tui.widgets.plot import MetricPlot

pytestmark = pytest.mark.asyncio
SIZE = (160, 50)
TEMPERATURES = (0.1, 0.2)
SEEDS = (0, 1, 2)
STEPS, EPOCHS = 40, 4


def loss_at(t: float, seed: int, step: int) -> float:
    return 2 + 4 * math.exp(-step / (20 + 40 * t)) + 0.05 * seed + 0.1 * math.sin(step + seed)


def linear_top1(t: float, seed: int) -> float:
    return 0.6 + t + 0.01 * seed * seed


def write_member(runs: Path, t: float, seed: int, index: int) -> str:
    name = f"ts-temperature={t},seed={seed}"
    d = runs / name
    (d / "checkpoints").mkdir(parents=True)
    atomic_write_json(d / "config.json", {"dataset": "synthetic", "backbone": "resnet18", "batch_size": 32,
                                          "projection_dim": 128, "optimizer": "adam", "epochs": EPOCHS,
                                          "temperature": t, "seed": seed, "device": "cpu"})
    atomic_write_json(d / "sweep.json", {"sweep": "ts", "index": index, "size": 6, "swept": {"seed": seed,
                      "temperature": t}, "grid": {"temperature": list(TEMPERATURES)}, "seeds": list(SEEDS)})
    host, now = socket.gethostname(), 1_700_000_000.0
    write_status(d, kind="pretrain", state="finished", pid=0, pgid=0, host=host, created=now, heartbeat=now + 60,
                 epoch=EPOCHS, step=STEPS, total_steps=STEPS, total_epochs=EPOCHS, error=None)
    lines = [{"step": s, "epoch": s / (STEPS / EPOCHS), "time": 0, "tag": "train/loss", "value": loss_at(t, seed, s)}
             for s in range(1, STEPS + 1)]
    lines += [{"step": e, "epoch": e, "time": 0, "tag": "knn/top1", "value": 0.3 + 0.1 * e + t + 0.01 * seed}
              for e in range(1, EPOCHS + 1)]
    top1 = linear_top1(t, seed)
    lines.append({"step": 1, "epoch": 1, "time": 0, "tag": "linear/test_top1", "value": top1, "job": "linear-last",
                  "started": now})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    make_eval_job(d, "linear-last", result={"kind": "linear-eval", "protocol": "lbfgs", "dataset": "synthetic",
                                            "test_top1": top1, "test_top5": 1.0, "pretrain_epoch": EPOCHS,
                                            "checkpoint": "last"},
                  kind="linear-eval", state="finished", pid=0, host=host, created=now + 70, heartbeat=now + 80,
                  epoch=1, total_epochs=1, parent=name, checkpoint="last")
    return name


@pytest.fixture
def sweep_runs(runs_dir):
    names = [write_member(runs_dir, t, seed, i) for i, (seed, t) in
             enumerate((s, t) for s in SEEDS for t in TEMPERATURES)]
    write_notes(runs_dir / names[0], "the first seed", ["baseline", "cpu"])
    return runs_dir, names


def expected(values: list[float], digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    mean, std = statistics.fmean(values), statistics.stdev(values)
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}{unit} (n={len(values)})"


def ema(ys: np.ndarray, w: float = 0.9) -> np.ndarray:
    """TensorBoard's debiased EMA, written again with numpy."""
    acc, out = 0.0, []
    for i, y in enumerate(ys, 1):
        acc = w * acc + (1 - w) * y
        out.append(acc / (1 - w ** i))
    return np.array(out)


def rows_of(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def open_compare(pilot, names: list[str]) -> CompareScreen:
    app = pilot.app
    await wait_for(pilot, lambda: all(n in app.runs for n in names), what="runs")
    app.compare(names)
    screen = await wait_screen(pilot, CompareScreen, "#groups-table")
    await wait_for(pilot, lambda: all(n in app.details and app.details[n].series.get("train/loss") for n in names),
                   what="series")
    await pilot.pause(0.3)
    return screen


async def test_compare_a_sweep_shows_mean_and_std_per_setting(sweep_runs):
    runs_dir, names = sweep_runs
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1, start_worker=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(pilot, names)
        assert [g.label for g in screen.groups] == ["temperature=0.1", "temperature=0.2"]
        groups = {r[0]: r[1:] for r in rows_of(screen.query_one("#groups-table", DataTable))}
        assert groups["runs"] == ["3: 3 finished", "3: 3 finished"]
        assert groups["final loss"] == [expected([loss_at(t, s, STEPS) for s in SEEDS]) for t in TEMPERATURES]
        assert groups["best linear top-1"] == [expected([linear_top1(t, s) for s in SEEDS], 1, 100, "%")
                                               for t in TEMPERATURES]
        assert groups["best kNN top-1"] == [expected([0.3 + 0.1 * EPOCHS + t + 0.01 * s for s in SEEDS], 1, 100, "%")
                                            for t in TEMPERATURES]
        assert groups["best fine-tune top-1"] == ["–", "–"]
        # the diff: only the swept key; the per-run table keeps every run
        assert rows_of(screen.query_one("#diff-table", DataTable)) == [["temperature", "0.1", "0.2"]]
        assert len(screen.query_one("#metrics-table", DataTable).columns) == 1 + len(names)
        text = screen_text(app)
        assert "Groups: mean ± sample std over seeds" in text
        assert f"{names[0]}: the first seed  #baseline #cpu" in text

        await pilot.press("2")
        await pilot.pause(0.3)
        loss = screen.query_one("#cmp-loss", MetricPlot)
        bands = [ln for ln in loss.lines if ln.dim]
        means = [ln for ln in loss.lines if not ln.dim]
        assert len(bands) == 4 and [ln.label for ln in means] == ["temperature=0.1 (n=3)", "temperature=0.2 (n=3)"]
        steps = np.arange(1, STEPS + 1)
        for t, line in zip(TEMPERATURES, means, strict=True):
            smoothed = np.array([ema(np.array([loss_at(t, s, k) for k in steps])) for s in SEEDS])
            np.testing.assert_allclose(line.xs, steps / (STEPS / EPOCHS))
            np.testing.assert_allclose(line.ys, smoothed.mean(axis=0), rtol=1e-9)
            lower = next(b for b in bands if b.colour == line.colour)
            np.testing.assert_allclose(lower.ys, smoothed.mean(axis=0) - smoothed.std(axis=0, ddof=1), rtol=1e-9)
        acc = screen.query_one("#cmp-acc", MetricPlot)
        assert len([ln for ln in acc.lines if not ln.dim]) == 2
        await pilot.press("m")  # one line per seed
        await pilot.pause(0.2)
        assert len(loss.lines) == 6 and not any(ln.dim for ln in loss.lines)
        assert [ln.label for ln in loss.lines].count("temperature=0.1 (n=3)") == 1
        await pilot.press("m")
        await pilot.pause(0.2)
        assert len(loss.lines) == 6 and sum(ln.dim for ln in loss.lines) == 4


async def test_export_writes_csv_markdown_and_latex(sweep_runs):
    runs_dir, names = sweep_runs
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1, start_worker=False)
    async with app.run_test(size=SIZE) as pilot:
        await open_compare(pilot, names)
        await pilot.press("E")
        await wait_for(pilot, lambda: any("exports" in str(n.message) for n in app._notifications), what="notice")
        files = sorted((runs_dir / "exports").iterdir())
        assert [f.suffix for f in files] == [".csv", ".md", ".tex"] and files[0].stem.startswith("compare-")
        notice = next(str(n.message) for n in app._notifications if "exports" in str(n.message))
        assert all(str(f) in notice for f in files)
        records = list(csv.DictReader(files[0].open()))
        assert [r["level"] for r in records] == ["run"] * 6 + ["group"] * 2
        assert {r["name"] for r in records if r["level"] == "run"} == set(names)
        for t, g in zip(TEMPERATURES, [r for r in records if r["level"] == "group"], strict=True):
            values = [linear_top1(t, s) for s in SEEDS]
            assert g["name"] == f"temperature={t}" and g["n"] == "3" and g["best_linear_top1_n"] == "3"
            assert float(g["best_linear_top1"]) == pytest.approx(statistics.fmean(values), rel=1e-9)
            assert float(g["best_linear_top1_std"]) == pytest.approx(statistics.stdev(values), rel=1e-9)
        md, tex = files[1].read_text(), files[2].read_text()
        assert "| best linear top-1 | " + expected([linear_top1(0.1, s) for s in SEEDS], 1, 100, "%") in md
        assert r"\begin{tabular}" in tex and r"$\pm$" in tex and r"\%" in tex
        await pilot.press("E")  # a second export in the same second does not overwrite the first
        await wait_for(pilot, lambda: len(list((runs_dir / "exports").iterdir())) == 6, what="second export")


async def test_results_view_groups_by_sweep_and_exports(sweep_runs):
    runs_dir, names = sweep_runs
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1, start_worker=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(app.runs) == 12, what="runs and jobs")
        await pilot.press("R")
        screen = await wait_screen(pilot, ResultsScreen, "#results-table")
        table = screen.query_one("#results-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2, what="two groups")
        accuracy = [r[1] for r in rows_of(table)]
        assert accuracy == [expected([linear_top1(t, s) for s in SEEDS], 4) for t in TEMPERATURES]
        assert [r[0] for r in rows_of(table)] == ["ts [temperature=0.1]", "ts [temperature=0.2]"]
        await wait_text(pilot, "ts [temperature=0.1]")  # drawn as text, not read as markup
        await pilot.press("g")  # by config: the same two settings
        await pilot.pause(0.1)
        assert table.row_count == 2
        await pilot.press("g")  # every result
        await pilot.pause(0.1)
        assert table.row_count == 6 and sorted(r[0] for r in rows_of(table)) == sorted(names)
        await pilot.press("g", "E")
        await wait_for(pilot, lambda: (runs_dir / "exports").is_dir() and len(list((runs_dir / "exports").iterdir()))
                       == 3, what="export")
        csv_file = next((runs_dir / "exports").glob("results-sweep-*.csv"))
        rows = list(csv.DictReader(csv_file.open()))
        assert [r["Accuracy"] for r in rows] == accuracy
