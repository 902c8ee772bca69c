"""status.json: one typed record, and the one way it is changed.

Several processes write a run's (or evaluation job's) status.json: the runner (its state,
progress and heartbeat, at least every 10 s), the queue worker (a run that failed to
start), a Slurm job's batch shell (a stop before the first checkpoint, a restart from step
0), ``simclr stop`` (a Slurm job cancelled while waiting) and the submitters (``queued``).
Every change goes through :func:`update_status`: it takes the run folder's lock, re-reads
the file, applies the change and replaces the file, so the runner's heartbeat never
overwrites a field another process has just set. Readers get a :class:`Status` with typed
values (a value of the wrong type reads as absent and is named in ``bad``), never a raw
dict to guard.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from core import process
from core.runs.files import atomic_write_json, folder_lock, number, read_json

#: the states a writer may record (a reader may also see ``crashed`` and ``damaged``: core.runs.state)
WRITTEN_STATES = ("queued", "starting", "running", "finished", "failed", "stopped", "pruned")
#: a writer that is ending waits this long for the folder lock, then writes anyway
FINAL_LOCK_WAIT = 5.0


def _int(v: Any) -> int | None:
    return v if isinstance(number(v), int) else None


def _num(v: Any) -> float | None:
    return None if (n := number(v)) is None else float(n)


def _time(v: Any) -> float | None:
    """A time in seconds; numeric text (an older or hand-written file) is read as a number."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return _num(v)


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _job_id(v: Any) -> str | None:
    return str(v) if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v).isdigit() else None


_TYPES: dict[str, Callable[[Any], Any]] = {
    "kind": _str, "state": _str, "pid": _int, "pgid": _int, "start_time": _int, "host": _str,
    "created": _time, "heartbeat": _time, "epoch": _num, "step": _int, "total_steps": _int,
    "total_epochs": _num, "error": _str, "note": _str, "phase": _str, "launcher": _str,
    "slurm_job_id": _job_id, "slurm_restarts": _int, "parent": _str, "checkpoint": _str,
    "images_per_sec": _num, "health": _str, "health_reason": _str,
}


@dataclass(frozen=True)
class Status:
    """A status.json as typed values; ``raw`` is the file as read, ``bad`` the fields whose
    values had the wrong type (they read as None)."""

    kind: str | None = None
    state: str | None = None
    pid: int | None = None
    pgid: int | None = None
    start_time: int | None = None
    host: str | None = None
    created: float | None = None
    heartbeat: float | None = None
    epoch: float | None = None
    step: int | None = None
    total_steps: int | None = None
    total_epochs: float | None = None
    error: str | None = None
    note: str | None = None
    phase: str | None = None
    launcher: str | None = None
    slurm_job_id: str | None = None
    slurm_restarts: int | None = None
    parent: str | None = None
    checkpoint: str | None = None
    images_per_sec: float | None = None
    health: str | None = None          # pretraining: ok, collapsed, not learning, diverged (core.training.health)
    health_reason: str | None = None   # the verdict's one line
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    bad: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Status:
        values, bad = {}, []
        for name, cast in _TYPES.items():
            if data.get(name) is None:
                continue
            values[name] = cast(data[name])
            if values[name] is None:
                bad.append(name)
        return cls(**values, raw=dict(data), bad=tuple(bad))

    @property
    def slurm_job(self) -> str | None:
        """The Slurm job of a run our Slurm launcher submitted (None for local runs)."""
        return self.slurm_job_id if self.launcher == "slurm" else None


assert {f.name for f in fields(Status)} == set(_TYPES) | {"raw", "bad"}


def read_status(path: str | Path) -> Status | None:
    """The status.json at ``path`` (a file, or a run/job directory), or None when it is
    missing or unreadable."""
    path = Path(path)
    data = read_json(path / "status.json" if path.is_dir() else path)
    return None if data is None else Status.from_dict(data)


def update_status(path: str | Path, change: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                  *, lock_wait: float | None = None, **fields: Any) -> dict[str, Any]:
    """Change status.json under the run folder's lock: re-read it, set ``fields`` (and apply
    ``change``, a function of the current record returning the new one), replace the file.
    Returns the record written. ``lock_wait``: give up waiting for the lock after that many
    seconds and write anyway (a process's last word while it ends).
    """
    path = Path(path)
    with folder_lock(path, timeout=lock_wait):
        current = read_json(path)
        record = {**(current or {}), **fields}
        if change is not None:
            record = change(record)
        atomic_write_json(path, record)
        return record


def process_fields() -> dict[str, Any]:
    """Who writes: this process's pid, process group, start time, host, and batch job."""
    pid = os.getpid()
    return {"pid": pid, "pgid": os.getpgid(pid), "start_time": process.start_time(pid), "host": socket.gethostname(),
            **process.scheduler_fields()}


def queued_record(kind: str = "pretrain", **fields: Any) -> dict[str, Any]:
    """The status of a run or job that waits to start (the queue, or Slurm)."""
    now = time.time()
    return {"kind": kind, "state": "queued", "pid": None, "host": socket.gethostname(), "created": now,
            "heartbeat": now, "epoch": 0, "step": 0, "total_steps": None, "error": None, **fields}


class StatusFile:
    """The status.json a runner or evaluation job writes about itself while it runs.

    The first write replaces the file whole (this process takes the run over); every later
    one changes only the fields this process set since (plus the heartbeat), through
    :func:`update_status`, at once or, with ``force=False``, at most every 10 s.
    """

    def __init__(self, path: str | Path, kind: str = "pretrain", **fields: Any) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {
            "kind": kind, "state": "starting", **process_fields(), "created": time.time(),
            "heartbeat": time.time(), "epoch": 0, "step": 0, "total_steps": None, "error": None, **fields,
        }
        self._changed: dict[str, Any] | None = None  # None: nothing written yet, the first write is whole
        self._last_write = 0.0
        self._lock = threading.Lock()  # the stop watcher (core.training.stopping) writes from its own thread
        self._final = False

    def update(self, force: bool = True, **fields: Any) -> None:
        """Merge fields and write; with force=False only if 10 s passed since the last write.
        After :meth:`final` nothing changes any more."""
        with self._lock:
            if self._final:
                return
            self._write(force, fields)

    def final(self, **fields: Any) -> None:
        """The last word, from another thread while this process ends: written even if the
        main thread is stuck holding the lock (after 5 s), and never overwritten after."""
        got = self._lock.acquire(timeout=FINAL_LOCK_WAIT)
        try:
            self._final = True
            self._write(True, fields, lock_wait=FINAL_LOCK_WAIT)
        finally:
            if got:
                self._lock.release()

    def _write(self, force: bool, fields: dict[str, Any], lock_wait: float | None = None) -> None:
        self.data.update(fields)
        if self._changed is not None:
            self._changed.update(fields)
        now = time.time()
        if not (force or now - self._last_write >= 10.0):
            return
        self.data["heartbeat"] = now
        if self._changed is None:
            whole = dict(self.data)
            update_status(self.path, lambda _: whole, lock_wait=lock_wait)
        else:
            # a file someone deleted or broke meanwhile gets this process's whole record back
            update_status(self.path, lambda rec: rec if "state" in rec else {**self.data, **rec},
                          lock_wait=lock_wait, **self._changed, heartbeat=now)
        self._changed = {}
        self._last_write = now
