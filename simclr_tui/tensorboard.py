"""TensorBoard as a child process of the TUI, bound to localhost, stopped on exit."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class TensorBoardError(RuntimeError):
    """TensorBoard could not start; the message says why and what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tensorboard_program() -> list[str] | None:
    """How to run TensorBoard here: the console script, else the module, else None."""
    exe = shutil.which("tensorboard")
    if exe:
        return [exe]
    if importlib.util.find_spec("tensorboard") is not None:
        return [sys.executable, "-m", "tensorboard.main"]
    return None


class TensorBoard:
    """One TensorBoard over the runs directory. `start` blocks (call it from a worker)."""

    HOST = "127.0.0.1"

    def __init__(self, logdir: Path, program: list[str] | None = None, startup_timeout: float = 30.0) -> None:
        self.logdir = Path(logdir)
        self.program = program
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self._log = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> str:
        """Start and wait until the port answers; returns the URL or raises TensorBoardError."""
        if self.running:
            return self.url or ""
        program = self.program if self.program is not None else tensorboard_program()
        if not program:
            raise TensorBoardError("TensorBoard is not installed: `pip install tensorboard`, then press t again")
        port = free_port(self.HOST)
        argv = [*program, "--logdir", str(self.logdir), "--host", self.HOST, "--port", str(port)]
        self._log = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        except OSError as e:
            raise TensorBoardError(f"cannot start TensorBoard ({argv[0]}): {e.strerror or e}") from None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                out = self._read_log().strip()
                self.proc = None
                last = out.splitlines()[-1] if out else f"exit code {rc}"
                raise TensorBoardError(f"TensorBoard exited at startup: {last}")
            try:
                with socket.create_connection((self.HOST, port), timeout=0.5):
                    self.url = f"http://{self.HOST}:{port}/"
                    return self.url
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise TensorBoardError(f"TensorBoard did not answer on port {port} within {self.startup_timeout:.0f} s")

    def _read_log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        proc, self.proc, self.url = self.proc, None, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=3)
            except (ProcessLookupError, PermissionError):
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=3)
        if self._log is not None:
            self._log.close()
            self._log = None
