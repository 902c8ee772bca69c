"""Stopping, deleting and writing runs at the edges: a launched run still setting up, a run
in its starter's process group, a runs directory named eval, a status.json deleted under a
runner, folders without locks, a bug after a run's last word (issue 21's review)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import process
from core.config import PretrainConfig
from core.jobs import launch, queue
from core.jobs.worker import has_work
from core.runs import StatusFile, files, read_status, update_status
from core.runs.state import decide


def queued_run(runs: Path, name: str = "a") -> Path:
    with queue.queue_lock(runs):
        queue.enqueue(runs, runs / name, PretrainConfig(dataset="synthetic", epochs=1))
    return runs / name


def test_a_runs_directory_named_eval_still_has_a_queue(tmp_path):
    runs = tmp_path / "eval"
    queued_run(runs, "r1")
    assert [e.run for e in queue.queued(runs)] == ["r1"]
    assert queue.positions(runs) == {"r1": 1} and has_work(runs)


def test_a_launched_run_still_setting_up_can_be_stopped(tmp_path):
    """The worker started it (queue.json's launch) and its runner has not written status.json
    yet: it reads starting, and simclr stop ends its session and records that it stopped."""
    run = queued_run(tmp_path / "runs")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        q = json.loads((run / "queue.json").read_text())
        q["launch"] = {"pid": child.pid, "start_time": process.start_time(child.pid), "host": os.uname().nodename,
                       "at": time.time(), "gpu": None}
        files.atomic_write_json(run / "queue.json", q)
        assert launch.current_state(run)[0] == "starting"
        said = launch.stop(run)
        assert "did not train" in said
        assert child.wait(timeout=10) == -signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
    st = read_status(run)
    assert st.state == "stopped" and st.note == "stopped before it began training"


def test_a_run_sharing_its_starters_process_group_gets_the_signal_alone(tmp_path):
    """A runner started without a session of its own (`simclr pretrain ... &` in a script)
    records its starter's group: stopping it must signal the runner, not the group (which
    holds whoever asked), and must not call it gone."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # our process group
    try:
        StatusFile(tmp_path / "status.json").update(state="running", pid=child.pid, pgid=os.getpgrp(),
                                                   start_time=process.start_time(child.pid))
        said = launch.stop(tmp_path)
        assert f"process {child.pid}" in said
        assert child.wait(timeout=10) == -signal.SIGTERM  # and this test process is still here
    finally:
        if child.poll() is None:
            child.kill()


def test_a_runner_restores_a_status_json_deleted_under_it(tmp_path):
    path = tmp_path / "status.json"
    status = StatusFile(path, kind="pretrain")
    status.update(state="running", step=3)
    path.unlink()  # a person, or a network filesystem's hiccup
    status.update(step=4)
    st = read_status(path)
    assert (st.state, st.kind, st.step, st.pid) == ("running", "pretrain", 4, os.getpid())
    assert decide(st).state == "running"


def test_status_writes_go_on_where_folders_cannot_be_locked(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(files.fcntl, "flock", no_locks)
    update_status(tmp_path / "status.json", state="queued")
    assert read_status(tmp_path).state == "queued"


@pytest.mark.parametrize("last", ["finished", "stopped"])
def test_a_bug_after_a_runs_last_word_leaves_that_word(tmp_path, last):
    from core.cli.pretrain import _set_up_failed

    update_status(tmp_path / "status.json", state=last, error=None)
    (tmp_path / "config.json").write_text("{}")
    _set_up_failed(PretrainConfig(), tmp_path, made=False, error=RuntimeError("closing TensorBoard failed"))
    assert read_status(tmp_path).state == last


def test_queueing_refuses_a_bad_dist_timeout_before_anything_is_written(tmp_path):
    runs = tmp_path / "runs"
    res = subprocess.run([sys.executable, "-m", "core", "pretrain", "--preset", "tiny", "--queue", "--no-start",
                          "--runs-dir", str(runs)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SIMCLR_DIST_TIMEOUT": "soon"})
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "simclr: error: SIMCLR_DIST_TIMEOUT must be a positive number of seconds (got 'soon')"]
    assert not runs.exists()
