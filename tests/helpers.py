"""Helpers shared by the tests (``from tests.helpers import ...``; tests/tui's async,
Pilot-driven ``wait_for`` stays in tests/tui/tui_helpers.py).

- :func:`wait_for`: poll a condition until it holds, optionally watching the process that is
  meant to make it hold; a failing wait says what it waited for.
"""

from __future__ import annotations

import subprocess
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(cond: Callable[[], T], timeout: float = 60.0, proc: subprocess.Popen | None = None,
             what: str = "the condition", interval: float = 0.05) -> T:
    """Call ``cond()`` every ``interval`` seconds until it returns something truthy, and return
    that. Fails (AssertionError) after ``timeout`` seconds, naming ``what`` it waited for, or as
    soon as ``proc``, the process meant to make it true, has ended (with its exit code)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"while waiting for {what}, the watched process (pid {proc.pid}) ended early "
                                 f"with exit code {proc.returncode}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
