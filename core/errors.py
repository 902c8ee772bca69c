"""The errors a person must act on: each is printed as one line (`simclr: error: ...`, exit 2).

Plain Python, so the command line can catch them without importing torch (the modules that
raise them, ``checkpoint`` and ``data``, re-export them).
"""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt or not ours; the message says what to do."""


class DataError(RuntimeError):
    """A dataset problem a person must fix; the message says how."""
