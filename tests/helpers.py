"""Helpers shared by the tests (``from tests.helpers import ...``; tests/tui's async,
Pilot-driven ``wait_for`` stays in tests/tui/tui_helpers.py).

- :func:`wait_for`: poll a condition until it holds, optionally watching the process that is
  meant to make it hold; a failing wait says what it waited for.
- :func:`make_run`, :func:`make_eval_job`, :func:`write_status`: run directories and
  evaluation jobs as a runner leaves them, without running one. status.json goes through
  core's own writer (``core.runs.update_status``: the run folder's lock, an atomic replace),
  never a hand-built file; a test that means to write a broken or foreign file writes it itself.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from core.runs import atomic_write_json, job_result_path, update_status

T = TypeVar("T")


def wait_for(cond: Callable[[], T], timeout: float = 60.0, proc: subprocess.Popen | None = None,
             what: str = "the condition", interval: float = 0.05) -> T:
    """Call ``cond()`` every ``interval`` seconds until it returns something truthy, and return
    that. Fails (AssertionError) after ``timeout`` seconds, naming ``what`` it waited for, or as
    soon as ``proc``, the process meant to make it true, has ended (with its exit code)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"while waiting for {what}, the watched process (pid {proc.pid}) ended early "
                                 f"with exit code {proc.returncode}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def write_status(folder: str | Path, **fields: Any) -> dict[str, Any]:
    """``folder``/status.json (a run's or an evaluation job's) holding exactly ``fields``, written
    through core's status writer; returns the record. An existing file is replaced whole."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = dict(fields)
    return update_status(folder / "status.json", lambda _: record)


def make_run(runs: str | Path, name: str, *, config: dict[str, Any] | None = None,
             metrics: Iterable[dict[str, Any] | str] | None = None, sweep: dict[str, Any] | None = None,
             checkpoints: Iterable[str] = (), **status: Any) -> Path:
    """The run directory ``runs``/``name``: config.json, sweep.json, metrics.jsonl (records, or
    lines already encoded), empty ``checkpoints/<name>.pt`` files, and a status.json holding
    exactly ``status`` (through :func:`write_status`); only what is given is written."""
    d = Path(runs) / name
    d.mkdir(parents=True, exist_ok=True)
    if config is not None:
        atomic_write_json(d / "config.json", config)
    if sweep is not None:
        atomic_write_json(d / "sweep.json", sweep)
    if status:
        write_status(d, **status)
    if metrics is not None:
        (d / "metrics.jsonl").write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in metrics))
    for checkpoint in checkpoints:
        (d / "checkpoints").mkdir(exist_ok=True)
        (d / "checkpoints" / f"{checkpoint}.pt").write_bytes(b"")
    return d


def make_eval_job(run: str | Path, job: str, *, result: dict[str, Any] | None = None, **status: Any) -> Path:
    """The evaluation job ``run``/eval/``job``: its status.json holding exactly ``status`` (through
    :func:`write_status`) and, when given, its result file (``eval/<job>.json``)."""
    job_dir = Path(run) / "eval" / job
    job_dir.mkdir(parents=True, exist_ok=True)
    if status:
        write_status(job_dir, **status)
    if result is not None:
        atomic_write_json(job_result_path(job_dir), result)
    return job_dir


def stop_at_step(monkeypatch, step: int) -> Callable[[], None]:
    """Make the trainer stop after step ``step``, as a SIGTERM that step's all-reduce saw would
    (``core.training.trainer.stop_agreed``, mid-epoch if the step is); returns what puts the
    real one back, for the resume."""
    from core.training import trainer
    real = trainer.stop_agreed
    calls = {"n": 0}

    def stop_after(flag, asked):
        calls["n"] += 1
        return real(flag, asked or calls["n"] == step)

    monkeypatch.setattr(trainer, "stop_agreed", stop_after)
    return lambda: monkeypatch.setattr(trainer, "stop_agreed", real)
