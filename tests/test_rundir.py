"""The run directory's shared files: status reading, metrics appends from several writers,
the resume rewrite, and evaluation job names (core/runs/, no torch)."""

import json
import os
import socket
import threading
import time

import pytest

from core.runs import (
    MetricsWriter,
    eval_job_name,
    effective_state,
    read_metrics,
    truncate_metrics_after,
)


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("beat", ["soon", [1], {"t": 1}])
def test_unreadable_heartbeat_is_damaged_not_an_exception(beat):
    status = {"state": "running", "host": "elsewhere-" + socket.gethostname(), "heartbeat": beat}
    assert effective_state(status) == "damaged"


def test_heartbeat_age_decides_a_remote_live_run():
    remote = {"state": "running", "host": "elsewhere-" + socket.gethostname()}
    assert effective_state({**remote, "heartbeat": time.time()}) == "running"
    assert effective_state({**remote, "heartbeat": time.time() - 1000}) == "crashed"
    assert effective_state({**remote, "heartbeat": "12"}) == "crashed"  # numeric text is read as a number
    assert effective_state({"state": "finished", "heartbeat": "x"}) == "finished"


def test_resume_rewrite_drops_later_training_records_but_keeps_evaluation_ones(tmp_path):
    path = tmp_path / "metrics.jsonl"
    train, job = MetricsWriter(path), MetricsWriter(path, extra={"job": "knn-epoch_0001"})
    for step in (1, 2, 3, 4):
        train.log("train/loss", 1.0 / step, step, step / 2)
    train.log("knn/top1", 0.3, 4, 2.0)
    job.log("knn/top1", 0.31, 7, 7)  # an evaluation job's record, with a step past the checkpoint
    with open(path, "a") as f:
        f.write("not json\n")
    truncate_metrics_after(path, 2)
    kept = [(r["tag"], r["step"], r.get("job")) for r in _records(path)]
    assert kept == [("train/loss", 1, None), ("train/loss", 2, None), ("knn/top1", 7, "knn-epoch_0001")]


def test_writers_follow_the_file_a_resume_rewrote(tmp_path):
    """A writer that opened metrics.jsonl before a resume replaced it appends to the new file."""
    path = tmp_path / "metrics.jsonl"
    job = MetricsWriter(path, extra={"job": "linear-last"})
    job.log("linear/train_loss", 2.0, 1, 1)
    old_inode = os.stat(path).st_ino
    truncate_metrics_after(path, 0)
    assert os.stat(path).st_ino != old_inode  # atomically replaced
    job.log("linear/train_loss", 1.0, 2, 2)
    job.close()
    assert [r["step"] for r in _records(path)] == [1, 2]


def test_concurrent_appends_and_rewrites_lose_no_evaluation_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.touch()
    n = 400

    def append():
        w = MetricsWriter(path, extra={"job": "linear-last"})
        for i in range(n):
            w.log("linear/train_loss", float(i), i, i)
        w.close()

    t = threading.Thread(target=append)
    t.start()
    while t.is_alive():
        truncate_metrics_after(path, 0)
        time.sleep(0.001)
    t.join()
    records, _ = read_metrics(path)
    assert sorted(r["step"] for r in records) == list(range(n))


def test_eval_job_names():
    assert eval_job_name("linear", "last") == "linear-last"
    assert eval_job_name("knn", "epoch_0010", "cifar100") == "knn-cifar100-epoch_0010"
    assert eval_job_name("finetune", "last", label_fraction=0.1) == "finetune-0.1-last"
    assert eval_job_name("finetune", "last", label_fraction=1) == "finetune-1.0-last"
    with pytest.raises(ValueError, match="label fraction"):
        eval_job_name("finetune", "last")
