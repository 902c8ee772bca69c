"""The queue's worker (``simclr queue work``): starts queued runs and their ``--then`` jobs
into free slots, one GPU each, and exits when nothing is left to start or settle.

Plain Python (no torch). Each tick reads the runs directory once (a :class:`Listing`),
settles launches that ended, counts the live runs and jobs on this host (started by it, by
an earlier worker, by the TUI or by hand) and starts work while slots are free: ``--then``
jobs of finished runs first (short, and they complete a result), then queued runs in order.
Each start goes into its own session (SIGKILL the worker and its runs keep running; a new
worker counts them) and is recorded in queue.json under the queue lock as soon as the child
exists, so a queued run with a launch is never started twice. A run whose process ended
before its runner wrote status.json, or that could not be started at all, is ``failed``
with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core import process
from core.config import PretrainConfig
from core.errors import ConfigError, one_line
from core.jobs.plan import read_plan, sweep_names, to_come
from core.jobs.queue import (
    QUEUE_DIR,
    Entry,
    Listing,
    job_name,
    pending_jobs,
    queue_dir,
    queue_lock,
    queued,
    read_queue_file,
    settings,
)
from core.runs import LIVE_STATES, atomic_write_json, read_json, update_status
from core.runs.output import say
from core.runs.state import launch_alive

try:
    import fcntl
except ImportError:  # not POSIX: no locks, one worker assumed
    fcntl = None


# ---------------------------------------------------------------------- GPUs and slots
def visible_gpus() -> list[str]:
    """The GPUs runs may use, without importing torch: CUDA_VISIBLE_DEVICES if set, else the
    NVIDIA driver's list (/proc/driver/nvidia/gpus). Empty on a CPU machine."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    except OSError:
        return []


def default_slots(runs_dir: str | Path) -> int:
    """settings.json's slots (from --slots), else one per visible GPU, else 1."""
    s = settings(runs_dir).get("slots")
    return s if isinstance(s, int) and s >= 1 else max(1, len(visible_gpus()))


# ---------------------------------------------------------------------- starting one
def default_runner() -> list[str]:
    return [sys.executable, "-m", "core"]


def child_env(gpu: str | None = None) -> dict[str, str]:
    """The environment of a started run: unbuffered output, this ``core`` importable, and its
    own GPU when the worker hands them out."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


# ---------------------------------------------------------------------- is a worker needed
def worker_info(runs_dir: str | Path) -> dict[str, Any] | None:
    """The live worker's worker.json (pid, slots, started), or None when no worker holds the lock."""
    path = Path(runs_dir) / QUEUE_DIR / "worker.lock"
    if fcntl is None or not path.exists():
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_json(path.parent / "worker.json") or {"pid": None}
    finally:
        os.close(fd)
    return None


def has_work(runs_dir: str | Path, listing: Listing | None = None) -> bool:
    """Anything a worker would start now or later, or still has to settle: a queued run (started
    or not: one that ends before its runner writes status.json is marked failed), a pending
    --then job of a run that is queued, live or finished, or a --then job still running."""
    listing = listing if listing is not None else Listing(runs_dir)
    if queued(runs_dir, listing) or any(state in ("queued", "finished", *LIVE_STATES)
                                        for _, state in pending_jobs(runs_dir, listing)):
        return True
    if proposing_sweeps(runs_dir):  # a model-based sweep has settings still to come
        return True
    for run in listing.runs:
        q = listing.files.get(run.path)
        written = run.record.state if run.record else None
        if q is not None and ((written == "queued" and q.get("launch")) or any(
                isinstance(t, dict) and t.get("state") == "launched" for t in q.get("then", []))):
            return True
    return False


def proposing_sweeps(runs_dir: str | Path) -> list[str]:
    """Model-based sweeps of this runs directory's queue with settings still to come."""
    return [name for name in sweep_names(runs_dir)
            if (plan := read_plan(runs_dir, name)) and plan.get("launcher") == "queue" and to_come(plan)]


def ensure_worker(runs_dir: str | Path, runner: list[str] | None = None,
                  job_runner: list[str] | None = None) -> int | None:
    """Start ``simclr queue work`` in its own session if there is work and no worker lives.
    Returns the worker's pid (a running one's, or the new one's), None if there is no work.
    ``runner`` runs the worker, ``job_runner`` the runs it starts (both default to
    ``python -m core``; tests put a stand-in there)."""
    info = worker_info(runs_dir)
    if info is not None:
        return info.get("pid")
    if not has_work(runs_dir):
        return None
    argv = (runner or default_runner()) + ["queue", "work", "--runs-dir", str(runs_dir)]
    if job_runner:
        argv += ["--runner", shlex.join(job_runner)]
    # reaped when it ends, so a long-lived caller (the TUI) keeps no zombie of it
    proc, _ = process.start_detached(argv, queue_dir(runs_dir) / "worker.log", child_env(), reap=True)
    return proc.pid


# ---------------------------------------------------------------------- the worker
class Worker:
    """``simclr queue work``: start queued work while slots are free; exit when none is left."""

    def __init__(self, runs_dir: str | Path, slots: int | None = None, runner: list[str] | None = None,
                 poll: float = 1.0) -> None:
        self.runs_dir = Path(runs_dir)
        self.fixed_slots = slots
        self.runner = runner or default_runner()
        self.poll = poll
        self.children: list[subprocess.Popen] = []
        self.gpus = visible_gpus()
        self.host = socket.gethostname()
        self._stop = False
        self._failed_proposals: dict[str, tuple[int, float]] = {}  # sweep -> (failures in a row, when)

    @property
    def slots(self) -> int:
        return self.fixed_slots or default_slots(self.runs_dir)

    def say(self, text: str) -> None:
        say(text)

    def run(self) -> int:
        """The worker's life; 0 when the queue is done (or another worker already serves it)."""
        lock_fd = os.open(queue_dir(self.runs_dir) / "worker.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None and not _take(lock_fd, within=2.0):
                other = read_json(self.runs_dir / QUEUE_DIR / "worker.json") or {}
                self.say(f"a worker already serves {self.runs_dir} (pid {other.get('pid')}); nothing to do")
                return 0
            me = os.getpid()
            atomic_write_json(self.runs_dir / QUEUE_DIR / "worker.json", {
                "pid": me, "start_time": process.start_time(me), "host": self.host,
                "started": time.time(), "slots": self.slots})
            old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
            try:
                self.say(f"worker pid {me} serving {self.runs_dir} with {self.slots} slot(s)"
                         + (f" on GPU(s) {','.join(self.gpus)}" if self.gpus else ""))
                while not self._stop:
                    self.children = [c for c in self.children if c.poll() is None]  # reap
                    self.fill()
                    with queue_lock(self.runs_dir):
                        left = self.tick()
                    if not left and not self.children:  # it waits for the runs it started
                        self.say("queue empty: worker exits")
                        break
                    time.sleep(self.poll)
            finally:
                for s, h in old.items():
                    signal.signal(s, h)
                with contextlib.suppress(OSError):
                    os.unlink(self.runs_dir / QUEUE_DIR / "worker.json")
            return 0
        finally:
            os.close(lock_fd)

    def _on_signal(self, signum, frame) -> None:
        self.say(f"signal {signum}: worker exits; started runs keep running")
        self._stop = True

    # .................................................................. one pass
    def tick(self) -> bool:
        """One pass over the runs directory, read once (again only when settling changed it):
        settle, then start work into free slots. Returns whether work is left."""
        listing = Listing(self.runs_dir)
        if self.settle(listing):
            listing = Listing(self.runs_dir)
        count, gpus = self.busy(listing)
        free = self.slots - count
        started = False
        if free > 0:
            jobs = [e for e, state in pending_jobs(self.runs_dir, listing) if state == "finished"]
            for entry in (jobs + queued(self.runs_dir, listing))[:free]:
                gpu = self._pick_gpu(gpus)
                if self.start(entry, gpu):
                    started = True
                    if gpu is not None:
                        gpus.append(gpu)
        return started or has_work(self.runs_dir, listing)

    def fill(self) -> None:
        """Slots that nothing queued will fill: model-based sweeps of the local queue propose
        their next settings (core.jobs.propose), outside the queue's lock (asking Optuna takes
        a second or two); the next pass starts them."""
        backoff = 30.0  # a sweep whose proposal failed is asked again after this many seconds
        names = [n for n in proposing_sweeps(self.runs_dir)
                 if time.monotonic() - self._failed_proposals.get(n, (0, -backoff))[1] >= backoff]
        if not names:
            return
        listing = Listing(self.runs_dir)
        jobs = [e for e, state in pending_jobs(self.runs_dir, listing) if state == "finished"]
        want = self.slots - self.busy(listing)[0] - len(jobs) - len(queued(self.runs_dir, listing))
        if want > 0:
            self.propose(names, want)

    def propose(self, names: list[str], settings: int) -> bool:
        """``settings`` new settings from the sweeps ``names``, in order. Returns whether
        members were made. A sweep that cannot propose now is said and skipped: the worker
        goes on (it retries at a later pass only if the sweep still has settings to come)."""
        from core.jobs.propose import grow

        made = False
        for name in names:
            if settings <= 0:
                break
            try:
                placed = grow(self.runs_dir, name, settings)
            except Exception as e:  # noqa: BLE001 - a sweep's proposal must never end the worker
                failures = self._failed_proposals.get(name, (0, 0.0))[0] + 1
                self._failed_proposals[name] = (failures, time.monotonic())
                self.say(f"sweep {name}: its next setting could not be made: {one_line(e)}")
                if failures >= 3:  # it will not get better by itself: the sweep stops proposing, and says why
                    from core.jobs.plan import write_plan
                    write_plan(self.runs_dir, name, {**(read_plan(self.runs_dir, name) or {}),
                                                     "stopped": f"its next setting could not be made: {one_line(e)}"})
                continue
            self._failed_proposals.pop(name, None)
            if placed:
                settings -= len({n.rsplit("-seed=", 1)[0] for n in placed})
                made = True
                self.say(f"sweep {name} proposed {', '.join(placed)}")
        return made

    def busy(self, listing: Listing) -> tuple[int, list[str]]:
        """How many runs and jobs live on this host in the runs dir, and the GPUs the queue gave them."""
        pids: set[int] = set()
        gpus: list[str] = []
        for run in listing.all:
            st = run.record
            if (st is not None and run.state in LIVE_STATES and st.host == self.host and st.pid is not None
                    and st.launcher != "slurm"):  # Slurm schedules its own jobs, even on this host
                pids.add(st.pid)
        for run in listing.runs:  # a job's (NAME/eval/JOB) launch records are in NAME's queue.json
            q = listing.files.get(run.path) or {}
            for launch in [q.get("launch")] + [t for t in q.get("then", []) if isinstance(t, dict)]:
                if isinstance(launch, dict) and launch.get("host") == self.host and launch_alive(launch):
                    pids.add(launch["pid"])
                    if launch.get("gpu") is not None:
                        gpus.append(str(launch["gpu"]))
        return len(pids), gpus

    def _pick_gpu(self, used: list[str]) -> str | None:
        if not self.gpus:
            return None
        return min(self.gpus, key=lambda g: (used.count(g), self.gpus.index(g)))

    def settle(self, listing: Listing) -> bool:
        """A launched queued run whose process ended before its runner wrote status.json failed
        to start: mark it ``failed`` with the runner's reason. A launched --then job whose
        process ended is ``done`` (its own status says how it went) or ``failed`` likewise.
        Returns whether anything changed."""
        changed_any = False
        for run in listing.runs:
            q = listing.files.get(run.path)
            if q is None:
                continue
            launch = q.get("launch")
            written = run.record.state if run.record else None
            if written == "queued" and isinstance(launch, dict) and not launch_alive(launch):
                reason = process.last_error(run.path / "stdout.log", int(launch.get("log_offset", 0)))
                self._fail(run.path, f"did not start: {reason or 'the runner exited at once; see stdout.log'}")
                self.say(f"{run.name} failed to start: {reason}")
                changed_any = True
            changed = False
            for then in q.get("then", []):
                if isinstance(then, dict) and then.get("state") == "launched" and not launch_alive(then):
                    job_dir = run.path / "eval" / str(then.get("job"))
                    st = read_json(job_dir / "status.json") or {}
                    started = isinstance(st.get("created"), (int, float)) and st["created"] >= then.get("at", 0) - 1
                    then["state"] = "done" if started else "failed"
                    if not started:
                        then["error"] = process.last_error(job_dir / "stdout.log", int(then.get("log_offset", 0)))
                    changed = True
            if changed:
                atomic_write_json(run.path / "queue.json", q)
                changed_any = True
        return changed_any

    def _fail(self, run_dir: Path, error: str) -> None:
        update_status(run_dir / "status.json", state="failed", error=error, heartbeat=time.time())

    def start(self, entry: Entry, gpu: str | None) -> bool:
        """Start one entry in its own session and record the launch at once. A run that cannot
        be started (its config no longer valid, the runner missing) is ``failed`` with the
        reason, and a --then job likewise, so the worker never retries it forever."""
        q = read_queue_file(entry.path)
        if q is None:
            return False
        if entry.then_index is None:
            try:  # the config may have been edited, or the code changed, since it was queued
                cfg = PretrainConfig.from_dict(read_json(entry.path / "config.json") or {}).validate()
            except (ConfigError, TypeError, ValueError) as e:
                self._fail(entry.path, f"config no longer valid: {e}")
                self.say(f"{entry.run} failed: config no longer valid: {e}")
                return False
            if cfg.device not in ("auto", "cuda", "cuda:0"):
                gpu = None  # a run pinned to a device keeps it
            args = ["pretrain", "--run-dir", str(entry.path), "--config", str(entry.path / "config.json")]
            log = entry.path / "stdout.log"
        else:
            job = job_name(entry.argv, entry.path)
            args = [entry.argv[0], "--run-dir", str(entry.path), *entry.argv[1:]]
            log = entry.path / "eval" / job / "stdout.log"
        try:
            proc, offset = process.start_detached(self.runner + args, log, child_env(gpu),
                                                  header=f"\n$ simclr {' '.join(args)}\n")
        except OSError as e:
            why = f"could not be started: {' '.join(self.runner)}: {e.strerror or e}"
            self.say(f"cannot start {entry.name}: {why}")
            if entry.then_index is None:
                self._fail(entry.path, why)
            else:
                q["then"][entry.then_index].update(state="failed", error=why)
                atomic_write_json(entry.path / "queue.json", q)
            return False
        self.children.append(proc)
        launch = {"pid": proc.pid, "start_time": process.start_time(proc.pid), "host": self.host,
                  "at": time.time(), "gpu": gpu, "worker": os.getpid(), "log_offset": offset}
        if entry.then_index is None:
            q["launch"] = launch
        else:
            q["then"][entry.then_index].update(state="launched", job=job, **launch)
        atomic_write_json(entry.path / "queue.json", q)
        self.say(f"started {entry.name} (pid {proc.pid}" + (f", GPU {gpu})" if gpu is not None else ")"))
        return True


def _take(fd: int, within: float) -> bool:
    """The worker lock, tried for ``within`` seconds: :func:`worker_info` holds it for an
    instant to see whether a worker lives, which must not turn a starting worker away."""
    end = time.monotonic() + within
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > end:
                return False
            time.sleep(0.05)

