"""What every command line of the runner shares: the parser whose errors are one line."""

from __future__ import annotations

import argparse

from core.errors import UsageError


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other usage error
        raise UsageError(f"{message} (see `{self.prog} --help`)")
