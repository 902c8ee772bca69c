"""The one state machine (core.runs.state.decide): each row of its table, fed by the run
directory, the queue's launch record and Slurm's word."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from core import process
from core.jobs.slurm import JobInfo
from core.runs.state import LIVE_STATES, SHOWN_STATES, STALE_AFTER, decide
from core.runs.status import Status

HERE = socket.gethostname()
NOW = 1_000_000.0


def st(**fields) -> Status:
    return Status.from_dict({"host": HERE, "heartbeat": NOW, **fields})


@pytest.fixture(scope="module")
def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def me() -> dict:
    return {"pid": os.getpid(), "start_time": process.start_time(os.getpid())}


@pytest.mark.parametrize("written", ["queued", "finished", "failed", "stopped"])
def test_a_written_end_or_queued_state_stands(written):
    assert decide(st(state=written), now=NOW + 10 * STALE_AFTER).state == written


def test_missing_or_unknown_is_damaged():
    assert decide(None).state == "damaged"
    assert decide(st(state="exploded")).state == "damaged"
    assert decide(Status.from_dict({"state": "running", "heartbeat": "soon", "host": "elsewhere"})).state == "damaged"


@pytest.mark.parametrize("written", LIVE_STATES)
def test_a_local_live_run_is_alive_while_its_process_is(written, dead_pid):
    assert decide(st(state=written, **me()), now=NOW).state == written
    assert decide(st(state=written, pid=dead_pid, start_time=None), now=NOW).state == "crashed"
    reused = {**me(), "start_time": me()["start_time"] + 1}  # the pid now belongs to another process
    assert decide(st(state=written, **reused), now=NOW).state == "crashed"


def test_a_remote_live_run_is_judged_by_its_heartbeat():
    remote = {"state": "running", "host": "elsewhere", "heartbeat": NOW}
    assert decide(Status.from_dict(remote), now=NOW + STALE_AFTER - 1).state == "running"
    assert decide(Status.from_dict(remote), now=NOW + STALE_AFTER + 1).state == "crashed"


def test_a_queued_run_the_worker_launched_is_starting(dead_pid):
    queued = st(state="queued", pid=None)
    launch = {**me(), "host": HERE, "at": NOW}
    assert decide(queued, launch=launch).state == "starting"
    assert decide(queued, launch={**launch, "pid": dead_pid, "start_time": None}).state == "queued"  # to settle


SLURM = {"state": "running", "launcher": "slurm", "slurm_job_id": "12", "host": "node1", "heartbeat": NOW}


@pytest.mark.parametrize("written,slurm,shown", [
    ("queued", "PENDING", "queued"),
    ("queued", "RUNNING", "starting"),
    ("queued", "CANCELLED", "stopped"),
    ("queued", "FAILED", "failed"),
    ("running", "RUNNING", "running"),
    ("running", "REQUEUED", "queued"),
    ("running", "NODE_FAIL", "crashed"),
    ("stopped", "PENDING", "queued"),
    ("finished", "COMPLETED", "finished"),
])
def test_slurms_word_on_a_slurm_run(written, slurm, shown):
    status = Status.from_dict({**SLURM, "state": written})
    reading = decide(status, slurm=JobInfo("12", slurm), asked_slurm=True, now=NOW + 1)
    assert reading.state == shown
    assert reading.state in SHOWN_STATES
    if shown in ("crashed", "failed"):
        assert slurm in reading.reason


def test_slurm_no_longer_knowing_a_job_ends_it_after_a_minute():
    status = Status.from_dict(SLURM)
    assert decide(status, slurm=None, asked_slurm=True, now=NOW + 30).state == "running"
    assert decide(status, slurm=None, asked_slurm=True, now=NOW + 61).state == "crashed"
    assert decide(Status.from_dict({**SLURM, "state": "queued"}), slurm=None, asked_slurm=True,
                  now=NOW + 61).state == "failed"
    # without Slurm's word the run directory stands (a live Slurm run goes stale by its heartbeat)
    assert decide(status, now=NOW + 30).state == "running"
    assert decide(status, now=time.time()).state == "crashed"
