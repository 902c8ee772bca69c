"""The run directory: the on-disk contract between the runner, the TUI and TensorBoard.

Everything here is plain Python (no torch) so the TUI can read runs cheaply. The layout is
documented in docs/RUN_DIRECTORY.md; keep the two in step.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # not POSIX: appends and the resume rewrite go unlocked
    fcntl = None

from core.errors import RunBusyError, RunNameError

STATES = ("queued", "starting", "running", "finished", "failed", "stopped")
#: states in which the writing process is expected to be alive
LIVE_STATES = ("starting", "running")
#: a live run whose heartbeat is older than this (seconds) on another host is shown as crashed
STALE_AFTER = 120.0

#: letters, digits and ``. _ - = ,`` (a sweep's runs are named ``NAME-temperature=0.2,seed=1``)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,-]{0,99}$")
_CHECKPOINT_RE = re.compile(r"(last|epoch_\d{4,})")
#: folders of the runs directory that are not runs (the queue's own, `.queue`, cannot be a name anyway)
RESERVED_NAMES = ("exports",)
#: files a run directory may hold before its runner starts: the TUI's log, and what the queue
#: (core.jobs.queue) and the user (notes) put there; config.json and status.json only while queued
PRE_START_FILES = frozenset({"stdout.log", "notes.json", "queue.json", "sweep.json", "slurm.json", "slurm.sh"})


# ---------------------------------------------------------------------- files
def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temp file in the same folder, fsync, then rename: never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON object from a file, or None if it is missing, truncated or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------- processes
def process_start_time(pid: int) -> int | None:
    """The kernel's start time of a process (clock ticks since boot), or None if gone/unknown.

    pid + start time identifies a process even after the pid is reused.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces; fields after the last ')' are fixed
    rest = stat.rsplit(")", 1)[1].split()
    try:
        return int(rest[19])  # field 22 overall
    except (IndexError, ValueError):
        return None


def process_alive(pid: int | None, start_time: int | None) -> bool | None:
    """True/False when this host can tell, None when it cannot (no /proc)."""
    if not pid:
        return False
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return None if start_time else True
    now = process_start_time(pid)
    if now is None:
        return False
    return start_time is None or now == start_time


def effective_state(status: dict[str, Any] | None, now: float | None = None) -> str:
    """The state a reader should show: the written one, or ``crashed`` when the writer is gone.

    A live state whose process is dead (pid gone, or reused by another process with a
    different start time) is ``crashed``; so is one written on another host, or by a Slurm
    job, whose heartbeat is older than STALE_AFTER. A missing or unreadable status is ``damaged``.
    """
    if not status or status.get("state") not in STATES:
        return "damaged"
    state = status["state"]
    if state not in LIVE_STATES:
        return state
    if status.get("host") == socket.gethostname() and status.get("launcher") != "slurm":
        # a Slurm job's pid says nothing here (another host, or a job Slurm may requeue): the
        # heartbeat, and Slurm's own word (core.jobs.slurm.reconcile), decide
        alive = process_alive(status.get("pid"), status.get("start_time"))
        if alive is False:
            return "crashed"
        if alive is True:
            return state
    try:
        beat = float(status.get("heartbeat") or 0)
    except (TypeError, ValueError):
        return "damaged"
    if (now or time.time()) - beat > STALE_AFTER:
        return "crashed"
    return state


def slurm_fields() -> dict[str, Any]:
    """The Slurm job this process runs in (its status says so, and readers ask Slurm about it)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return {}
    try:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        restarts = 0
    return {"slurm_job_id": job, "slurm_restarts": restarts,
            "launcher": os.environ.get("SIMCLR_LAUNCHER", "local")}


class StatusFile:
    """status.json, rewritten atomically on every change and at least every 10 s."""

    def __init__(self, path: str | Path, kind: str = "pretrain", **fields: Any) -> None:
        self.path = Path(path)
        pid = os.getpid()
        self.data: dict[str, Any] = {
            "kind": kind, "state": "starting", "pid": pid, "pgid": os.getpgid(pid),
            "start_time": process_start_time(pid), "host": socket.gethostname(),
            "created": time.time(), "heartbeat": time.time(), "epoch": 0, "step": 0,
            "total_steps": None, "error": None, **slurm_fields(),
        }
        self.data.update(fields)
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
        got = self._lock.acquire(timeout=5)
        try:
            self._final = True
            self._write(True, fields)
        finally:
            if got:
                self._lock.release()

    def _write(self, force: bool, fields: dict[str, Any]) -> None:
        self.data.update(fields)
        now = time.time()
        if force or now - self._last_write >= 10.0:
            self.data["heartbeat"] = now
            atomic_write_json(self.path, dict(self.data))
            self._last_write = now


# ---------------------------------------------------------------------- metrics
@contextlib.contextmanager
def _folder_lock(path: Path):
    """An exclusive advisory lock on the folder holding ``path``: metrics.jsonl is appended to
    by several processes and atomically replaced on resume, so its own inode cannot carry the
    lock; the folder's does, and adds no file to the run directory."""
    if fcntl is None:
        yield
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _same_file(f, path: Path) -> bool:
    try:
        a, b = os.fstat(f.fileno()), os.stat(path)
    except OSError:
        return False
    return (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


class MetricsWriter:
    """Appends ``{"step", "epoch", "time", "tag", "value"}`` lines to metrics.jsonl.

    Each record is one ``write`` of a whole line on a file opened in append mode, so a
    reader never sees a torn line except possibly the very last one. Several writers share
    one file (the pretraining run and its evaluation jobs); a resume rewrites it
    (:func:`truncate_metrics_after`). Appends and the rewrite hold the run folder's lock, and
    a writer whose file was replaced reopens it first, so no record lands in a replaced file.
    """

    def __init__(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.extra = extra or {}
        self._f = open(self.path, "a", buffering=1)

    def log(self, tag: str, value: float, step: int, epoch: float) -> None:
        rec = {"step": int(step), "epoch": round(float(epoch), 6), "time": round(time.time(), 3),
               "tag": tag, "value": float(value), **self.extra}
        with _folder_lock(self.path):
            if not _same_file(self._f, self.path):
                self._f.close()
                self._f = open(self.path, "a", buffering=1)
            self._f.write(json.dumps(rec) + "\n")
            self._f.flush()

    def flush(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_metrics(path: str | Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete records appended since byte ``offset``, and the offset to resume from.

    A partial last line (a writer mid-append) is left for the next call; a garbage line
    is skipped. Returns ([], offset) when the file does not exist; if the file shrank
    (rewritten), reading restarts from 0.
    """
    try:
        size = os.path.getsize(path)
    except OSError:
        return [], offset
    if size < offset:
        offset = 0
    if size == offset:
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read(size - offset)
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    records = []
    for line in chunk[: end + 1].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "tag" in rec and "value" in rec:
            records.append(rec)
    return records, offset + end + 1


def truncate_metrics_after(path: str | Path, step: int, tags_prefixes: tuple[str, ...] = ("train/", "knn/")) -> None:
    """On resume: drop training records logged after the checkpoint's step, so none repeat.

    Records of evaluation jobs (they carry a ``"job"`` key) are kept whatever their step.
    The rewrite holds the file's lock, so an evaluation job appending meanwhile waits and
    then appends to the new file (see :class:`MetricsWriter`).
    """
    p = Path(path)
    if not p.exists():
        return
    with _folder_lock(p):
        keep = []
        for line in p.read_bytes().decode(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if (isinstance(rec, dict) and "job" not in rec and str(rec.get("tag", "")).startswith(tags_prefixes)
                    and rec.get("step", 0) > step):
                continue
            keep.append(line)
        atomic_write_text(p, "".join(k + "\n" for k in keep))


# ---------------------------------------------------------------------- naming and listing
def job_result_path(job_dir: Path) -> Path:
    """An evaluation job's result file, beside its folder: NAME/eval/<job>/ -> NAME/eval/<job>.json.

    Not ``with_suffix``: job names hold dots (``finetune-0.1-last``).
    """
    return job_dir.parent / f"{job_dir.name}.json"


def eval_job_name(kind: str, checkpoint: str, dataset_tag: str | None = None,
                  label_fraction: float | None = None) -> str:
    """The folder of an evaluation job under NAME/eval/ (and its result NAME/eval/<job>.json).

    ``linear-last``, ``knn-cifar100-epoch_0010`` (another dataset), ``finetune-0.1-last``
    (the label fraction written as ``repr(float)``). The runner and the TUI both use this.
    """
    if kind == "finetune":
        if label_fraction is None:
            raise ValueError("a fine-tuning job needs its label fraction")
        kind = f"finetune-{float(label_fraction)!r}"
    return "-".join(p for p in (kind, dataset_tag, checkpoint) if p)


def eval_dataset_tag(own_dataset: str, own_data_dir: str, dataset: str | None, data_dir: str | None) -> str | None:
    """The ``<dataset>`` part of a job name: None when the job evaluates the run's own data,
    else the other dataset's name (a folder's own name), made safe for a file name."""
    dataset, data_dir = dataset or own_dataset, data_dir or own_data_dir
    same_dir = Path(data_dir).resolve() == Path(own_data_dir).resolve()
    if dataset == own_dataset and (dataset != "folder" or same_dir):
        return None
    return re.sub(r"[^A-Za-z0-9._]+", "_", Path(data_dir).name if dataset == "folder" else dataset)


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


# ---------------------------------------------------------------------- sweeps, notes and tags
def read_sweep(run_dir: Path) -> dict[str, Any] | None:
    """A run's sweep.json as ``{"sweep", "index", "swept"}``, or None when the run is no
    sweep's (no file, unreadable, no sweep name). A value of the wrong type reads as absent."""
    data = read_json(run_dir / "sweep.json")
    if not data or not isinstance(data.get("sweep"), str) or not data["sweep"]:
        return None
    index, swept = data.get("index"), data.get("swept")
    return {"sweep": data["sweep"],
            "index": index if isinstance(index, int) and not isinstance(index, bool) else None,
            "swept": swept if isinstance(swept, dict) else {}}


def read_notes(run_dir: str | Path) -> tuple[str, list[str]]:
    """A run's note and tags (``notes.json``); ``("", [])`` when it has none or the file is unreadable."""
    data = read_json(Path(run_dir) / "notes.json") or {}
    note = data.get("note") if isinstance(data.get("note"), str) else ""
    tags = data.get("tags") if isinstance(data.get("tags"), list) else []
    return note, [t for t in tags if isinstance(t, str) and t]


def clean_tags(tags: list[str] | str) -> list[str]:
    """Tags as a sorted list of unique words (a string is split on commas and spaces)."""
    words = re.split(r"[,\s]+", tags) if isinstance(tags, str) else [str(t).strip() for t in tags]
    return sorted({w for w in words if w})


def write_notes(run_dir: str | Path, note: str | None = None, tags: list[str] | str | None = None) -> None:
    """Set a run's note and/or tags (None keeps what is there); atomic, like every run file."""
    old_note, old_tags = read_notes(run_dir)
    atomic_write_json(Path(run_dir) / "notes.json",
                      {"note": old_note if note is None else note.strip(),
                       "tags": old_tags if tags is None else clean_tags(tags)})


def check_checkpoint_name(name: str) -> str:
    """``last`` or ``epoch_NNNN``: a file in the run's checkpoints/, never a path elsewhere."""
    if not _CHECKPOINT_RE.fullmatch(name):
        raise RunNameError(f"--checkpoint must be last or epoch_NNNN (got {name!r})")
    return name


def check_run_name(name: str) -> str:
    """A run name is one path component of letters, digits, '.', '_' and '-'."""
    # fullmatch: with match(), "$" also matches before a trailing newline ("x\n" got in)
    if name in RESERVED_NAMES:
        raise RunNameError(f"run name {name!r} is reserved: the TUI writes its exports to runs/{name}/; choose another")
    if not _NAME_RE.fullmatch(name) or name in (".", "..") or ".." in name:
        raise RunNameError(f"run name {name!r} is not allowed: use letters, digits, '.', '_', '-', '=' and ',' "
                         f"(at most 100, starting with a letter or digit; no '/' or '..')")
    return name


def resolve_run_dir(runs_dir: str | Path, name: str) -> Path:
    """runs_dir/name, guaranteed to stay inside runs_dir."""
    check_run_name(name)
    root = Path(runs_dir).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise RunNameError(f"run name {name!r} escapes the runs directory {root}")
    return path


def generate_run_name(runs_dir: str | Path, dataset: str, backbone: str) -> str:
    """A readable, unique name such as ``cifar10-resnet18-1128-1505``."""
    stamp = time.strftime("%m%d-%H%M%S")
    base = f"{dataset}-{backbone}-{stamp}"
    name, i = base, 2
    while (Path(runs_dir) / name).exists():
        name, i = f"{base}-{i}", i + 1
    return name


def claim_run_dir(runs_dir: str | Path, dataset: str, backbone: str) -> Path:
    """Create a new run directory with a generated name and return it.

    ``mkdir`` is atomic: of several launches in the same second (a sweep started from a
    shell loop) each gets its own directory, where a name merely checked to be free would
    be given to all of them.
    """
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        path = root / generate_run_name(root, dataset, backbone)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue  # taken between the check and the mkdir: the next name


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


@dataclass
class RunInfo:
    """What a reader knows of one run directory without opening its metrics."""

    path: Path
    status: dict[str, Any] | None
    config: dict[str, Any] | None
    state: str

    @property
    def name(self) -> str:
        return self.path.name


def read_run(path: Path) -> RunInfo:
    status = read_json(path / "status.json")
    return RunInfo(path, status, read_json(path / "config.json"), effective_state(status))


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
        yield read_run(p)
        if jobs:
            for j in list_jobs(p):
                yield read_run(j)


def list_jobs(run_dir: Path) -> list[Path]:
    """The evaluation job folders of a run (``NAME/eval/JOB/`` holding status.json), by name.

    A run deleted while it is listed has no jobs, rather than failing the whole listing.
    """
    try:
        folders = sorted((run_dir / "eval").iterdir())
    except OSError:  # no eval/ folder, or the run went away meanwhile
        return []
    return [j for j in folders if j.is_dir() and (j / "status.json").exists()]
