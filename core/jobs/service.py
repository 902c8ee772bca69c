"""What a person does to runs, for both interfaces: stop, cancel, move, delete.

The CLI (``simclr stop``, ``simclr queue cancel|move``) and the TUI (x, [ ], d) call these
and only render what they return; the rules (which state may be stopped or deleted, the
queue's lock, a Slurm job's own stop) live here, once. Plain Python, no torch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from core.errors import QueueError, UsageError
from core.jobs import queue
from core.jobs.launch import current_state, stop as stop_job
from core.runs import LIVE_STATES, job_result_path, list_jobs
from core.runs.listing import is_job_dir


def stop(job_dir: Path, kill: bool = False) -> str:
    """Stop a run or evaluation job, local or Slurm (core.jobs.launch.stop): it checkpoints and
    stops; ``kill`` ends it now. Returns what was done."""
    return stop_job(Path(job_dir), kill=kill)


def cancel(runs_dir: Path, names: list[str]) -> tuple[list[str], list[str]]:
    """Take queued runs (or a sweep's queued runs) out of the queue. A model-based sweep named
    also stops proposing settings (its plan says so, under the sweep folder's lock, so a
    proposal under way finishes first and none follows). Unknown names are refused before
    anything changes. Returns (the runs cancelled, the sweeps that stopped proposing)."""
    from core.jobs.plan import read_plan, sweep_dir, write_plan
    from core.jobs.propose import JOURNAL
    from core.runs import folder_lock

    proposing = [n for n in names if (p := read_plan(runs_dir, n)) and p.get("sampler") == "tpe"
                 and not p.get("stopped")]
    entries = queue.queued(runs_dir)
    waiting = {e.run for e in entries} | {e.sweep for e in entries if e.sweep}
    rest = [n for n in names if n not in proposing or n in waiting]
    cancelled = queue.cancel(runs_dir, rest) if rest else []  # raises, changing nothing, on an unknown name
    for name in proposing:
        with folder_lock(sweep_dir(runs_dir, name) / JOURNAL):
            write_plan(runs_dir, name, {**(read_plan(runs_dir, name) or {}), "stopped": "cancelled (simclr queue cancel)"})
    return cancelled, proposing


def move(runs_dir: Path, name: str, where: str) -> int:
    """Move a queued run up/down/top/bottom or to a position; returns its new position."""
    return queue.move(runs_dir, name, where)


def delete(runs_dir: Path, key: str) -> None:
    """Delete a run (``NAME``) or an evaluation job (``NAME/eval/JOB``) with all its files.

    A queued run is cancelled under the queue's lock (no worker starts it meanwhile); a run
    that is live, or one of whose jobs is live, or a Slurm job still waiting, is refused with
    what to do; a path outside the runs directory is refused.
    """
    root = Path(runs_dir).resolve()
    path = (root / key).resolve()
    if root not in path.parents:
        raise UsageError(f"refusing to delete {path}: it is not inside {root}")
    if not path.exists():
        return  # another TUI or a shell deleted it
    job = is_job_dir(path)
    state, _, status = current_state(path)
    if state == "queued" and status.get("launcher") != "slurm" and not job:
        queue.cancel(root, [path.name])  # under the queue's lock: no worker starts it meanwhile
        return
    with queue.queue_lock(root):  # no worker starts one of the run's --then jobs meanwhile
        state = current_state(path)[0]
        busy = [key] if state in LIVE_STATES or state == "queued" else []
        if not job:
            busy += [f"{path.name}/eval/{j.name}" for j in list_jobs(path) if current_state(j)[0] in LIVE_STATES]
        if busy:
            raise QueueError(f"stop {', '.join(busy)} before deleting (`simclr stop --run-dir ...`; "
                             f"a Slurm job that waits is cancelled)")
        try:
            shutil.rmtree(path)
        except FileNotFoundError:  # deleted meanwhile by someone else
            if path.exists():
                shutil.rmtree(path)
        if job:  # an evaluation job: its result file sits next to its folder
            job_result_path(path).unlink(missing_ok=True)
