"""The poll-thread model: bounded series, byte-offset tailing, damage, eval-job routing."""

from __future__ import annotations

import json
import os
import random
import socket
import time
from pathlib import Path

import pytest

from tests import helpers

from core.runs import atomic_write_json, read_metrics
from simclr_tui.series import Series, resample, smooth, sparkline
from core.runs import read_metrics_chunk
from simclr_tui.store import RunStore, result_accuracy


def rec(step, value, tag="train/loss", **extra):
    return json.dumps({"step": step, "epoch": step / 10, "time": 0.0, "tag": tag, "value": value, **extra}) + "\n"


def make_run(root: Path, name: str, state="finished", lines: list[str] | None = None, config=None, **status):
    st = {"kind": "pretrain", "state": state, "pid": 0, "pgid": 0, "host": socket.gethostname(),
          "created": 1000.0, "heartbeat": 1100.0, "epoch": 1, "step": 10, "total_steps": 20, "total_epochs": 2}
    st.update(status)
    config = config or {"dataset": "cifar10", "backbone": "resnet18", "batch_size": 8}
    return helpers.make_run(root, name, config=config, metrics=lines or [], **st)


# ---------------------------------------------------------------------- Series
def test_series_is_bounded_and_keeps_exact_extremes():
    s = Series(cap=64)
    values = [random.Random(0).uniform(-5, 5) for _ in range(100_000)]
    for i, v in enumerate(values):
        s.add(float(i), v)
    data = s.data()
    assert len(data.ys) <= 64 + 1
    assert data.count == len(values)
    assert data.vmin == min(values) and data.vmax == max(values) and data.last == values[-1]
    # the stored points are bucket means: the overall mean is preserved
    stored_mean = sum(y * s.stride for y in s.ys) / (len(s.ys) * s.stride)
    covered = values[: len(s.ys) * s.stride]
    assert stored_mean == pytest.approx(sum(covered) / len(covered))


def test_series_skips_non_finite_values():
    s = Series(cap=8)
    for v in (1.0, float("nan"), float("inf"), 2.0):
        s.add(0.0, v)
    assert s.data().count == 2 and s.vmax == 2.0


def test_smooth_resample_sparkline():
    assert smooth([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])  # debiased: no ramp from zero
    assert resample(list(range(10)), 5) == [0.5, 2.5, 4.5, 6.5, 8.5]
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([], 8) == "" and len(sparkline([3.0] * 50, 12)) == 12


# ---------------------------------------------------------------------- tailing
def test_chunked_reader_agrees_with_core_read_metrics(tmp_path):
    """Whatever the chunk size, the records are exactly those core.runs.read_metrics sees."""
    path = tmp_path / "metrics.jsonl"
    rng = random.Random(1)
    lines = []
    for i in range(500):
        lines.append(rec(i, rng.random()))
        if i % 97 == 0:
            lines.append("{garbage\n")
    path.write_text("".join(lines) + '{"step": 500, "tag": "train/lo')  # a writer mid-append
    expected, end = read_metrics(path, 0)
    for chunk in (64, 1000, 1 << 20):
        got, offset, bad = [], 0, 0
        while True:
            records, new, b = read_metrics_chunk(path, offset, chunk)
            if new == offset:
                break
            got += records
            offset, bad = new, bad + b
        assert got == expected
        assert offset == end
        assert bad == 6


def test_store_tails_incrementally_and_bounds_memory(tmp_path):
    d = make_run(tmp_path, "r", lines=[rec(i, 10 - i / 1000) for i in range(5000)])
    store = RunStore(tmp_path, cap=32, budget_bytes=50_000, chunk_bytes=10_000)
    first = store.poll(frozenset({"r"}))
    assert first.backlog  # the budget stopped it part-way
    n_first = first.details["r"].series["train/loss"].count
    assert 0 < n_first < 5000
    snap = first
    for _ in range(100):
        if not snap.backlog:
            break
        snap = store.poll(frozenset({"r"}))
    loss = snap.details["r"].series["train/loss"]
    assert loss.count == 5000 and len(loss.ys) <= 33
    assert snap.views["r"].loss == pytest.approx(10 - 4999 / 1000)
    # appended records arrive on the next poll
    with open(d / "metrics.jsonl", "a") as f:
        f.write(rec(5000, 0.5))
    assert store.poll(frozenset({"r"})).views["r"].loss == 0.5


def test_store_restarts_when_metrics_are_rewritten(tmp_path):
    """A resume rewrites metrics.jsonl without the records past the checkpoint."""
    d = make_run(tmp_path, "r", lines=[rec(i, float(i)) for i in range(100)])
    store = RunStore(tmp_path)
    assert store.poll(frozenset({"r"})).details["r"].series["train/loss"].count == 100
    atomic_write_json(d / "tmp.json", {})  # make sure the replaced file gets a new inode
    new = d / "metrics.new"
    new.write_text("".join(rec(i, float(i)) for i in range(40)) + "".join(rec(i, -1.0) for i in range(40, 150)))
    os.replace(new, d / "metrics.jsonl")
    s = store.poll(frozenset({"r"})).details["r"].series["train/loss"]
    assert s.count == 150 and s.last == -1.0


def test_eval_jobs_are_their_own_rows_with_their_records(tmp_path):
    lines = [rec(i, 5.0) for i in range(10)]
    lines += [rec(1, 0.6, "linear/test_top1", job="linear-last"), rec(2, 0.7, "linear/test_top1", job="linear-last"),
              rec(1, 1.5, "linear/train_loss", job="linear-last"), rec(5, 0.4, "knn/top1")]
    d = make_run(tmp_path, "r", lines=lines)
    helpers.make_eval_job(d, "linear-last", result={"test_top1": 0.71}, kind="linear-eval", state="finished",
                          parent="r", checkpoint="last", epoch=2, total_epochs=2)
    snap = RunStore(tmp_path).poll(frozenset({"r/eval/linear-last"}))
    assert list(snap.views) == ["r", "r/eval/linear-last"]
    parent, child = snap.views["r"], snap.views["r/eval/linear-last"]
    assert parent.best_acc == 0.7  # max of knn/top1 and its jobs' linear/test_top1
    assert child.kind == "linear-eval" and child.parent == "r" and child.loss == 1.5
    assert child.best_acc == 0.71  # the result file
    assert child.dataset == "cifar10"  # from the parent's config
    assert set(snap.details["r/eval/linear-last"].series) == {"linear/test_top1", "linear/train_loss"}


def test_a_rerun_eval_job_starts_its_curves_again(tmp_path):
    lines = [rec(1, 0.5, "linear/test_top1", job="linear-last", started=100.0),
             rec(2, 0.9, "linear/test_top1", job="linear-last", started=100.0),
             rec(1, 0.3, "linear/test_top1", job="linear-last", started=200.0)]
    make_run(tmp_path, "r", lines=lines)
    s = RunStore(tmp_path).poll(frozenset({"r"})).details["r"].series["linear/test_top1@linear-last"]
    assert s.count == 1 and s.last == 0.3 and s.vmax == 0.3


@pytest.mark.parametrize("breakage, reason", [
    ("status", "status.json is missing or unreadable"),
    ("config", "config.json is unreadable"),
    ("metrics-garbage", "unreadable line"),
    ("metrics-truncated", "partial line"),
])
def test_damaged_runs_show_what_they_can(tmp_path, breakage, reason):
    d = make_run(tmp_path, "r", lines=[rec(i, 3.0) for i in range(5)])
    if breakage == "status":
        (d / "status.json").write_text('{"state": "runn')  # deliberately broken: by hand, not core's writer
    elif breakage == "config":
        (d / "config.json").write_text("\x00\x01 not json")
    elif breakage == "metrics-garbage":
        with open(d / "metrics.jsonl", "a") as f:
            f.write("\x00\xff}{\n" + rec(5, 2.0))
    else:
        with open(d / "metrics.jsonl", "a") as f:
            f.write('{"step": 6, "epoch": 0.6, "tag": "train/lo')
    view = RunStore(tmp_path).poll().views["r"]
    assert any(reason in r for r in view.damage), view.damage
    assert view.display_state == "damaged"
    assert view.loss in (3.0, 2.0)  # the readable records are still there


def test_wrong_types_everywhere_are_shown_not_raised(tmp_path):
    """Fuzzed files: every status/config value of the wrong type. The run is listed, nothing raises."""
    make_run(tmp_path, "ok")
    d = make_run(tmp_path, "weird", lines=['{"tag": "x/y", "value": 1, "epoch": "e", "step": "s", "job": {}}\n',
                                           rec(1, 2.0), '{"tag": 5, "value": "x"}\n', '{"tag": "a", "value": true}\n'])
    (d / "status.json").write_text(json.dumps({  # deliberately wrong types: by hand, not core's writer
        "kind": 5, "state": "running", "pid": "x", "pgid": [], "host": {}, "epoch": "e", "step": [],
        "total_steps": {}, "total_epochs": "many", "created": "yesterday", "heartbeat": "now",
        "images_per_sec": "fast", "error": ["a"]}))
    (d / "config.json").write_text(json.dumps({"dataset": 3, "batch_size": "many", "time_budget": "soon"}))
    snap = RunStore(tmp_path).poll(frozenset({"weird"}))
    assert snap.views["ok"].state == "finished"
    weird = snap.views["weird"]
    assert weird.display_state == "damaged" and weird.loss == 2.0
    assert any("2 unreadable" in r for r in weird.damage)


def test_running_run_eta_and_partial_line_is_not_damage(tmp_path):
    now = time.time()
    d = make_run(tmp_path, "r", state="running", pid=os.getpid(), start_time=None, created=now - 100,
                 heartbeat=now, step=50, total_steps=100, images_per_sec=80.0,
                 lines=[rec(i, 1.0) for i in range(5)] + ['{"partial'])
    (d / "config.json").write_text(json.dumps({"dataset": "cifar10", "backbone": "resnet18", "batch_size": 8}))
    view = RunStore(tmp_path).poll(now=now).views["r"]
    assert view.state == "running" and view.damage == ()
    assert view.eta == pytest.approx(50 / (80 / 8))  # remaining steps / (images per s / batch)
    assert view.progress == 0.5 and view.elapsed == pytest.approx(100, abs=1)


def test_baseline_shows_its_zero_epochs_not_the_copied_configs(tmp_path):
    make_run(tmp_path, "pixels", kind="baseline", epoch=0, step=0, total_steps=None,
             total_epochs=0, config={"dataset": "cifar10", "backbone": "resnet18", "epochs": 100})
    make_run(tmp_path, "run", config={"dataset": "cifar10", "epochs": 100}, total_epochs=None, total_steps=None)
    views = RunStore(tmp_path).poll().views
    assert views["pixels"].total_epochs == 0 and views["pixels"].progress == 1.0
    assert views["run"].total_epochs == 100  # no plan in the status yet: the config's


def test_result_accuracy_is_the_test_top1():
    assert result_accuracy({"test_top1": 0.5, "test_top5": 0.9, "fit": {"holdout_top1": 0.8}}) == 0.5
    assert result_accuracy({"metrics": {"test_top1": 0.25}}) == 0.25
    assert result_accuracy({"top1": 0.4}) == 0.4
    assert result_accuracy({"fit": {"holdout_top1": 0.8}}) is None and result_accuracy(None) is None
