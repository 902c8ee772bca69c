"""bench/gpu_check.py's machinery, free of torch: choosing checks, the time budget, running one
check in a child process, the report (rewritten atomically after every check) and the bundle
of failed checks' logs. ``tests/test_gpu_check.py`` drives it with fake checks on a CPU."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

STDERR_TAIL = 4096  # bytes of a failed check's output kept in its row
LOG_NAMES = ("stdout.log", "status.json", "meta.json")  # a run's files worth bringing back
LOG_SUFFIXES = (".stderr", ".log")
FILE_CAP = 1 << 20  # the last MiB of each log file goes into the bundle
MIN_START_S = 10.0  # a check is not started with less than this left of the budget
KILL_GRACE_S = 30.0  # a child past its time gets this long to end its own commands before SIGKILL


@dataclass
class Check:
    name: str
    timeout: float  # seconds it may take on the device at full sizes (cut to the budget's rest)
    covers: str = ""  # what it really exercises on this machine
    unavailable: str | None = None  # why it cannot run here (listed as skipped, not failed)


def slug(name: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in name.lower())
    return "-".join(p for p in out.split("-") if p)


def _norm(name: str) -> str:
    return " ".join(name.lower().replace("-", " ").replace("_", " ").split())


def matches(pattern: str, name: str) -> bool:
    """A --only/--skip NAME picks a check by its name or the start of it, by words
    (``step`` = the four step checks, ``step-bf16`` two, ``knn`` only ``knn``), any case."""
    p, n = _norm(pattern), _norm(name.replace("(", " ").replace(")", " ").replace("+", " "))
    return bool(p) and (n == p or n.startswith(p + " ") or _norm(name) == p)


def selection(names: list[str], only: list[str], skip: list[str]) -> dict[str, str]:
    """Checks left out -> why. Raises ValueError for a NAME that picks nothing."""
    for pattern in [*only, *skip]:
        if not any(matches(pattern, n) for n in names):
            raise ValueError(f"no check is called {pattern!r}; the checks: {', '.join(names)}")
    out = {}
    for n in names:
        if only and not any(matches(p, n) for p in only):
            out[n] = "not in --only"
        elif any(matches(p, n) for p in skip):
            out[n] = "--skip"
    return out


def split_names(values: list[str] | None) -> list[str]:
    return [v.strip() for arg in values or [] for v in arg.split(",") if v.strip()]


def tail(text: str, limit: int = STDERR_TAIL) -> str:
    """The last ``limit`` characters, from a line's start where one is in reach."""
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    nl = cut.find("\n")
    return cut[nl + 1:] if 0 <= nl < limit // 4 else cut


def read_tail(path: Path, limit: int = STDERR_TAIL) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit - 1024))
            return tail(f.read().decode("utf-8", "replace"), limit)
    except OSError:
        return ""


def last_line(text: str) -> str:
    """The last line that says something (not torchrun's ``=====`` banner or a blank)."""
    for line in reversed(text.strip().splitlines()):
        s = line.strip()
        if s and s.strip("=-_* ") and not s.startswith("Traceback"):
            return s[:300]
    return "(no output)"


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def kill_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the child's whole session (torchrun's workers too), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 15)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_child(cmd: list[str], timeout: float, log: Path, result: Path, env: dict[str, str] | None = None,
              grace: float = KILL_GRACE_S) -> dict[str, Any]:
    """One check in its own process (a sticky CUDA error ends only it): its output into ``log``,
    its row from the JSON it writes to ``result``; a crash, a kill or no result is a failed row
    with the output's last few KB."""
    log.parent.mkdir(parents=True, exist_ok=True)
    result.unlink(missing_ok=True)
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    timed_out = False
    try:
        proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc, grace)
    except BaseException:
        kill_group(proc, 5)
        raise
    row: dict[str, Any] | None = None
    with contextlib.suppress(OSError, ValueError):
        row = json.loads(result.read_text())
    if row is not None and not timed_out and proc.returncode == 0:
        return row
    out = read_tail(log)
    why = (f"did not end within {timeout:.0f} s (killed)" if timed_out
           else f"the check's process exited {proc.returncode}" + ("" if row else " without a result"))
    row = {**(row or {}), "ok": False}
    row["error"] = f"{why}: {row['error']}" if row.get("error") else f"{why}: {last_line(out)}"
    row.setdefault("stderr_tail", out)
    return row


def run_logs(root: Path, since: float) -> list[Path]:
    """Run files (stdout.log, status.json, meta.json, *.stderr, *.log) under ``root`` written since ``since``."""
    found = []
    for p in sorted(root.rglob("*")) if root.exists() else []:
        with contextlib.suppress(OSError):
            if p.is_file() and (p.name in LOG_NAMES or p.suffix in LOG_SUFFIXES) and p.stat().st_mtime >= since - 1:
                found.append(p)
    return found


def write_bundle(path: Path, entries: list[tuple[str, Path]]) -> None:
    """One tar.gz of (name inside, file) pairs, each file's last MiB; rewritten atomically."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tarfile.open(tmp, "w:gz") as tar:
        for arcname, p in entries:
            try:
                data = p.read_bytes()[-FILE_CAP:]
            except OSError:
                continue
            info = tarfile.TarInfo(arcname)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)


def run_all(checks: list[Check], run_one: Callable[[Check, float], dict[str, Any]], budget_s: float,
            save: Callable[[list[dict[str, Any]]], None], left_out: dict[str, str] | None = None,
            clock: Callable[[], float] = time.monotonic, min_start: float = MIN_START_S) -> list[dict[str, Any]]:
    """Every check in order: left out (--only/--skip), unavailable here, past the budget, or run
    by ``run_one(check, seconds it may take)``; the report saved after every row."""
    left_out = left_out or {}
    end = clock() + budget_s
    rows: list[dict[str, Any]] = []
    for c in checks:
        base: dict[str, Any] = {"check": c.name, "covers": c.covers}
        left = end - clock()
        if c.name in left_out:
            row = {**base, "ok": None, "seconds": 0.0, "skipped": left_out[c.name], "skip_kind": "selection"}
        elif c.unavailable:
            row = {**base, "ok": None, "seconds": 0.0, "skipped": c.unavailable, "skip_kind": "unavailable"}
        elif left < min_start:
            row = {**base, "ok": None, "seconds": 0.0, "skip_kind": "budget",
                   "skipped": f"budget: {max(0.0, left):.0f} s of --budget {budget_s:.0f} s left, "
                              f"under the {min_start:.0f} s a check needs to start"}
        else:
            allowed = min(c.timeout, left)
            t0 = clock()
            try:
                got = run_one(c, allowed)
            except Exception as e:  # noqa: BLE001 - the runner itself failing is one failed row
                got = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            row = {**base, **got, "seconds": round(clock() - t0, 1), "timeout_s": round(allowed, 1)}
        rows.append(row)
        save(rows)  # on disk before the next check starts
        verdict = "ok" if row["ok"] else (f"skipped ({row['skipped']})" if row["ok"] is None else row["error"])
        print(f"gpu_check: {c.name}: {verdict} ({row['seconds']} s)", file=sys.stderr, flush=True)
    return rows


def summary(result: dict[str, Any]) -> str:
    keep = {k: v for k, v in result.items() if k not in ("losses", "sync_sources", "syncs_per_step")}
    return ", ".join(f"{k} {v}" for k, v in keep.items())


def markdown(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    head = f"GPU check on {env.get('gpu', env.get('device'))} (torch {env.get('torch')}, CUDA {env.get('cuda')})\n\n"
    lines = ["| check | result | seconds | numbers |", "| --- | --- | ---: | --- |"]
    for r in rows:
        verdict = "ok" if r["ok"] else ("skipped" if r["ok"] is None else "FAILED")
        numbers = (summary(r.get("result") or {}) if r["ok"] else
                   r.get("skipped", "") if r["ok"] is None else r.get("error", ""))
        lines.append(f"| {r['check']} | {verdict} | {r['seconds']} | {numbers.replace('|', '/').replace(chr(10), ' ')} |")
    return head + "\n".join(lines)
