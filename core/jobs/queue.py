"""The run queue: queued run directories on disk, and the worker that starts them.

Plain Python (no torch), so ``simclr queue ...``, ``simclr sweep`` and the TUI start fast.

* A queued run is an ordinary run directory in state ``queued`` (status.json) with its
  resolved ``config.json`` and a ``queue.json``: its ``order`` (place in the queue), the
  ``--then`` evaluation jobs to run after it finishes, and, once a worker started it, the
  ``launch`` (pid, start time, GPU). Nothing else holds queue state, so every reader (the
  CLI, the TUI, a restarted worker) sees the same queue.
* ``runs/.queue/`` holds the worker's lock (``worker.lock``, held for the worker's life),
  ``worker.json`` (who holds it), the short lock every change to the queue takes
  (``lock``), ``settings.json`` (slots) and ``worker.log`` (the output of a worker started in
  the background).
* The worker (``simclr queue work``, core.jobs.worker) starts queued runs and pending ``--then`` jobs while
  fewer than ``slots`` runs and jobs live on this host in the runs directory (started by it,
  by an earlier worker, by the TUI or by hand), and exits when nothing is left to start,
  no run it could still follow with a job is alive, and the runs it started have ended.
  Each run goes into its own session: SIGKILL the worker and they keep running, and a new
  worker counts them.
* A launch is recorded in queue.json (under the queue lock) as soon as the child exists;
  a queued run with a launch is never started again. One that ended before its runner
  wrote status.json (the runner refused its config or data, exit 2) is marked ``failed``
  with the runner's own one-line error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from core.config import PretrainConfig
from core.errors import QueueError
from core.runs import (
    RunInfo,
    atomic_write_json,
    eval_dataset_tag,
    eval_job_name,
    iter_runs,
    queued_record,
    read_json,
    read_run,
    read_sweep,
    update_status,
)

try:
    import fcntl
except ImportError:  # not POSIX: no locks, one worker assumed
    fcntl = None

QUEUE_DIR = ".queue"
THEN_COMMANDS = ("linear-eval", "knn", "finetune")
_JOB_KINDS = {"linear-eval": "linear", "knn": "knn", "finetune": "finetune"}


# ---------------------------------------------------------------------- files and locks
def queue_dir(runs_dir: str | Path) -> Path:
    path = Path(runs_dir) / QUEUE_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def queue_lock(runs_dir: str | Path) -> Iterator[None]:
    """Held around every read-modify-write of the queue (enqueue, cancel, move, start)."""
    if fcntl is None:
        yield
        return
    fd = os.open(queue_dir(runs_dir) / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_queue_file(run_dir: Path) -> dict[str, Any] | None:
    return valid_queue_file(read_json(run_dir / "queue.json"))


def valid_queue_file(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """A queue.json as read, or None when it is absent or its ``then`` is not a list."""
    return data if data is not None and isinstance(data.get("then", []), list) else None


def _order(q: dict[str, Any]) -> float:
    value = q.get("order")
    return float(value) if isinstance(value, (int, float)) else float("inf")


def settings(runs_dir: str | Path) -> dict[str, Any]:
    return read_json(Path(runs_dir) / QUEUE_DIR / "settings.json") or {}


def set_slots(runs_dir: str | Path, slots: int) -> None:
    if slots < 1:
        raise QueueError(f"--slots must be at least 1 (got {slots})")
    atomic_write_json(queue_dir(runs_dir) / "settings.json", {**settings(runs_dir), "slots": slots})


# ---------------------------------------------------------------------- what is queued
@dataclass
class Entry:
    """One queued run or pending ``--then`` job, in queue order."""

    run: str          # the run directory's name
    path: Path
    order: float
    sweep: str | None = None
    then_index: int | None = None  # the job's place in queue.json's "then"
    argv: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.run if self.then_index is None else f"{self.run}/eval/{job_name(self.argv, self.path)}"


def job_name(argv: list[str], run_dir: Path) -> str:
    """The eval job folder a ``--then`` job will write (``knn-last``, ``finetune-0.1-last``)."""
    opts = _options(argv[1:])
    own = read_json(run_dir / "config.json") or {}
    tag = None
    if opts.get("--dataset") or opts.get("--data-dir"):
        tag = eval_dataset_tag(str(own.get("dataset", "")), str(own.get("data_dir", "")),
                               opts.get("--dataset"), opts.get("--data-dir"))
    fraction = float(opts["--label-fraction"]) if "--label-fraction" in opts else None
    return eval_job_name(_JOB_KINDS[argv[0]], opts.get("--checkpoint", "last"), tag, fraction)


def _options(args: list[str]) -> dict[str, str]:
    out, i = {}, 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" in a:
            k, v = a.split("=", 1)
            out[k] = v
        elif a.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[a] = args[i + 1]
            i += 1
        i += 1
    return out


class Listing:
    """The runs of a runs directory with their queue.json, read once: what the worker, the
    CLI and the TUI pass around instead of listing the directory again."""

    def __init__(self, runs_dir: str | Path, runs: Iterable[RunInfo] | None = None) -> None:
        self.runs_dir = Path(runs_dir)
        self.all = list(iter_runs(runs_dir, jobs=True) if runs is None else runs)
        self.runs = [r for r in self.all if not r.is_job]  # the top-level runs, without evaluation jobs
        self.files = {r.path: valid_queue_file(r.queue) for r in self.runs}  # read once, by iter_runs


def _listing(runs_dir: str | Path, listing: Listing | None) -> Listing:
    return listing if listing is not None else Listing(runs_dir)


def queued(runs_dir: str | Path, listing: Listing | None = None) -> list[Entry]:
    """Queued runs not yet started, in queue order (position = index + 1)."""
    listing = _listing(runs_dir, listing)
    entries = []
    for run in listing.runs:
        q = listing.files.get(run.path)
        if q is not None and run.state == "queued" and not q.get("launch"):
            sweep = read_sweep(run.path)
            entries.append(Entry(run.name, run.path, _order(q), sweep["sweep"] if sweep else None))
    return sorted(entries, key=lambda e: (e.order, e.run))


def positions(runs_dir: str | Path, listing: Listing | None = None) -> dict[str, int]:
    """Run name -> its 1-based place in the queue."""
    return {e.run: i + 1 for i, e in enumerate(queued(runs_dir, listing))}


def pending_jobs(runs_dir: str | Path, listing: Listing | None = None) -> list[tuple[Entry, str]]:
    """``--then`` jobs not started yet, each with its run's state."""
    listing = _listing(runs_dir, listing)
    out = []
    for run in listing.runs:
        q = listing.files.get(run.path)
        for i, then in enumerate((q or {}).get("then", [])):
            if isinstance(then, dict) and then.get("state") == "pending" and _valid_then(then.get("argv")):
                out.append((Entry(run.name, run.path, _order(q), None, i, list(then["argv"])),
                            run.state))
    return sorted(out, key=lambda es: (es[0].order, es[0].run, es[0].then_index))


def _valid_then(argv: Any) -> bool:
    return isinstance(argv, list) and bool(argv) and argv[0] in THEN_COMMANDS and all(isinstance(a, str) for a in argv)


# ---------------------------------------------------------------------- changing the queue
def enqueue(runs_dir: str | Path, run_dir: Path, cfg: PretrainConfig, then: list[list[str]] | None = None,
            sweep: dict[str, Any] | None = None) -> None:
    """Make ``run_dir`` a queued run at the end of the queue. Call under :func:`queue_lock`
    (several runs of a sweep go in under one hold, so they stay together)."""
    files = Listing(runs_dir).files.values()
    order = max((_order(q) for q in files if q and _order(q) != float("inf")), default=0.0) + 1
    run_dir.mkdir(parents=True, exist_ok=True)
    # a queued run starts wherever its worker runs: a data folder relative to here would move
    cfg = cfg.replace(data_dir=str(Path(cfg.data_dir).expanduser().absolute()))
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    if sweep is not None:
        atomic_write_json(run_dir / "sweep.json", sweep)
    atomic_write_json(run_dir / "queue.json", {
        "order": order, "queued_at": time.time(), "launch": None,
        "then": [{"argv": list(a), "state": "pending"} for a in (then or [])]})
    record = queued_record("pretrain", total_epochs=cfg.epochs)
    update_status(run_dir / "status.json", lambda _: record)


def _select(runs_dir: str | Path, names: list[str]) -> list[Entry]:
    """Queued runs named (or every queued run of a sweep named); unknown names are an error."""
    entries = queued(runs_dir)
    picked, missing = [], []
    for name in names:
        hits = [e for e in entries if e.run == name or e.sweep == name]
        if not hits:
            run = read_run(Path(runs_dir) / name) if (Path(runs_dir) / name).is_dir() else None
            if run and (run.status or {}).get("launcher") == "slurm":
                missing.append(f"{name} (a Slurm job: `simclr stop --run-dir {run.path}` cancels or stops it)")
            else:
                missing.append(f"{name} ({run.state}; stop a live run with `simclr stop --run-dir {run.path}`)"
                               if run else f"{name} (no such run or sweep)")
        picked += [h for h in hits if h not in picked]
    if missing:
        raise QueueError(f"not queued: {', '.join(missing)}; `simclr queue` lists the queue")
    return picked


def cancel(runs_dir: str | Path, names: list[str]) -> list[str]:
    """Take queued runs out of the queue: their directories (config, status, sweep and queue
    files only; nothing ever ran there) are removed. Returns the names cancelled."""
    with queue_lock(runs_dir):
        picked = _select(runs_dir, names)
        for e in picked:
            shutil.rmtree(e.path)
    return [e.run for e in picked]


def move(runs_dir: str | Path, name: str, where: str) -> int:
    """Move a queued run ``up``, ``down``, to the ``top``/``bottom``, or to position N.
    Returns its new position."""
    with queue_lock(runs_dir):
        entries = queued(runs_dir)
        if name in {e.sweep for e in entries} and name not in {e.run for e in entries}:
            raise QueueError(f"{name} is a sweep; move its runs one by one (`simclr queue` lists them)")
        i = entries.index(_select(runs_dir, [name])[0])
        targets = {"up": i - 1, "down": i + 1, "top": 0, "bottom": len(entries) - 1}
        if where in targets:
            j = targets[where]
        elif where.isdigit() and int(where) >= 1:
            j = int(where) - 1
        else:
            raise QueueError(f"move {name} where? up, down, top, bottom or a position 1-{len(entries)} (got {where!r})")
        j = min(max(j, 0), len(entries) - 1)
        entries.insert(j, entries.pop(i))
        for k, e in enumerate(entries, start=1):  # renumber: orders stay small and distinct
            q = read_queue_file(e.path)
            if q is not None and q.get("order") != k:
                atomic_write_json(e.path / "queue.json", {**q, "order": k})
    return j + 1
