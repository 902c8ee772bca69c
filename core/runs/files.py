"""Writing and reading a run directory's files: atomic replace, tolerant JSON, the folder lock.

Every writer of a run-directory file goes through these: a reader (the TUI, another host on a
shared filesystem) never sees a half-written file, and read-modify-write changes by several
processes hold the run folder's lock (:func:`folder_lock`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # not POSIX: appends and rewrites go unlocked
    fcntl = None


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


@contextlib.contextmanager
def folder_lock(path: Path, timeout: float | None = None) -> Iterator[bool]:
    """An exclusive advisory lock on the folder holding ``path``.

    metrics.jsonl and status.json are changed by several processes (a runner, its evaluation
    jobs, the queue worker, a Slurm job's batch shell, ``simclr stop``) and atomically replaced,
    so their own inodes cannot carry a lock; the folder's does, and adds no file to the run
    directory. Yields True when held; with ``timeout`` (seconds) it gives up and yields False
    (a process that is ending must still get its last word out).
    """
    if fcntl is None:
        yield True
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        held, end = False, None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if end is None else fcntl.LOCK_NB))
                held = True
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    break
                time.sleep(0.01)
            except OSError:  # a filesystem without locks on folders (some network mounts): go on unguarded
                break
        yield held
    finally:
        os.close(fd)  # closing releases the lock


def same_file(f, path: Path) -> bool:
    """The open file ``f`` is (still) the file at ``path``: not replaced meanwhile."""
    try:
        a, b = os.fstat(f.fileno()), os.stat(path)
    except (OSError, ValueError, AttributeError):
        return False
    return (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


def number(value: Any) -> int | float | None:
    """A JSON value if it is a number (int or float, as written), else None: a bool, a string
    or garbage in a status, result or metrics file reads as absent."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
