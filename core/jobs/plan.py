"""A sweep's own folder, ``RUNS/.sweeps/NAME/``: what the sweep is, beyond its runs.

    sweep.json       the plan, written once by ``simclr sweep`` (core.jobs.studies): how
                     members are made (a grid, or N draws from a space by a sampler), the
                     seeds, the pruning rule, the flags every member shares and its --then jobs
    decisions.jsonl  the pruning decisions (core.jobs.prune), one line each
    optuna.journal   the Optuna study of a sampled sweep (core.jobs.propose): one trial per
                     setting, several processes and hosts may write it

Each member is an ordinary run directory with its own sweep.json (name, index, swept
values). The folder is hidden so the runs directory lists runs only; a reader that does not
know a sweep (the TUI without Optuna, TensorBoard) needs nothing here to show a run.
Torch-free, Optuna-free.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from core.runs import RunInfo, atomic_write_json, iter_runs, read_json, read_sweep

FOLDER = ".sweeps"
PLAN = "sweep.json"


def sweep_dir(runs_dir: str | Path, name: str) -> Path:
    """The sweep's own folder: its plan, decision log and study storage."""
    return Path(runs_dir) / FOLDER / name


def write_plan(runs_dir: str | Path, name: str, plan: dict[str, Any]) -> Path:
    folder = sweep_dir(runs_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / PLAN, {"sweep": name, "created": time.time(), **plan})
    return folder


def read_plan(runs_dir: str | Path, name: str) -> dict[str, Any] | None:
    """The plan of sweep ``name``, or None (an older sweep made before plans, or none)."""
    plan = read_json(sweep_dir(runs_dir, name) / PLAN)
    return plan if plan and plan.get("sweep") == name else None


def sweep_names(runs_dir: str | Path) -> list[str]:
    """Sweeps that have a plan in ``runs_dir``, oldest first."""
    root = Path(runs_dir) / FOLDER
    if not root.is_dir():
        return []
    plans = [(p.get("created", 0), p["sweep"]) for d in root.iterdir() if (p := read_plan(runs_dir, d.name))]
    return [name for _, name in sorted(plans)]


def to_come(plan: dict[str, Any] | None, made_settings: int = 0) -> int:
    """Settings a model-based sampler has still to propose: 0 for a grid or random draws, or
    once the sweep stopped proposing. Counted by the plan's ``proposed`` (settings made, kept
    by core.jobs.propose), else by ``made_settings`` (a plan written before the count)."""
    if not plan or plan.get("sampler") != "tpe" or plan.get("stopped"):
        return 0
    made = plan["proposed"] if isinstance(plan.get("proposed"), int) else made_settings
    return max(0, int(plan.get("sample") or 0) - made)


def members(runs_dir: str | Path, name: str) -> list[tuple[RunInfo, dict[str, Any]]]:
    """Every member run of sweep ``name`` (read once, its state decided) and its sweep.json record."""
    return [(r, s) for r in iter_runs(runs_dir) if (s := read_sweep(r.path)) and s["sweep"] == name]
