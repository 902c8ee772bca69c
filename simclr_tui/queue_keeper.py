"""Keeping the run queue served: a queue worker is started when queued work waits and none lives.

`QueueKeeper.check()` runs in the poll thread, at most every `every` seconds (or at the next
poll after `request()`: a run was queued, cancelled or moved). All the queue logic is
`core.jobs.worker`'s: `worker_info` says whether a worker holds the queue's lock, `ensure_worker`
starts `simclr queue work` in its own session when there is work and no worker. The worker
outlives the TUI, like every run it starts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from core.jobs.queue import QUEUE_DIR
from core.jobs.worker import ensure_worker, worker_info

#: a worker just started has this long to take the queue's lock before another is started
START_GRACE = 15.0


@dataclass(frozen=True)
class WorkerStatus:
    """The queue worker as the last check saw it."""

    pid: int | None = None  # the live worker (or the one just started)
    slots: int | None = None
    starting: bool = False  # started by this TUI, not yet holding the lock
    error: str | None = None  # starting one failed: why

    def text(self) -> str:
        """``worker pid 123 (1 slot)``, ``starting worker pid 123``, ``no worker``."""
        if self.error:
            return f"worker failed to start: {self.error}"
        if self.pid is None:
            return "no worker"
        if self.starting:
            return f"starting worker pid {self.pid}"
        return f"worker pid {self.pid}" + (f" ({self.slots} slot{'s' * (self.slots != 1)})" if self.slots else "")


class QueueKeeper:
    """Called from the poll thread only (one poll at a time), so it needs no lock."""

    def __init__(self, runs_dir: str | Path, *, job_runner: list[str] | None = None, start: bool = True,
                 every: float = 3.0) -> None:
        self.runs_dir = Path(runs_dir)
        self.job_runner = job_runner  # what the worker starts runs with (None: python -m core)
        self.start = start
        self.every = every
        self.status: WorkerStatus | None = None
        self._due = 0.0
        self._started: tuple[int, float] | None = None  # (pid, when) of the worker this TUI started last
        self._children: set[int] = set()  # workers this TUI started, reaped once they end

    def request(self) -> None:
        """Check at the next poll (the queue was just changed)."""
        self._due = 0.0

    def check(self, now: float | None = None) -> WorkerStatus | None:
        """The worker's status, starting one if needed; None when the runs dir has no queue."""
        now = time.monotonic() if now is None else now
        self._reap()
        if now < self._due:
            return self.status
        self._due = now + self.every
        self.status = self._check(now)
        return self.status

    def _check(self, now: float) -> WorkerStatus | None:
        if not (self.runs_dir / QUEUE_DIR).is_dir():  # nothing was ever queued here
            return None
        info = worker_info(self.runs_dir)
        if info is not None:
            self._started = None
            slots = info.get("slots")
            return WorkerStatus(info.get("pid"), slots if isinstance(slots, int) else None)
        if self._starting(now):
            return WorkerStatus(self._started[0], starting=True)
        if not self.start:
            return WorkerStatus()
        try:
            pid = ensure_worker(self.runs_dir, job_runner=self.job_runner)
        except OSError as e:
            return WorkerStatus(error=str(e.strerror or e))
        if pid is None:  # no work
            return WorkerStatus()
        self._started = (pid, now)
        self._children.add(pid)
        return WorkerStatus(pid, starting=True)

    def _starting(self, now: float) -> bool:
        """The worker this TUI started last is alive and within its grace period."""
        if self._started is None:
            return False
        pid, when = self._started
        if pid not in self._children or now - when > START_GRACE:
            self._started = None
            return False
        return True

    def _reap(self) -> None:
        """Collect the workers this TUI started that ended (else they linger as zombies)."""
        for pid in list(self._children):
            try:
                ended = os.waitpid(pid, os.WNOHANG)[0] == pid
            except ChildProcessError:  # reaped already (by subprocess's own clean-up)
                ended = True
            if ended:
                self._children.discard(pid)
