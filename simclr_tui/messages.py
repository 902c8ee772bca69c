"""Messages the workers post to the UI thread. Each is a small dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from .launcher import Exited, Launched
from .store import Snapshot


@dataclass
class RunsRefreshed(Message):
    """A poll of the runs directory finished. A newer one replaces one not yet handled."""

    snapshot: Snapshot
    exits: tuple[Exited, ...] = ()

    def can_replace(self, message: Message) -> bool:
        """A newer snapshot supersedes this one; the children that ended are carried over."""
        if isinstance(message, RunsRefreshed):
            message.exits = self.exits + message.exits
            return True
        return False


@dataclass
class JobLaunched(Message):
    """A subprocess was started; `what` says which action started it."""

    launched: Launched
    what: str


@dataclass
class LogLines(Message):
    """New lines of a stdout.log for a LogTail widget."""

    lines: list[str]
    reset: bool = False


@dataclass
class TensorBoardStarted(Message):
    url: str


@dataclass
class RunDeleted(Message):
    key: str


@dataclass
class RunsEdited(Message):
    """Queued runs were cancelled or moved, or a run's notes were saved (a thread worker did
    it): poll, and check the queue worker, now. `removed`: run keys whose directories went."""

    text: str = ""
    removed: tuple[str, ...] = ()
