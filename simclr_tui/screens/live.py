"""The base of every screen that redraws from the app's snapshot after each poll."""

from __future__ import annotations

from textual.css.query import NoMatches
from textual.screen import Screen


class LiveScreen(Screen):
    """A screen the app calls ``refresh_runs()`` on after every poll; subclasses draw in
    ``_refresh_runs()``, which is skipped while the screen is being composed or torn down."""

    def refresh_runs(self) -> None:
        """Show the app's latest snapshot (called after every poll)."""
        if not self.is_mounted:
            return
        try:
            self._refresh_runs()
        except NoMatches:
            pass  # being composed or torn down: the next poll draws it

    def _refresh_runs(self) -> None:
        raise NotImplementedError
