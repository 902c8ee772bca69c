"""What every command line of the runner shares: the parser whose errors are one line."""

from __future__ import annotations

import argparse
import signal
import sys

from core.errors import UsageError


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other usage error
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def end_on_sigterm() -> None:
    """A SIGTERM ends the command as an exception (exit 143), so its ``finally`` blocks remove
    the temporary files it was writing; the TUI stops a superseded picture command this way."""
    def end(signum, frame):
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, end)
