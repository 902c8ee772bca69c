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
* The worker (``simclr queue work``) starts queued runs and pending ``--then`` jobs while
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
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from core.config import PretrainConfig
from core.errors import ConfigError, QueueError
from core.runs import (
    LIVE_STATES,
    atomic_write_json,
    eval_dataset_tag,
    eval_job_name,
    iter_runs,
    process_alive,
    process_start_time,
    read_json,
    read_run,
    read_sweep,
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
    data = read_json(run_dir / "queue.json")
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


def queued(runs_dir: str | Path) -> list[Entry]:
    """Queued runs not yet started, in queue order (position = index + 1)."""
    entries = []
    for run in iter_runs(runs_dir):
        q = read_queue_file(run.path)
        if q is not None and run.state == "queued" and not q.get("launch"):
            sweep = read_sweep(run.path)
            entries.append(Entry(run.name, run.path, _order(q), sweep["sweep"] if sweep else None))
    return sorted(entries, key=lambda e: (e.order, e.run))


def positions(runs_dir: str | Path) -> dict[str, int]:
    """Run name -> its 1-based place in the queue."""
    return {e.run: i + 1 for i, e in enumerate(queued(runs_dir))}


def pending_jobs(runs_dir: str | Path) -> list[tuple[Entry, str]]:
    """``--then`` jobs not started yet, each with its run's effective state."""
    out = []
    for run in iter_runs(runs_dir):
        q = read_queue_file(run.path)
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
    order = max((_order(q) for q in (read_queue_file(r.path) for r in iter_runs(runs_dir)) if q and
                 _order(q) != float("inf")), default=0.0) + 1
    run_dir.mkdir(parents=True, exist_ok=True)
    # a queued run starts wherever its worker runs: a data folder relative to here would move
    cfg = cfg.replace(data_dir=str(Path(cfg.data_dir).expanduser().absolute()))
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    if sweep is not None:
        atomic_write_json(run_dir / "sweep.json", sweep)
    atomic_write_json(run_dir / "queue.json", {
        "order": order, "queued_at": time.time(), "launch": None,
        "then": [{"argv": list(a), "state": "pending"} for a in (then or [])]})
    atomic_write_json(run_dir / "status.json", {
        "kind": "pretrain", "state": "queued", "pid": None, "host": socket.gethostname(),
        "created": time.time(), "heartbeat": time.time(), "epoch": 0, "step": 0,
        "total_steps": None, "total_epochs": cfg.epochs, "error": None})


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
    import shutil

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


# ---------------------------------------------------------------------- the worker
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


def has_work(runs_dir: str | Path) -> bool:
    """Anything a worker would start now or later, or still has to settle: a queued run (started
    or not: one that ends before its runner writes status.json is marked failed), a pending
    --then job of a run that is queued, live or finished, or a --then job still running."""
    if queued(runs_dir) or any(state in ("queued", "finished", *LIVE_STATES) for _, state in pending_jobs(runs_dir)):
        return True
    for run in iter_runs(runs_dir):
        q = read_queue_file(run.path)
        if q is not None and ((run.state == "queued" and q.get("launch")) or any(
                isinstance(t, dict) and t.get("state") == "launched" for t in q.get("then", []))):
            return True
    return False


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
    log = queue_dir(runs_dir) / "worker.log"
    argv = (runner or default_runner()) + ["queue", "work", "--runs-dir", str(runs_dir)]
    if job_runner:
        argv += ["--runner", shlex.join(job_runner)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=child_env(), close_fds=True)
    # reaped when it ends, so a long-lived caller (the TUI) keeps no zombie of it
    threading.Thread(target=proc.wait, name="reap-queue-worker", daemon=True).start()
    return proc.pid


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


def _log_error(log: Path, since: int) -> str | None:
    """The runner's one-line error (``simclr: error: ...``) written to ``log`` after byte ``since``."""
    try:
        with open(log, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln.removeprefix("simclr: error: ") for ln in lines if ln.startswith("simclr: error:")]
    return errors[-1] if errors else (lines[-1][:300] if lines else None)


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

    @property
    def slots(self) -> int:
        return self.fixed_slots or default_slots(self.runs_dir)

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

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
                "pid": me, "start_time": process_start_time(me), "host": self.host,
                "started": time.time(), "slots": self.slots})
            old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
            try:
                self.say(f"worker pid {me} serving {self.runs_dir} with {self.slots} slot(s)"
                         + (f" on GPU(s) {','.join(self.gpus)}" if self.gpus else ""))
                while not self._stop:
                    self.children = [c for c in self.children if c.poll() is None]  # reap
                    with queue_lock(self.runs_dir):
                        self.tick()
                        left = has_work(self.runs_dir)
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
    def busy(self) -> tuple[int, list[str]]:
        """How many runs and jobs live on this host in the runs dir, and the GPUs the queue gave them."""
        pids: set[int] = set()
        gpus: list[str] = []
        for run in iter_runs(self.runs_dir, jobs=True):
            st = run.status or {}
            if (run.state in LIVE_STATES and st.get("host") == self.host and isinstance(st.get("pid"), int)
                    and st.get("launcher") != "slurm"):  # Slurm schedules its own jobs, even on this host
                pids.add(st["pid"])
            if run.path.parent != self.runs_dir:  # a job (NAME/eval/JOB): its records are in NAME's queue.json
                continue
            q = read_queue_file(run.path) or {}
            for launch in [q.get("launch")] + [t for t in q.get("then", []) if isinstance(t, dict)]:
                if isinstance(launch, dict) and launch.get("host") == self.host and _alive(launch):
                    pids.add(launch["pid"])
                    if launch.get("gpu") is not None:
                        gpus.append(str(launch["gpu"]))
        return len(pids), gpus

    def tick(self) -> None:
        """Settle launches that ended, then start work into free slots: --then jobs of finished
        runs first (short, and they complete a result), then queued runs in order."""
        self.settle()
        count, gpus = self.busy()
        free = self.slots - count
        if free <= 0:
            return
        jobs = [e for e, state in pending_jobs(self.runs_dir) if state == "finished"]
        for entry in (jobs + queued(self.runs_dir))[:free]:
            gpu = self._pick_gpu(gpus)
            if self.start(entry, gpu) and gpu is not None:
                gpus.append(gpu)

    def _pick_gpu(self, used: list[str]) -> str | None:
        if not self.gpus:
            return None
        return min(self.gpus, key=lambda g: (used.count(g), self.gpus.index(g)))

    def settle(self) -> None:
        """A launched queued run whose process ended before its runner wrote status.json failed
        to start: mark it ``failed`` with the runner's reason. A launched --then job whose
        process ended is ``done`` (its own status says how it went) or ``failed`` likewise."""
        for run in iter_runs(self.runs_dir):
            q = read_queue_file(run.path)
            if q is None:
                continue
            launch = q.get("launch")
            if run.state == "queued" and isinstance(launch, dict) and not _alive(launch):
                reason = _log_error(run.path / "stdout.log", int(launch.get("log_offset", 0)))
                self._fail(run.path, f"did not start: {reason or 'the runner exited at once; see stdout.log'}")
                self.say(f"{run.name} failed to start: {reason}")
            changed = False
            for then in q.get("then", []):
                if isinstance(then, dict) and then.get("state") == "launched" and not _alive(then):
                    job_dir = run.path / "eval" / str(then.get("job"))
                    st = read_json(job_dir / "status.json") or {}
                    started = isinstance(st.get("created"), (int, float)) and st["created"] >= then.get("at", 0) - 1
                    then["state"] = "done" if started else "failed"
                    if not started:
                        then["error"] = _log_error(job_dir / "stdout.log", int(then.get("log_offset", 0)))
                    changed = True
            if changed:
                atomic_write_json(run.path / "queue.json", q)

    def _fail(self, run_dir: Path, error: str) -> None:
        status = read_json(run_dir / "status.json") or {}
        atomic_write_json(run_dir / "status.json", {**status, "state": "failed", "error": error,
                                                    "heartbeat": time.time()})

    def start(self, entry: Entry, gpu: str | None) -> bool:
        """Start one entry in its own session and record the launch at once."""
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
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            out.write(f"\n$ simclr {' '.join(args)}\n".encode())
            out.flush()
            offset = out.tell()
            try:
                proc = subprocess.Popen(self.runner + args, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        env=child_env(gpu), close_fds=True)
            except OSError as e:
                self.say(f"cannot start {entry.name}: {e}")
                return False
        self.children.append(proc)
        launch = {"pid": proc.pid, "start_time": process_start_time(proc.pid), "host": self.host,
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


def _alive(launch: dict[str, Any]) -> bool:
    pid = launch.get("pid")
    return isinstance(pid, int) and process_alive(pid, launch.get("start_time")) is not False
