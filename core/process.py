"""Processes: is one alive, start one detached with a log, stop a group with grace then kill.

Plain Python, no torch. The runner records its pid, process group and start time in
status.json; the queue worker records its children in queue.json; the TUI starts jobs too.
All of them start, watch and stop processes through this one module.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path


def start_time(pid: int) -> int | None:
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


def alive(pid: int | None, started: int | None) -> bool | None:
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
        return None if started else True
    now = start_time(pid)
    if now is None:
        return False
    return started is None or now == started


def start_detached(argv: list[str], log: Path, env: dict[str, str] | None = None, header: str | None = None,
                   reap: bool = False) -> tuple[subprocess.Popen, int]:
    """Start ``argv`` in a session of its own (quitting the starter never takes it down), stdin
    closed, stdout and stderr appended to ``log`` (after ``header``, a line saying what runs).

    Returns the process and the byte offset in ``log`` where its output begins (what it says
    when it fails is read from there). ``reap``: a thread waits for it, so a long-lived caller
    keeps no zombie. Raises OSError when it cannot be started (the log keeps the header).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        if header:
            out.write(header.encode())
            out.flush()
        offset = out.tell()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, close_fds=True)
    if reap:
        threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc, offset


def signal_run(pid: int | None, pgid: int | None, sig: int) -> str:
    """Signal a run: its whole process group (its DataLoader workers, torchrun's ranks) when it
    has one of its own, else only its process (a run started without a session of its own
    shares its starter's group, which must not be signalled). Returns what was signalled;
    ProcessLookupError when it is gone."""
    if isinstance(pgid, int) and pgid > 1 and pgid != os.getpgrp():
        os.killpg(pgid, sig)
        return f"process group {pgid}"
    if not isinstance(pid, int) or pid <= 1:
        raise ProcessLookupError(f"no process to signal (pid={pid!r})")
    os.kill(pid, sig)
    return f"process {pid}"


def last_error(log: Path, since: int = 0) -> str | None:
    """The runner's one-line error (``simclr: error: ...``) written to ``log`` after byte
    ``since``; else its last line (300 characters at most); None when it wrote nothing."""
    try:
        with open(log, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    return error_line(text)


def error_line(*outputs: str) -> str | None:
    """What a ``simclr`` command said when it failed: its last ``simclr: error: ...`` line in
    any of ``outputs``, else the last line of the first output that has one (300 characters
    at most); None when they are all empty."""
    lines = [[ln.strip() for ln in text.splitlines() if ln.strip()] for text in outputs]
    errors = [ln.removeprefix("simclr: error:").strip() for ls in lines for ln in ls if ln.startswith("simclr: error:")]
    if errors:
        return errors[-1]
    rest = next((ls for ls in lines if ls), [])
    return rest[-1][:300] if rest else None


def scheduler_fields() -> dict[str, object]:
    """The batch job this process runs in, as status.json records it: readers ask the
    scheduler about that job (core.jobs.slurm). Empty outside Slurm."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return {}
    try:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        restarts = 0
    return {"slurm_job_id": job, "slurm_restarts": restarts, "launcher": os.environ.get("SIMCLR_LAUNCHER", "local")}
