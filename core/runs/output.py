"""A process's output copied into its run's (or evaluation job's) stdout.log."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from core.runs.files import same_file


class tee_to:
    """Copy stdout/stderr into the run's stdout.log, unless they already go there."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        self.file = None

    def __enter__(self):
        if not self.enabled or same_file(sys.stdout, self.path) or self._slurm_forwards():
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a", buffering=1)
        self.saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(sys.stdout, self.file), _Tee(sys.stderr, self.file)
        return self

    def _slurm_forwards(self) -> bool:
        """srun's tasks write to a pipe that Slurm copies into the job's output: the run's own
        stdout.log when core.jobs.slurm_job started them (it says so in SIMCLR_SLURM_OUTPUT)."""
        out = os.environ.get("SIMCLR_SLURM_OUTPUT")
        return bool(out) and os.path.exists(out) and os.path.samefile(out, self.path)

    def __exit__(self, *exc):
        if self.file is not None:
            sys.stdout, sys.stderr = self.saved
            self.file.close()
        return False


class _Tee:
    def __init__(self, stream, file) -> None:
        self.stream, self.file = stream, file

    def write(self, text: str) -> int:
        self.stream.write(text)
        if not self.file.closed:
            self.file.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        if not self.file.closed:
            self.file.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def copy_fds(self) -> list[int]:
        """Where a writer that bypasses Python's streams (core.training.stopping) should also write."""
        return [] if self.file.closed else [self.file.fileno()]


def say(text: str, who: str | None = None) -> None:
    """One timestamped line on stdout (and so in the run's stdout.log): ``[12:03:04] text``,
    or ``[12:03:04] who: text``. What every runner, job and worker says about itself."""
    import time

    print(f"[{time.strftime('%H:%M:%S')}] {f'{who}: ' if who else ''}{text}", flush=True)
