"""Slurm's word on the runs a Slurm launcher submitted, asked at most every few seconds.

The store's poll thread calls `SlurmWatch.latest(job_ids)` every poll; it never waits on
Slurm. When the answer is older than `interval` (or a job id it has not asked about
appears, at most once a second) it starts one `core.jobs.slurm.query` in a thread of its own
(`squeue --states=all`, with `sacct` where the cluster keeps accounting) and returns the
last answer meanwhile. With no Slurm runs nothing is asked at all, so a machine without
Slurm never runs `squeue`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.jobs.slurm import JobInfo, SlurmError, query

#: seconds between two questions to Slurm (the issue: at most every few seconds)
INTERVAL = 5.0
#: the soonest a job id never asked about is asked after the previous question
NEW_JOB_GAP = 1.0


@dataclass(frozen=True)
class SlurmAnswer:
    """What Slurm said about the jobs it was asked about (``asked``)."""

    jobs: dict[str, JobInfo] = field(default_factory=dict)
    asked: frozenset[str] = frozenset()
    error: str | None = None  # Slurm could not be asked: the run directories' word stands

    def knows(self, job_id: str) -> bool:
        """Slurm was asked about this job and answered (an absent job then means Slurm forgot it)."""
        return self.error is None and job_id in self.asked


class SlurmWatch:
    def __init__(self, interval: float = INTERVAL, ask: Callable[[list[str]], dict[str, JobInfo]] | None = None) -> None:
        self.interval = interval
        self._ask = ask
        self._answer = SlurmAnswer()
        self._lock = threading.Lock()
        self._busy = False
        self._started = float("-inf")  # when the last question was started (monotonic)

    def latest(self, job_ids: set[str] | frozenset[str]) -> SlurmAnswer:
        """The last answer; starts a new question in the background when one is due."""
        if not job_ids:
            return SlurmAnswer()
        now = time.monotonic()
        with self._lock:
            answer = self._answer
            due = now - self._started >= self.interval or (
                not set(job_ids) <= answer.asked and now - self._started >= NEW_JOB_GAP)
            if due and not self._busy:
                self._busy, self._started = True, now
                threading.Thread(target=self._question, args=(sorted(job_ids),), daemon=True,
                                 name="slurm-query").start()
        return answer

    def refresh(self) -> None:
        """Ask at the next `latest` (after a stop, so the table follows it at once)."""
        with self._lock:
            self._started = float("-inf")

    def _question(self, job_ids: list[str]) -> None:  # its own thread
        try:
            jobs = self._ask(job_ids) if self._ask else query(job_ids)
            answer = SlurmAnswer(jobs, frozenset(job_ids))
        except SlurmError as e:
            answer = SlurmAnswer(self._answer.jobs, self._answer.asked, str(e))
        except Exception as e:  # noqa: BLE001 - whatever squeue printed, the TUI keeps running
            answer = SlurmAnswer(self._answer.jobs, self._answer.asked, f"{type(e).__name__}: {e}")
        with self._lock:
            self._answer, self._busy = answer, False

    def wait_idle(self, timeout: float = 10.0) -> SlurmAnswer:
        """The answer once no question is in flight (for tests)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if not self._busy:
                    return self._answer
            time.sleep(0.02)
        return self._answer
