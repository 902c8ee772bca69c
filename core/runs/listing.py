"""The runs directory: which folders are runs and jobs, reading each once, and claiming one.

A run is a folder of the runs directory holding status.json or config.json; its evaluation
jobs are ``NAME/eval/JOB/`` folders holding status.json. :func:`iter_runs` lists them in one
pass, each read once into a :class:`RunInfo` whose state the state machine decided.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from core.errors import RunBusyError
from core.runs.files import read_json
from core.runs.state import Reading, decide
from core.runs.status import Status

try:
    import fcntl
except ImportError:  # not POSIX: a run directory is not guarded against a second writer
    fcntl = None

#: files a run directory may hold before its runner starts: the TUI's log, and what the queue
#: (queue.json, sweep.json), Slurm (slurm.json, slurm.sh) and the user (notes.json) put there;
#: config.json and status.json only while queued
PRE_START_FILES = frozenset({"stdout.log", "notes.json", "queue.json", "sweep.json", "slurm.json", "slurm.sh"})


def is_unstarted(run_dir: str | Path) -> bool:
    """True if a new run may start in this directory: it does not exist, holds only
    :data:`PRE_START_FILES`, or is a queued run (status ``queued``, plus its config.json and
    the eval/ folder of evaluation jobs queued to follow it)."""
    path = Path(run_dir)
    try:
        names = set(os.listdir(path))
    except FileNotFoundError:
        return True
    if names <= PRE_START_FILES:
        return True
    status = read_json(path / "status.json")
    # a queued run's eval/ holds only the evaluation jobs submitted to follow it (Slurm --then)
    return (status or {}).get("state") == "queued" and names <= PRE_START_FILES | {"config.json", "status.json", "eval"}



@contextlib.contextmanager
def hold_run_dir(run_dir: str | Path) -> Iterator[None]:
    """Hold the run directory exclusively for as long as this process writes it.

    An advisory ``flock`` on the run's stdout.log (created if missing; nothing ever
    replaces it, and the folder itself carries the metrics lock): a second runner started
    on the same directory gets RunBusyError instead of interleaving its files with the
    first. The kernel drops the lock when the process ends, however it ends, so a crashed
    run never leaves a stale lock behind.
    """
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / "stdout.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunBusyError(f"{path} is being written by another process right now; wait for it "
                                   f"to end (or stop it), or choose another run directory") from None
            except OSError:  # a filesystem without locks (some network mounts): go on unguarded
                pass
        yield
    finally:
        os.close(fd)  # closing releases the lock


@dataclass(frozen=True)
class RunInfo:
    """What a reader knows of one run directory without opening its metrics: its status
    (``record`` typed, ``status`` the raw dict for display), config, queue launch record,
    and the state :func:`core.runs.state.decide` gives them (``reason``: why, if not plain)."""

    path: Path
    status: dict[str, Any] | None
    config: dict[str, Any] | None
    state: str
    record: Status | None = None
    queue: dict[str, Any] | None = None  # queue.json as read (runs only)
    reason: str | None = None
    is_job: bool = False  # an evaluation job (NAME/eval/JOB) rather than a run

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def launch(self) -> dict[str, Any] | None:
        """The queue worker's launch of this queued run, if it has one."""
        return _launch(self.queue)

    def with_reading(self, reading: Reading) -> RunInfo:
        return replace(self, state=reading.state, reason=reading.reason)


def is_job_dir(path: Path) -> bool:
    """``NAME/eval/JOB`` under a run (a runs directory that happens to be named ``eval`` is no run)."""
    run = path.parent.parent
    return path.parent.name == "eval" and ((run / "status.json").exists() or (run / "config.json").exists())


def _launch(queue: dict[str, Any] | None) -> dict[str, Any] | None:
    return queue["launch"] if isinstance(queue, dict) and isinstance(queue.get("launch"), dict) else None


def launch_record(run_dir: Path) -> dict[str, Any] | None:
    """The queue worker's launch of a queued run (queue.json's ``launch``), if it has one."""
    return _launch(read_json(run_dir / "queue.json"))


def read_run(path: Path, now: float | None = None, job: bool | None = None) -> RunInfo:
    """One run (or, ``job``, evaluation job) directory, read once and decided."""
    job = is_job_dir(path) if job is None else job
    raw = read_json(path / "status.json")
    record = None if raw is None else Status.from_dict(raw)
    queue = None if job else read_json(path / "queue.json")
    reading = decide(record, launch=_launch(queue), now=now)
    return RunInfo(path, raw, read_json(path / "config.json"), reading.state, record, queue, reading.reason, job)


def iter_runs(runs_dir: str | Path, jobs: bool = False) -> Iterator[RunInfo]:
    """Every run directory (one holding status.json or config.json) under runs_dir, by name.

    With ``jobs=True`` each run is followed by its evaluation jobs (``NAME/eval/JOB/``).
    """
    root = Path(runs_dir)
    if not root.is_dir():
        return
    for p in sorted(root.iterdir()):
        if not p.is_dir() or not ((p / "status.json").exists() or (p / "config.json").exists()):
            continue
        yield read_run(p, job=False)
        if jobs:
            for j in list_jobs(p):
                yield read_run(j, job=True)


def list_jobs(run_dir: Path) -> list[Path]:
    """The evaluation job folders of a run (``NAME/eval/JOB/`` holding status.json), by name.

    A run deleted while it is listed has no jobs, rather than failing the whole listing.
    """
    try:
        folders = sorted((run_dir / "eval").iterdir())
    except OSError:  # no eval/ folder, or the run went away meanwhile
        return []
    return [j for j in folders if j.is_dir() and (j / "status.json").exists()]
