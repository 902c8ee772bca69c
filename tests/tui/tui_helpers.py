"""Helpers shared by the TUI tests (imported as a plain module: tests/tui is on sys.path)."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import Callable

from rich.console import Console
from textual.widgets import DataTable

FAKE_RUNNER = [sys.executable, str(Path(__file__).with_name("fake_runner.py"))]


async def wait_for(pilot, cond: Callable[[], object], timeout: float = 15.0, what: str = "condition"):
    """Let the app run until cond() is truthy (checking every 50 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def wait_screen(pilot, cls, selector: str | None = None, timeout: float = 15.0):
    """The active screen once it is a `cls` and composed (`selector` matches), pushed screens
    being composed a moment after they become `app.screen`."""
    app = pilot.app

    def ready():
        screen = app.screen
        if isinstance(screen, cls) and screen.is_mounted and (selector is None or screen.query(selector)):
            return screen
        return None

    return await wait_for(pilot, ready, timeout, what=f"{cls.__name__} screen")


async def cursor_to(pilot, key: str) -> None:
    """Put the Runs table's cursor on the row of run ``key`` (once it is listed)."""
    screen = pilot.app.screen
    await wait_for(pilot, lambda: key in screen._order, what=f"row {key}")
    table = screen.query_one("#runs", DataTable)
    table.focus()
    table.move_cursor(row=screen._order.index(key))
    await pilot.pause()


def screen_text(app) -> str:
    """The current screen as plain text, the way a terminal shows it."""
    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(), record=True,
                      force_terminal=True, color_system=None, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()




async def wait_text(pilot, *needles: str, timeout: float = 15.0, what: str | None = None) -> str:
    """The screen's text once it shows every one of ``needles`` in one read (so the rest of it
    is from the same frame): the screen repaints after the state changes, and a fixed pause
    raced under load."""
    def shown():
        text = screen_text(pilot.app)
        return text if all(n in text for n in needles) else ""

    return await wait_for(pilot, shown, timeout, what=what or " and ".join(map(repr, needles)))
