"""The run queue and its worker (core/jobs/queue.py, core/jobs/worker.py) against the faults issue 14 names.

The worker starts `tests/queue_runner.py`, a torch-free stand-in for `python -m core` that
traces every start and end, so each test checks what ran, how often and when.
`test_sweep.py` runs the real runner end to end.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import wait_for

from core.jobs import queue, worker as queue_worker
from core.cli import main
from core.runs import read_json, read_run

STAND_IN = [sys.executable, str(Path(__file__).with_name("queue_runner.py"))]
ROOT = Path(__file__).resolve().parents[1]


def sweep(runs: Path, *extra: str, grid: str = "temperature=0.1,0.2", flags: tuple[str, ...] = ()) -> None:
    assert main(["sweep", "s", "--runs-dir", str(runs), "--grid", grid, "--no-start", *extra,
                 "--", "--preset", "tiny", *flags]) == 0


def start_worker(runs: Path, tmp_path: Path, slots: int = 1, env: dict | None = None,
                 seconds: float = 1.0) -> subprocess.Popen:
    env = dict(os.environ, QUEUE_TRACE=str(tmp_path / "trace.jsonl"), QUEUE_RUN_SECONDS=str(seconds),
               PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "core", "queue", "work", "--runs-dir", str(runs), "--slots",
                             str(slots), "--runner", shlex.join(STAND_IN)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def trace(tmp_path: Path) -> list[dict]:
    path = tmp_path / "trace.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def intervals(tmp_path: Path) -> dict[str, list[tuple[float, float]]]:
    """name -> [(start, end)] of every process that ran it."""
    starts, out = {}, {}
    for e in trace(tmp_path):
        if e["event"] == "start":
            starts[e["pid"]] = e
        else:
            out.setdefault(e["name"], []).append((starts[e["pid"]]["time"], e["time"]))
    return out


def never_overlap(spans: dict[str, list[tuple[float, float]]], slots: int = 1) -> bool:
    events = sorted([(a, 1) for v in spans.values() for a, _ in v] + [(b, -1) for v in spans.values() for _, b in v])
    live = peak = 0
    for _, d in events:
        live += d
        peak = max(peak, live)
    return peak <= slots


def state(runs: Path, name: str) -> str:
    return read_run(runs / name).state


NAMES = ["s-temperature=0.1", "s-temperature=0.2"]


def test_worker_runs_a_sweep_and_its_jobs_one_at_a_time_then_exits(tmp_path):
    runs = tmp_path / "runs"
    sweep(runs, "--then", "knn", grid="temperature=0.1,0.2,0.5")
    w = start_worker(runs, tmp_path, seconds=0.3)
    out, _ = w.communicate(timeout=90)
    assert w.returncode == 0 and "queue empty" in out
    spans = intervals(tmp_path)
    names = [f"s-temperature={t}" for t in (0.1, 0.2, 0.5)]
    assert sorted(spans) == sorted(names + [f"{n}/eval/knn-last" for n in names])
    assert all(len(v) == 1 for v in spans.values())  # exactly once each
    assert never_overlap(spans)
    # each run's job before the next run: the jobs of finished runs go first
    order = [e["name"] for e in trace(tmp_path) if e["event"] == "start"]
    assert order == [x for n in names for x in (n, f"{n}/eval/knn-last")]
    for n in names:
        assert state(runs, n) == "finished"
        assert [t["state"] for t in read_json(runs / n / "queue.json")["then"]] == ["done"]
        assert read_json(runs / n / "eval" / "knn-last.json")["test_top1"] == 0.5


def test_sigkill_of_the_worker_loses_nothing_and_starts_nothing_twice(tmp_path):
    runs = tmp_path / "runs"
    sweep(runs, "--then", "knn", grid="temperature=0.1,0.2,0.5")
    w = start_worker(runs, tmp_path, seconds=2.0)
    wait_for(lambda: state(runs, NAMES[0]) == "running", what=f"{NAMES[0]} running")
    os.killpg(w.pid, signal.SIGKILL)  # the worker's own group; the run has its own session
    w.wait()
    assert state(runs, NAMES[0]) == "running" and queue_worker.worker_info(runs) is None
    w2 = start_worker(runs, tmp_path, seconds=2.0)  # while the first run still runs
    out, _ = w2.communicate(timeout=120)
    assert w2.returncode == 0, out
    spans = intervals(tmp_path)
    assert len(spans) == 6 and all(len(v) == 1 for v in spans.values()), spans
    assert never_overlap(spans)  # the new worker counted the run the old one started


def test_two_workers_started_at_once_one_wins_the_lock(tmp_path):
    runs = tmp_path / "runs"
    sweep(runs)
    a, b = start_worker(runs, tmp_path), start_worker(runs, tmp_path)
    outs = [p.communicate(timeout=60)[0] for p in (a, b)]
    assert a.returncode == b.returncode == 0
    assert sum("already serves" in o for o in outs) == 1, outs
    spans = intervals(tmp_path)
    assert sorted(spans) == NAMES and all(len(v) == 1 for v in spans.values())


def test_a_queued_config_that_no_longer_validates_fails_with_its_reason(tmp_path):
    runs = tmp_path / "runs"
    sweep(runs)
    cfg = read_json(runs / NAMES[0] / "config.json")
    (runs / NAMES[0] / "config.json").write_text(json.dumps({**cfg, "batch_size": 1}))
    w = start_worker(runs, tmp_path)
    w.communicate(timeout=60)
    status = read_json(runs / NAMES[0] / "status.json")
    assert status["state"] == "failed" and "--batch-size must be at least 2" in status["error"]
    assert sorted(intervals(tmp_path)) == [NAMES[1]]  # never started; the next one ran


def test_a_run_the_runner_refuses_fails_with_the_runners_error(tmp_path):
    runs = tmp_path / "runs"
    sweep(runs, flags=("--data-dir", "missing"))
    w = start_worker(runs, tmp_path)
    out, _ = w.communicate(timeout=60)
    for n in NAMES:
        status = read_json(runs / n / "status.json")
        assert status["state"] == "failed", out
        # queued with a relative --data-dir, started with the absolute one: the worker's cwd may differ
        assert status["error"] == f"did not start: --data-dir {Path.cwd() / 'missing'} does not exist; point it at the dataset"
    assert intervals(tmp_path) == {}


def test_a_run_stopped_by_the_user_is_not_restarted_and_its_jobs_wait(tmp_path):
    runs = tmp_path / "runs"
    sweep(runs, "--then", "knn")
    w = start_worker(runs, tmp_path, seconds=30.0)
    wait_for(lambda: state(runs, NAMES[0]) == "running", what=f"{NAMES[0]} running")
    os.kill(read_json(runs / NAMES[0] / "status.json")["pid"], signal.SIGTERM)  # what the TUI's x does
    wait_for(lambda: state(runs, NAMES[0]) == "stopped", what=f"{NAMES[0]} stopped")
    wait_for(lambda: state(runs, NAMES[1]) == "running", what=f"{NAMES[1]} running")
    os.kill(read_json(runs / NAMES[1] / "status.json")["pid"], signal.SIGTERM)
    out, _ = w.communicate(timeout=60)
    assert w.returncode == 0 and "queue empty" in out  # stopped runs' jobs are not work
    assert [n for n, v in intervals(tmp_path).items() if len(v) != 1] == []
    assert sorted(intervals(tmp_path)) == NAMES
    assert read_json(runs / NAMES[0] / "queue.json")["then"][0]["state"] == "pending"


def test_runs_not_started_by_the_queue_count_against_the_slots(tmp_path):
    runs = tmp_path / "runs"
    sweep(runs, grid="temperature=0.1")
    (runs / "manual").mkdir()
    manual = subprocess.Popen([*STAND_IN, "pretrain", "--run-dir", str(runs / "manual"), "--config",
                               str(runs / "s-1" / "config.json")],
                              env=dict(os.environ, QUEUE_TRACE=str(tmp_path / "trace.jsonl"), QUEUE_RUN_SECONDS="1.5"))
    wait_for(lambda: state(runs, "manual") == "running", what="manual running")
    w = start_worker(runs, tmp_path)
    w.communicate(timeout=60)
    manual.wait()
    spans = intervals(tmp_path)
    assert sorted(spans) == ["manual", "s-1"] and never_overlap(spans)


def test_each_slot_gets_its_own_gpu(tmp_path):
    runs = tmp_path / "runs"
    sweep(runs, grid="temperature=0.1,0.2,0.5,1.0")
    w = start_worker(runs, tmp_path, slots=2, env={"CUDA_VISIBLE_DEVICES": "3,5"}, seconds=1.0)
    w.communicate(timeout=60)
    spans = intervals(tmp_path)
    assert never_overlap(spans, slots=2) and not never_overlap(spans, slots=1)  # two at once, never three
    starts = {e["name"]: e for e in trace(tmp_path) if e["event"] == "start"}
    ends = {e["name"]: e for e in trace(tmp_path) if e["event"] == "end"}
    assert {e["gpu"] for e in starts.values()} == {"3", "5"}
    for a in starts:  # two runs that overlapped never shared a GPU
        for b in starts:
            if a < b and starts[a]["time"] < ends[b]["time"] and starts[b]["time"] < ends[a]["time"]:
                assert starts[a]["gpu"] != starts[b]["gpu"]


def test_cancel_and_move(tmp_path, capsys):
    runs = tmp_path / "runs"
    sweep(runs, grid="temperature=0.1,0.2,0.5")
    names = [f"s-temperature={t}" for t in (0.1, 0.2, 0.5)]
    assert list(queue.positions(runs)) == names
    assert main(["queue", "move", names[2], "top", "--runs-dir", str(runs)]) == 0
    assert list(queue.positions(runs)) == [names[2], names[0], names[1]]
    assert main(["queue", "move", names[2], "down", "--runs-dir", str(runs)]) == 0
    assert list(queue.positions(runs)) == [names[0], names[2], names[1]]
    assert main(["queue", "move", names[1], "1", "--runs-dir", str(runs)]) == 0
    assert queue.positions(runs)[names[1]] == 1
    assert main(["queue", "move", names[1], "sideways", "--runs-dir", str(runs)]) == 2
    assert "up, down, top, bottom or a position" in capsys.readouterr().err
    assert main(["queue", "cancel", names[0], "--runs-dir", str(runs)]) == 0
    assert not (runs / names[0]).exists() and list(queue.positions(runs)) == [names[1], names[2]]
    assert main(["queue", "cancel", "nope", "--runs-dir", str(runs)]) == 2
    assert "not queued: nope (no such run or sweep)" in capsys.readouterr().err
    assert main(["queue", "cancel", "s", "--runs-dir", str(runs)]) == 0  # a sweep's name: all of it
    assert queue.positions(runs) == {}


def test_queue_listing_as_json(tmp_path, capsys):
    runs = tmp_path / "runs"
    sweep(runs, "--then", "knn")
    capsys.readouterr()
    assert main(["queue", "--runs-dir", str(runs), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["worker"] is None and data["slots"] == 1 and data["running"] == []
    assert [(q["position"], q["name"], q["sweep"]) for q in data["queued"]] == [(1, NAMES[0], "s"), (2, NAMES[1], "s")]
    assert [j["name"] for j in data["jobs"]] == [f"{n}/eval/knn-last" for n in NAMES]
    assert not any(j["ready"] for j in data["jobs"])


def test_pretrain_queue_adds_one_run(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setattr(queue_worker, "ensure_worker", lambda *a, **k: None)  # queue only, start nothing
    assert main(["pretrain", "--preset", "tiny", "--runs-dir", str(runs), "--run-dir", str(runs / "one"),
                 "--queue", "--then", "linear-eval", "--then", "finetune --label-fraction 0.5"]) == 0
    assert "queued" in capsys.readouterr().out
    assert state(runs, "one") == "queued" and queue.positions(runs) == {"one": 1}
    assert [t["argv"] for t in read_json(runs / "one" / "queue.json")["then"]] == [
        ["linear-eval"], ["finetune", "--label-fraction", "0.5"]]
    assert main(["pretrain", "--preset", "tiny", "--run-dir", str(runs / "two"), "--then", "knn"]) == 2
    assert "--then runs jobs after a queued run: add --queue" in capsys.readouterr().err
    assert main(["pretrain", "--preset", "tiny", "--runs-dir", str(runs), "--run-dir", str(runs / "one"),
                 "--queue"]) == 2  # taken
    assert not (runs / "two").exists()
    assert main(["pretrain", "--preset", "tiny", "--runs-dir", str(runs), "--queue", "--no-start"]) == 0
    assert len(queue.positions(runs)) == 2
    assert main(["pretrain", "--preset", "tiny", "--run-dir", str(runs / "exports"), "--queue"]) == 2
    assert "reserved" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--grid", "temperature=0.1,-1"], "sweep s, temperature=-1: --temperature must be at least"),
    (["--grid", "temprature=0.1,0.2"], "not a config key (did you mean temperature?)"),
    (["--grid", "temperature=0.1,0.1"], "a value is listed twice"),
    (["--grid", "temperature=0.1,1e-1"], "is the same setting as"),
    (["--grid", "temperature"], "write KEY=V1,V2"),
    (["--grid", "device=cpu,cuda"], "says where a run runs"),
    (["--seeds", "0,x"], "--seeds '0,x': write integers"),
    (["--seeds", "1,2", "--grid", "seed=0,1"], "give the seeds once"),
    (["--seeds", "0,1", "--then", "knn --k x"], "--then 'knn --k x': argument --k: invalid int value"),
    (["--seeds", "0,1", "--then", "finetune"], "the following arguments are required: --label-fraction"),
    (["--seeds", "0,1", "--then", "knn --run-dir x"], "leave out --run-dir"),
    (["--seeds", "0,1", "--then", "train"], "give one of linear-eval, knn, finetune"),
    (["--slots", "0", "--seeds", "0,1"], "--slots must be at least 1"),
    ([], "a sweep needs at least one --grid"),
])
def test_a_bad_sweep_is_one_line_and_makes_nothing(tmp_path, capsys, argv, message):
    runs = tmp_path / "runs"
    assert main(["sweep", "s", "--runs-dir", str(runs), *argv, "--no-start", "--", "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not runs.exists() or [p.name for p in runs.iterdir() if p.name != ".queue"] == []


def test_a_sweep_name_is_used_once_and_flags_after_the_double_dash_are_checked(tmp_path, capsys):
    runs = tmp_path / "runs"
    sweep(runs)
    assert main(["sweep", "s", "--runs-dir", str(runs), "--grid", "lr=0.1,0.2", "--no-start", "--",
                 "--preset", "tiny"]) == 2
    assert "sweep s already exists" in capsys.readouterr().err
    assert main(["sweep", "t", "--runs-dir", str(runs), "--grid", "lr=0.1,0.2", "--no-start", "--",
                 "--preset", "tiny", "--bogus", "1"]) == 2
    assert "unrecognized arguments: --bogus 1" in capsys.readouterr().err
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == NAMES  # .queue, .sweeps


def test_notes_and_tags_from_the_command_line(tmp_path, capsys):
    runs = tmp_path / "runs"
    sweep(runs)
    assert main(["note", NAMES[0], "lower temperature", "--tags", "study, keep", "--runs-dir", str(runs)]) == 0
    assert read_json(runs / NAMES[0] / "notes.json") == {"note": "lower temperature", "tags": ["keep", "study"]}
    assert main(["note", NAMES[0], "--tags", "", "--runs-dir", str(runs)]) == 0  # clears tags, keeps the note
    assert read_json(runs / NAMES[0] / "notes.json") == {"note": "lower temperature", "tags": []}
    capsys.readouterr()
    assert main(["note", NAMES[0], "--runs-dir", str(runs)]) == 0
    assert capsys.readouterr().out == f"{NAMES[0]}: lower temperature\n"
    assert main(["note", "nope", "x", "--runs-dir", str(runs)]) == 2
    assert main(["note", "../x", "x", "--runs-dir", str(runs)]) == 2
    assert not (runs / "nope").exists()
