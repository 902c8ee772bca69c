"""`simclr sweep` end to end with the real runner, and the sweep's expansion on its own.

The end-to-end test is the demo issue 14 asks for: a 2x2 sweep (temperature x seed) of tiny
synthetic runs with `--slots 1 --then knn` returns at once, never trains two at a time,
survives a SIGKILL of its worker, runs every run and kNN job exactly once, and
`simclr results --group-by sweep --format json` answers with 2 groups of n = 2.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import wait_for

from core.jobs import queue, sweep
from core.jobs.worker import worker_info
from core.config import ConfigError
from core.runs import read_json, read_run

ROOT = Path(__file__).resolve().parents[1]
NAMES = [f"demo-temperature={t},seed={s}" for s in (0, 1) for t in (0.2, 0.5)]


def simclr(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_expand_orders_seeds_outermost_and_names_what_differs():
    members = sweep.expand("s", {}, {"temperature": ["0.1", "0.2"], "batch_size": ["32"]}, [0, 1])
    assert [m.name for m in members] == ["s-temperature=0.1,seed=0", "s-temperature=0.2,seed=0",
                                         "s-temperature=0.1,seed=1", "s-temperature=0.2,seed=1"]
    assert [m.swept for m in members][1] == {"seed": 0, "temperature": 0.2, "batch_size": 32}
    assert all(m.config.batch_size == 32 for m in members) and members[3].config.seed == 1
    assert sweep.parse_seeds("0-3") == [0, 1, 2, 3]
    assert sweep.setting_label({"seed": 1, "temperature": 0.2}) == "temperature=0.2"


def test_names_fall_back_to_numbers_when_values_would_collide_or_run_long():
    assert sweep.member_names("s", [{"data_dir": "a/b"}, {"data_dir": "a_b"}], ["data_dir"]) == ["s-001", "s-002"]
    long = [{"data_dir": "x" * 120}, {"data_dir": "y"}]
    assert sweep.member_names("s", long, ["data_dir"]) == ["s-001", "s-002"]
    assert sweep.member_names("s", [{"lr": 0.1}], []) == ["s-1"]


def test_every_combination_is_validated_before_any_is_made():
    with pytest.raises(ConfigError, match="sweep s, temperature=0.1,batch_size=1: --batch-size must be at least 2"):
        sweep.expand("s", {}, {"temperature": ["0.1"], "batch_size": ["64", "1"]}, None)


def test_a_2x2_sweep_survives_a_sigkilled_worker_and_runs_everything_exactly_once(tmp_path):
    runs = tmp_path / "runs"
    t0 = time.time()
    res = simclr("sweep", "demo", "--runs-dir", str(runs), "--grid", "temperature=0.2,0.5", "--seeds", "0,1",
                 "--slots", "1", "--then", "knn", "--", "--preset", "tiny", "--epochs", "1", "--knn-every", "0")
    assert res.returncode == 0, res.stderr
    assert time.time() - t0 < 10  # it queues and returns; the worker trains
    assert sorted(p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")) == sorted(NAMES)
    wait_for(lambda: (worker_info(runs) or {}).get("pid"), timeout=30, what="the queue worker")  # started by the sweep, its worker.json written
    worker = worker_info(runs)
    assert worker["slots"] == 1
    # SIGKILL the worker while the second run trains (its first run and kNN are done)
    wait_for(lambda: read_run(runs / NAMES[1]).state == "running", timeout=240, what=f"{NAMES[1]} running")
    os.kill(worker["pid"], signal.SIGKILL)
    wait_for(lambda: worker_info(runs) is None, timeout=10, what="the worker gone")
    assert read_run(runs / NAMES[1]).state == "running"  # the run lives on in its own session
    res = simclr("queue", "work", "--runs-dir", str(runs), timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    spans = []
    for name in NAMES:
        run, job = read_json(runs / name / "status.json"), read_json(runs / name / "eval" / "knn-last" / "status.json")
        assert run["state"] == job["state"] == "finished", name
        # started exactly once: one launch line in each log, one attempt of the job in the metrics
        assert (runs / name / "stdout.log").read_text().count("$ simclr pretrain") == 1
        assert (runs / name / "eval" / "knn-last" / "stdout.log").read_text().count("$ simclr knn") == 1
        spans += [(run["created"], run["heartbeat"]), (job["created"], job["heartbeat"])]
    spans.sort()
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), "two jobs overlapped"
    res = simclr("results", "--runs-dir", str(runs), "--group-by", "sweep", "--format", "json")
    assert res.returncode == 0, res.stderr
    groups = json.loads(res.stdout)
    assert len(groups) == 2 and all(g["n"] == 2 for g in groups)
    for g in groups:
        tops = [read_json(runs / r / "eval" / "knn-last.json")["test_top1"] for r in g["runs"]]
        assert g["test_top1_mean"] == pytest.approx(statistics.mean(tops))
        assert g["test_top1_std"] == pytest.approx(statistics.stdev(tops))
