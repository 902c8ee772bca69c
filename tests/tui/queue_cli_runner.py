"""The TUI's runner in the queue tests: the real `python -m core` for the commands that only
write queued run directories, the fake runner for everything that would train.

`sweep ...` and `pretrain ... --queue` run `core.cli.main` (torch-free, well under a second)
with `core.jobs.worker.ensure_worker` switched off, so queueing never starts a worker here and no
real training begins: the app's own worker start (`make_app(start_worker=...)`) decides.
Everything else goes to `fake_runner.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]


def main(argv: list[str]) -> int:
    if argv[:1] == ["sweep"] or (argv[:1] == ["pretrain"] and "--queue" in argv):
        import core.jobs.worker
        from core.cli import main as cli_main

        core.jobs.worker.ensure_worker = lambda *args, **kwargs: None
        return cli_main(argv)
    import fake_runner

    return fake_runner.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
