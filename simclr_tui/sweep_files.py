"""The sweeps' own folders (``RUNS/.sweeps/NAME/``: sweep.json, decisions.jsonl), read in the
poll thread.

The plan and the decision log are read with core's readers (`core.jobs.plan.read_plan`,
`core.jobs.prune.read_log`) and described with `core.report.sweeps.describe_plan`, the same
record `simclr sweep show` prints; each file is read again only when its stat changes. The
members' states come from the store's own views (`simclr_tui.sweeps`), not from
`sweep_overview`, which reads every member's metrics from the start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from core.jobs.plan import FOLDER, PLAN, read_plan
from core.jobs.prune import LOG, read_log
from core.report.sweeps import describe_plan

from .views import SweepFiles


def _stamp(path: Path) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


class SweepReader:
    """`read()` -> every sweep folder's `SweepFiles`, by name; call from the poll thread."""

    def __init__(self, runs_dir: str | Path) -> None:
        self.root = Path(runs_dir)
        self._cache: dict[str, tuple[Any, SweepFiles]] = {}

    def read(self) -> dict[str, SweepFiles]:
        folder = self.root / FOLDER
        try:
            names = sorted(p.name for p in folder.iterdir() if p.is_dir())
        except OSError:
            names = []
        out, cache = {}, {}
        for name in names:
            stamps = (_stamp(folder / name / PLAN), _stamp(folder / name / LOG))
            cached = self._cache.get(name)
            if cached is None or cached[0] != stamps:
                plan = read_plan(self.root, name)
                decisions = tuple(vars(d) for d in read_log(folder / name))
                cached = (stamps, SweepFiles(name, plan, decisions, describe_plan(plan)))
            cache[name] = cached
            out[name] = cached[1]
        self._cache = cache
        return out
