"""The errors a person must act on: each is printed as one line (`simclr: error: ...`, exit 2).

Every one of them derives from :class:`UserError`, and the command line catches only that
base: a ``ValueError`` (or any other exception) raised by a bug keeps its traceback, and a
run directory it happened in is kept with ``failed`` and the error. Plain Python, so the
command line can catch them without importing torch (the modules that raise them re-export
them where callers expect them: ``core.config.ConfigError``, ``core.jobs.queue.QueueError``...).
"""


class UserError(Exception):
    """Something a person asked for cannot be done as asked; the message says what to do."""


class UsageError(UserError):
    """Bad command-line use (a wrong flag, a flag that needs another)."""


class ConfigError(UserError, ValueError):
    """A config value or file a person must fix (a ValueError too: older callers catch that)."""


class RunNameError(UserError, ValueError):
    """A run name or checkpoint name that is not allowed (a path outside the runs directory)."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, corrupt or not ours."""


class DataError(UserError, RuntimeError):
    """A dataset problem a person must fix."""


class QueueError(UserError, RuntimeError):
    """A queue operation that cannot be done as asked."""


class SlurmError(UserError, RuntimeError):
    """Slurm cannot do what was asked (no sbatch, a refused submission)."""


class RunBusyError(UserError, RuntimeError):
    """Another process is writing this run directory."""


class ExportError(UserError, ValueError):
    """An export that cannot be written as asked (a format, a file that exists)."""


def one_line(e: BaseException) -> str:
    """An exception as one line, ``Type: first line of its message``, for status.json and logs."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
