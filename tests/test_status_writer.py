"""status.json's one writer (core.runs.status) and the worker's start failures (issue 21)."""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from pathlib import Path

from core.config import PretrainConfig
from core.jobs import queue
from core.jobs.worker import Worker
from core.runs import StatusFile, read_status, update_status
from core.runs.state import decide

ROUNDS = 300


def _heartbeats(path: str, rounds: int, ready) -> None:
    status = StatusFile(path, kind="pretrain")
    status.update(state="running")
    ready.set()
    for step in range(1, rounds + 1):
        status.update(step=step)  # force=True: a write every step, the worst case


def _bumps(path: str, rounds: int, ready) -> None:
    ready.wait(30)
    for _ in range(rounds):
        update_status(path, lambda st: {**st, "bumps": st.get("bumps", 0) + 1})


def test_a_heartbeating_runner_never_loses_another_processs_update(tmp_path):
    """One process heartbeats (StatusFile) while another increments a field ROUNDS times
    (update_status): every increment survives, and so does the runner's own last word."""
    path = tmp_path / "run" / "status.json"
    path.parent.mkdir()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    procs = [ctx.Process(target=_heartbeats, args=(str(path), ROUNDS, ready)),
             ctx.Process(target=_bumps, args=(str(path), ROUNDS, ready))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    data = json.loads(path.read_text())
    assert data["bumps"] == ROUNDS
    assert data["step"] == ROUNDS and data["state"] == "running"


def test_the_runner_writes_whole_once_then_only_its_own_fields(tmp_path):
    path = tmp_path / "status.json"
    update_status(path, state="queued", note="from the queue", slurm_job_id="7")
    status = StatusFile(path, kind="pretrain")
    status.update()  # the runner takes the run over: its record replaces the queued one
    assert "note" not in json.loads(path.read_text())
    update_status(path, note="set by simclr stop")
    status.update(step=3)
    data = json.loads(path.read_text())
    assert data["note"] == "set by simclr stop" and data["step"] == 3 and data["state"] == "starting"


def test_typed_status_reads_wrong_types_as_absent_and_names_them(tmp_path):
    (tmp_path / "status.json").write_text(json.dumps(
        {"state": "finished", "step": "ten", "epoch": True, "heartbeat": "12.5", "pid": 4, "host": ["x"]}))
    st = read_status(tmp_path)
    assert (st.state, st.step, st.epoch, st.heartbeat, st.pid, st.host) == ("finished", None, None, 12.5, 4, None)
    assert set(st.bad) == {"step", "epoch", "host"}
    assert decide(st).state == "finished"
    assert decide(None).state == "damaged"


def test_a_queued_run_the_worker_cannot_start_fails_with_the_reason(tmp_path):
    """Popen raising (a runner that is not there) used to leave the run queued and retried
    every second, and has_work never cleared, so the worker never exited."""
    runs = tmp_path / "runs"
    with queue.queue_lock(runs):
        queue.enqueue(runs, runs / "a", PretrainConfig(dataset="synthetic", epochs=1))
    worker = Worker(runs, slots=1, runner=[str(tmp_path / "no-such-runner")], poll=0.05)
    assert worker.run() == 0  # it exits: nothing is left to start
    st = read_status(runs / "a")
    assert st.state == "failed" and "could not be started" in st.error and "no-such-runner" in st.error
    assert queue.queued(runs) == []


def test_a_then_job_the_worker_cannot_start_fails_with_the_reason(tmp_path):
    runs = tmp_path / "runs"
    with queue.queue_lock(runs):
        queue.enqueue(runs, runs / "a", PretrainConfig(dataset="synthetic", epochs=1), then=[["knn"]])
    update_status(runs / "a" / "status.json", state="finished")
    worker = Worker(runs, slots=1, runner=[sys.executable + "-missing"], poll=0.05)
    assert worker.run() == 0
    then = json.loads((runs / "a" / "queue.json").read_text())["then"][0]
    assert then["state"] == "failed" and "could not be started" in then["error"]
