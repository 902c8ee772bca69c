"""The colour of each run state (core.runs.state): one map for ``simclr runs`` and the TUI.

Rich styles. A dead run (``crashed``, resumable) looks unlike one that ``failed`` (an error
to read), and ``damaged`` (a status.json nobody can read) unlike both.
"""

from __future__ import annotations

STATE_STYLES = {
    "queued": "medium_purple1",
    "starting": "bold cyan",
    "running": "bold green",
    "finished": "blue",
    "failed": "bold red",
    "stopped": "yellow",
    "pruned": "dark_orange3",
    "crashed": "bold magenta",
    "damaged": "bold white on red",
}


def state_style(state: str) -> str:
    """The style of a state as shown (``queued #3`` is queued's); "" for one not known."""
    return STATE_STYLES.get(state.split(" ")[0], "")
