"""A run's states, and the one place that decides which state a reader shows.

The states::

    queued    waits to start: in the local queue (queue.json) or in Slurm (slurm_job_id)
    starting  its runner is setting up (data, model; a resume loads last.pt)
    running   training (or evaluating), heartbeat at least every 10 s
    finished  done; checkpoints/last.pt is the final model
    stopped   stopped by a person (SIGTERM, simclr stop, x) or a time budget; resumable
    pruned    stopped at a rung by its sweep's pruning rule (core.jobs.prune), with a
              checkpoint; its --then jobs do not run; resumable like a stopped run
    failed    ended with an error it wrote (status.json "error"), or never started
    crashed   read, never written: a live state whose writer is gone (its pid is dead or
              reused, its heartbeat is stale, or Slurm ended its job without its word)
    damaged   read, never written: status.json missing, unreadable or of the wrong types

Who writes which state (every write goes through core.runs.status.update_status):

    from                    to        written by
    (none)                  queued    the queue (enqueue), the Slurm launcher (submit)
    queued, stopped,        starting  the runner (StatusFile), on start or resume
      pruned, crashed, failed
    starting                running   the runner, when its first step begins
    starting, running       finished  the runner
    starting, running       stopped   the runner (a stop), or its stop watcher at the last checkpoint
    starting, running       pruned    the runner, when its sweep's rule stops it at a rung
    starting, running       failed    the runner (an error it caught)
    queued                  failed    the queue worker: the launched runner ended before it wrote
    queued                  stopped   simclr stop: a Slurm job cancelled while waiting;
                                      the Slurm job's shell: stopped before the runner began
    starting, running       queued    the Slurm job's shell: a restart from step 0

What a reader sees (:func:`decide`), from the run directory first, then the queue's launch
record, then Slurm's word:

    written                 evidence                                   shown
    missing/unknown state   -                                          damaged
    queued                  a launch record whose process lives        starting
    starting, running       local writer's pid dead or reused          crashed
    starting, running       heartbeat older than STALE_AFTER           crashed
                            (another host, or a Slurm job)
    starting, running       heartbeat not a number (and needed)        damaged
    + Slurm's word on the run's job: see :func:`_slurm` (waiting -> queued, running ->
      starting, ended without the runner's word -> crashed or failed, requeued -> queued)

Plain Python, no torch.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol

from core import process
from core.runs.status import WRITTEN_STATES, Status

STATES = WRITTEN_STATES
SHOWN_STATES = (*STATES, "crashed", "damaged")
#: states in which the writing process is expected to be alive
LIVE_STATES = ("starting", "running")
#: a live run whose heartbeat is older than this (seconds) on another host is shown as crashed
STALE_AFTER = 120.0
#: a Slurm job no longer known to Slurm, whose heartbeat is older than this, ended unseen
SLURM_FORGOT_AFTER = 60.0

#: what Slurm's end states mean for a run whose runner never said how it ended
SLURM_ENDED_WHY = {
    "CANCELLED": "cancelled (scancel, or a signal such as KILL)", "TIMEOUT": "time limit reached",
    "NODE_FAIL": "node failure", "OUT_OF_MEMORY": "out of memory", "FAILED": "the job failed",
    "PREEMPTED": "preempted", "BOOT_FAIL": "node boot failure", "DEADLINE": "deadline reached",
    "COMPLETED": "the job ended", "SPECIAL_EXIT": "special exit", "REVOKED": "revoked",
}


class SlurmWord(Protocol):
    """Slurm's answer on one job (core.jobs.slurm.JobInfo)."""

    job_id: str
    state: str
    reason: str | None
    nodes: str | None
    start: float | None
    waiting: bool
    running: bool
    ended: bool


@dataclass(frozen=True)
class Reading:
    """The state a reader shows, and why (None when the state speaks for itself)."""

    state: str
    reason: str | None = None


def decide(status: Status | None, *, launch: dict[str, Any] | None = None, slurm: SlurmWord | None = None,
           asked_slurm: bool = False, now: float | None = None) -> Reading:
    """The state to show for one run or job.

    ``launch``: its queue.json launch record (a queued run the worker started);
    ``asked_slurm``: Slurm was asked about the run's job, and ``slurm`` is its answer (None:
    Slurm no longer knows the job). Without ``asked_slurm`` the run directory's word stands.
    """
    if status is None or status.state not in STATES:
        return Reading("damaged", "status.json is missing or unreadable" if status is None else
                       f"status.json has no known state ({status.raw.get('state')!r})")
    now = time.time() if now is None else now
    base = _local(status, launch, now)
    if asked_slurm and status.slurm_job is not None:
        return _slurm(status, base, slurm, now)
    return base


def _local(status: Status, launch: dict[str, Any] | None, now: float) -> Reading:
    state = status.state
    if state == "queued":
        if launch_alive(launch):
            return Reading("starting", f"started by the queue worker (pid {launch['pid']})")
        return Reading(state)
    if state not in LIVE_STATES:
        return Reading(state)
    if status.host == socket.gethostname() and status.launcher != "slurm":
        # a Slurm job's pid says nothing here (another host, or a job Slurm may requeue): the
        # heartbeat, and Slurm's own word, decide
        alive = process.alive(status.pid, status.start_time)
        if alive is False:
            return Reading("crashed", "its process is gone")
        if alive is True:
            return Reading(state)
    if "heartbeat" in status.bad:
        return Reading("damaged", "status.json's heartbeat is not a number")
    if now - (status.heartbeat or 0.0) > STALE_AFTER:
        return Reading("crashed", f"no heartbeat for over {STALE_AFTER:.0f} s")
    return Reading(state)


def launch_alive(launch: Any) -> bool:
    """A queue.json launch record whose process lives (or cannot be told dead from here)."""
    if not isinstance(launch, dict) or not isinstance(launch.get("pid"), int):
        return False
    if launch.get("host") not in (None, socket.gethostname()):
        return True  # another host's worker: its word stands until it settles the launch
    return process.alive(launch["pid"], launch.get("start_time")) is not False


def _slurm(status: Status, base: Reading, job: SlurmWord | None, now: float) -> Reading:
    """A Slurm run: the run directory first, Slurm's word on its job second, never a local pid.

    * queued (written at submit): Slurm waiting -> queued (with the pending reason); running
      -> starting; ended -> failed ("did not start") or, when cancelled, stopped.
    * the runner's live state: Slurm running -> that state; waiting (requeued) -> queued;
      ended -> crashed with Slurm's reason (the runner never said how it ended).
    * the runner's final state (finished, failed, stopped) stands, except that a job Slurm
      runs or holds again (requeued after a time-limit stop or preemption) reads as queued
      or starting: it resumes from last.pt.
    """
    written, beat = status.state, status.heartbeat or 0.0
    if job is None:
        if written in ("queued", *LIVE_STATES) and now - beat > SLURM_FORGOT_AFTER:
            return Reading("crashed" if written in LIVE_STATES else "failed",
                           f"Slurm no longer knows job {status.slurm_job_id} and the runner did not say how it ended")
        return Reading(base.state)
    waiting_why = f"Slurm: {job.state.lower()}" + (f" ({job.reason})" if job.reason else "")
    if written == "queued":
        if job.waiting and job.reason == "DependencyNeverSatisfied":  # an afterok job of a run that did not finish
            return Reading("queued", "Slurm: the job it follows did not finish, so this never starts; stop it "
                                     "(simclr stop / x) and submit it again once the run has finished")
        if job.waiting:
            return Reading("queued", waiting_why)
        if job.running:
            return Reading("starting", f"Slurm: running on {job.nodes}" if job.nodes else None)
        if job.state == "CANCELLED":
            return Reading("stopped", "cancelled in Slurm before it started")
        why = SLURM_ENDED_WHY.get(job.state, job.state.lower())
        return Reading("failed", f"did not start: Slurm says {job.state} ({why}); see stdout.log")
    if written in LIVE_STATES:
        if job.running:
            return Reading(base.state if base.state != "crashed" else written)  # Slurm runs it: the heartbeat is no proof
        if job.waiting:
            return Reading("queued", f"requeued; resumes from checkpoints/last.pt ({waiting_why})")
        why = SLURM_ENDED_WHY.get(job.state, job.state.lower())
        return Reading("crashed", f"Slurm ended job {job.job_id} without the runner's word: {job.state} ({why})")
    # the runner's final word: stands unless Slurm (re)started or holds the job after it
    if job.waiting and written == "stopped":
        return Reading("queued", f"requeued after the stop; resumes from checkpoints/last.pt ({waiting_why})")
    if job.running and job.start is not None and job.start > beat + 1:
        return Reading("starting", "requeued: the job runs again and resumes from checkpoints/last.pt")
    return Reading(base.state)


def effective_state(status: dict[str, Any] | Status | None, now: float | None = None) -> str:
    """The state a reader shows from status.json alone (no queue record, no Slurm)."""
    if isinstance(status, dict):
        status = Status.from_dict(status)
    return decide(status, now=now).state
