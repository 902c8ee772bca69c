"""A Log that follows a growing text file (a run's stdout.log) from a byte offset."""

from __future__ import annotations

import os
from pathlib import Path

from textual import on
from textual.widgets import Log
from textual.worker import Worker, WorkerState

from ..messages import LogLines


class LogTail(Log):
    """Shows the last lines of `path` and appends new ones as they are written.

    Reads happen in a thread worker; the next read is armed only after the previous one
    was rendered, so a fast writer can never queue up reads.
    """

    DEFAULT_CSS = """
    LogTail {
        height: 1fr;
    }
    """

    def __init__(self, path: Path, *, interval: float = 0.5, backlog_bytes: int = 64 << 10,
                 max_lines: int = 2000, id: str | None = None) -> None:
        super().__init__(max_lines=max_lines, id=id)
        self.path = Path(path)
        self.interval = interval
        self.backlog_bytes = backlog_bytes
        self._offset: int | None = None  # None: not read yet
        self._ino: int | None = None

    def on_mount(self) -> None:
        self.write_line(f"(waiting for {self.path.name})")
        self._waiting = True
        self._read()

    def _read(self) -> None:
        self.run_worker(self._read_new, thread=True, group="log-tail", exclusive=True, exit_on_error=False)

    def _read_new(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            return
        reset = False
        if self._offset is None or st.st_ino != self._ino or st.st_size < self._offset:
            # first read, or the file was replaced: show only its end
            self._offset, self._ino, reset = max(0, st.st_size - self.backlog_bytes), st.st_ino, True
        if st.st_size == self._offset and not reset:
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read(min(st.st_size - self._offset, 1 << 20))
        start = self._offset
        end = chunk.rfind(b"\n")
        if end < 0:
            if reset:
                self.post_message(LogLines([], reset=True))
            return
        body = chunk[: end + 1]
        if reset and start > 0:
            body = body[body.find(b"\n") + 1:]  # drop the first, partial line
        self._offset = start + end + 1
        text = body.decode(errors="replace")
        # a progress bar redraws with \r: keep what the terminal would show
        lines = [ln.rsplit("\r", 1)[-1] for ln in text.splitlines()]
        self.post_message(LogLines(lines, reset))

    @on(LogLines)
    def _show(self, message: LogLines) -> None:
        message.stop()
        if message.reset or self._waiting:
            self.clear()
            self._waiting = False
        self.write_lines(message.lines)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.app.notify(f"cannot read {self.path}: {event.worker.error}", severity="error")
        if event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED) and self.is_mounted:
            self.set_timer(self.interval, self._read)
