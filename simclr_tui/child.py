"""A command the TUI runs in a child process from a worker thread, which another thread may
cancel: what the picture jobs (``simclr views``, ``neighbours``, ``embed``) and the memory
estimate's shape measurement share."""

from __future__ import annotations

import subprocess
import threading

from core.jobs.worker import child_env


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (core's picture commands then remove their temporary files), SIGKILL 2 s later."""
    proc.terminate()
    threading.Timer(2.0, lambda: proc.poll() is None and proc.kill()).start()


class ChildJob:
    """One child process in flight; ``cancel()`` (from any thread) ends it early with ``end``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self.cancelled = False

    def end(self, proc: subprocess.Popen) -> None:
        """How a cancelled or overdue child is ended (default: SIGTERM, then SIGKILL)."""
        stop(proc)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            proc = self._proc
        if proc is not None and proc.poll() is None:
            self.end(proc)

    def spawn(self, argv: list[str]) -> bool:
        """Start ``argv`` (stdout and stderr piped, text); False, starting nothing, once
        cancelled. An OSError from starting it reaches the caller."""
        with self._lock:
            if self.cancelled:
                return False
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env=child_env())
        return True

    def wait(self, timeout: float) -> tuple[str, str, int] | None:
        """The child's (stdout, stderr, exit code); None when it ran past ``timeout`` (then ended)."""
        assert self._proc is not None
        try:
            out, err = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.end(self._proc)
            self._proc.communicate()
            return None
        return out, err, self._proc.returncode
