"""metrics.jsonl: one JSON record a line, appended by the runner and its evaluation jobs.

Its one writer is :class:`MetricsWriter`; :func:`read_metrics` is its one parser (the CLI,
the TUI and the tests read it through this), and a resume rewrites it with
:func:`truncate_metrics_after`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from core.runs.files import atomic_write_text, folder_lock, number, same_file

#: a metrics line longer than this is garbage, not a record still being written
MAX_LINE_BYTES = 1 << 20


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
        with folder_lock(self.path):
            if not same_file(self._f, self.path):
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


def read_metrics_chunk(path: str | Path, offset: int, max_bytes: int) -> tuple[list[dict[str, Any]], int, int]:
    """Complete records after byte ``offset``, reading at most ``max_bytes``.

    The one parser of metrics.jsonl. A partial last line (a writer mid-append) is left for
    the next call; a garbage line (not a JSON object with a string ``tag`` and a numeric
    ``value``) is skipped and counted, so a reader can mark the run damaged. The read is
    bounded, so the TUI consumes a 10 MB backlog over several polls. Returns (records, new
    offset, bad lines); the caller handles a file that was replaced or shrank.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read(max_bytes)
            if len(chunk) == max_bytes and b"\n" not in chunk:
                chunk += f.readline(MAX_LINE_BYTES)  # a line longer than the chunk: finish it
    except OSError:
        return [], offset, 0
    end = chunk.rfind(b"\n")
    if end < 0:
        if len(chunk) >= MAX_LINE_BYTES:  # no newline in megabytes: skip it as garbage
            return [], offset + len(chunk), 1
        return [], offset, 0
    lines = [ln for ln in chunk[:end].split(b"\n") if ln.strip()]
    try:  # one parse of the whole chunk is about twice as fast as one per line
        parsed = json.loads(b"[" + b",".join(lines) + b"]") if lines else []
        if len(parsed) != len(lines):
            raise ValueError("a line held more than one value")
    except ValueError:
        parsed = []
        for ln in lines:
            try:
                parsed.append(json.loads(ln))
            except ValueError:
                parsed.append(None)
    records = [r for r in parsed if _valid_record(r)]
    return records, offset + end + 1, len(parsed) - len(records)


def _valid_record(rec: Any) -> bool:
    return (isinstance(rec, dict) and isinstance(rec.get("tag"), str)
            and number(rec.get("value")) is not None)


def read_metrics(path: str | Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete records appended since byte ``offset``, and the offset to resume from
    (:func:`read_metrics_chunk` over the whole rest of the file).

    Returns ([], offset) when the file does not exist; if the file shrank (rewritten),
    reading restarts from 0.
    """
    try:
        size = os.path.getsize(path)
    except OSError:
        return [], offset
    if size < offset:
        offset = 0
    if size == offset:
        return [], offset
    records, offset, _ = read_metrics_chunk(path, offset, size - offset)
    return records, offset


def truncate_metrics_after(path: str | Path, step: int, tags_prefixes: tuple[str, ...] = ("train/", "knn/")) -> None:
    """On resume: drop training records logged after the checkpoint's step, so none repeat.

    Records of evaluation jobs (they carry a ``"job"`` key) are kept whatever their step.
    The rewrite holds the file's lock, so an evaluation job appending meanwhile waits and
    then appends to the new file (see :class:`MetricsWriter`).
    """
    p = Path(path)
    if not p.exists():
        return
    with folder_lock(p):
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
