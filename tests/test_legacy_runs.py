"""Run directories written before the core/ regrouping still list, resume, evaluate and compare.

tests/fixtures/legacy_runs/ was written by the code of commit ee7a67a (before issue 21), with
the commands in tests/fixtures/legacy_runs/README.md: a finished run with a linear and a kNN
evaluation, a run stopped by SIGTERM after its first checkpoint, a sweep of four queued runs
with a queued --then knn, and a run submitted to Slurm (job 4242, never started). Every test
works on a copy; the fixture itself is never written.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_runs"
SWEEP = [f"tsweep-temperature={t},seed={s}" for t in ("0.2", "0.5") for s in (0, 1)]


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("README.md"))
    return root


def simclr(*args: str, cwd: Path, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    # no sbatch/squeue on PATH: the Slurm run is read from its directory alone
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if not (Path(p) / "squeue").exists())
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, "PATH": path, "SIMCLR_CACHE": str(cwd / ".cache"),
                                        "COLUMNS": "250", **env})


def listing(runs: Path) -> dict[str, dict]:
    res = simclr("runs", "--runs-dir", str(runs), "--format", "json", cwd=runs.parent)
    assert res.returncode == 0, res.stderr
    return {r["name"]: r for r in json.loads(res.stdout)}


def test_legacy_runs_list_with_their_states_positions_and_results(runs):
    rows = listing(runs)
    assert rows["finished-run"]["state"] == "finished"
    assert rows["finished-run"]["results"].keys() == {"linear-last", "knn-last"}
    assert rows["finished-run/eval/linear-last"]["state"] == "finished"
    assert rows["stopped-run"]["state"] == "stopped"
    assert rows["stopped-run"]["epoch"] == 1 and rows["stopped-run"]["total_epochs"] == 50
    assert [rows[n]["position"] for n in SWEEP] == [1, 3, 2, 4]
    assert all(rows[n]["state"] == "queued" and rows[n]["sweep"] == "tsweep" for n in SWEEP)
    slurm = rows["slurm-run"]
    assert slurm["state"] == "queued" and slurm["slurm"]["job_id"] == "4242"
    table = simclr("runs", "--runs-dir", str(runs), cwd=runs.parent)
    assert table.returncode == 0 and "job 4242" in table.stdout and "#1" in table.stdout


def test_legacy_queue_lists_the_sweep_and_its_then_jobs(runs):
    res = simclr("queue", "--runs-dir", str(runs), cwd=runs.parent)
    assert res.returncode == 0, res.stderr
    for name in SWEEP:
        assert name in res.stdout
    assert "knn" in res.stdout


def test_legacy_stopped_run_resumes_where_it_stopped(runs):
    run = runs / "stopped-run"
    saved = json.loads((run / "status.json").read_text())
    env = {**os.environ, "SIMCLR_CACHE": str(runs.parent / ".cache")}
    proc = subprocess.Popen([sys.executable, "-m", "core", "pretrain", "--resume", str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        end = time.time() + 150
        while time.time() < end:
            st = json.loads((run / "status.json").read_text() or "{}")
            if st.get("state") == "running" and st.get("step", 0) > saved["step"] + 2:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the resumed run did not get past step {saved['step'] + 2}")
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped" and status["step"] > saved["step"]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line).get("tag") == "train/loss"]
    assert steps == list(range(1, len(steps) + 1))  # continues from last.pt without a repeated step


def test_legacy_finished_run_evaluates_again_and_compares(runs):
    res = simclr("knn", "--run-dir", str(runs / "finished-run"), "--k", "5", cwd=runs.parent)
    assert res.returncode == 0, res.stderr
    result = json.loads((runs / "finished-run" / "eval" / "knn-last.json").read_text())
    assert 0.0 <= result["test_top1"] <= 1.0
    res = simclr("results", "--runs-dir", str(runs), cwd=runs.parent)
    assert res.returncode == 0, res.stderr
    assert "finished-run" in res.stdout


def test_legacy_runs_in_the_tui_store(runs):
    pytest.importorskip("textual")
    from simclr_tui.store import RunStore

    class NoSlurm:
        def latest(self, jobs):
            from simclr_tui.slurm_watch import SlurmAnswer
            return SlurmAnswer()

    snap = RunStore(runs, slurm=NoSlurm()).poll(watched=frozenset({"finished-run", "stopped-run"}))
    views = snap.views
    assert views["finished-run"].state == "finished" and views["finished-run"].best_acc is not None
    assert views["stopped-run"].state == "stopped" and views["stopped-run"].loss is not None
    assert [views[n].position for n in SWEEP] == [1, 3, 2, 4]
    assert views["slurm-run"].state == "queued" and views["slurm-run"].slurm.job_id == "4242"
    assert views["finished-run/eval/linear-last"].parent == "finished-run"
