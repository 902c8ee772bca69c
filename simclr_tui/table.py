"""The Runs table's columns and cells: pure functions of `RunView`s and `SweepGroup`s.

The columns that matter most come first so an 80-column terminal shows them without
scrolling sideways: Run, State, H (health), Progress, Loss, Best acc, ETA.
"""

from __future__ import annotations

from typing import Any, Callable

from rich.text import Text

from . import fmt
from .store import RunView
from .sweeps import SweepGroup

#: a sweep with more members than this starts collapsed
COLLAPSE_ABOVE = 4


def _num_key(x: float | None) -> tuple[int, float]:
    return (0, x) if x is not None else (1, 0.0)  # blanks last


#: (key, header, sort key, right-aligned); the columns that matter most come first so an
#: 80-column terminal shows them without scrolling sideways
COLUMNS: list[tuple[str, str, Callable[[RunView], Any], bool]] = [
    ("sel", " ", lambda v: 0, False),
    ("name", "Run", lambda v: v.key, False),
    ("state", "State", lambda v: v.display_state, False),
    ("health", "H", lambda v: v.health or "", False),
    ("progress", "Progress", lambda v: _num_key(v.progress), False),
    ("loss", "Loss", lambda v: _num_key(v.loss), True),
    ("acc", "Best acc", lambda v: _num_key(v.best_acc), True),
    ("eta", "ETA", lambda v: _num_key(v.eta), True),
    ("spark", "Loss curve", lambda v: v.spark, False),
    ("ips", "img/s", lambda v: _num_key(v.images_per_sec), True),
    ("elapsed", "Elapsed", lambda v: _num_key(v.elapsed), True),
    ("kind", "Kind", lambda v: v.kind, False),
    ("dataset", "Data", lambda v: v.dataset, False),
    ("backbone", "Model", lambda v: v.backbone, False),
    ("tags", "Tags", lambda v: v.tags, False),
]
SORTABLE = [c[0] for c in COLUMNS if c[0] not in ("sel", "spark")]


def order_runs(runs: list[RunView], column: str, reverse: bool = False) -> list[RunView]:
    """The table's row order for a sort column.

    By name, each run's evaluation jobs follow it directly, in name order, whichever way the
    runs go (a plain string sort would put "a-b" between "a" and "a/eval/x"). By any other
    column, every row is placed by its own value, name breaking ties.
    """
    if column == "name":
        jobs_in_order = sorted(runs, key=lambda v: (v.parent is not None, v.key))
        return sorted(jobs_in_order, key=lambda v: v.parent or v.key, reverse=reverse)  # stable
    sort_key = next(c[2] for c in COLUMNS if c[0] == column)
    return sorted(runs, key=lambda v: (sort_key(v), v.key), reverse=reverse)


def matches(view: RunView, words: list[str]) -> bool:
    """The filter: every word appears in the name, kind, state, health, dataset, model, sweep,
    tags or note; ``tag:x`` matches only a run tagged exactly x."""
    text = " ".join((view.key, view.kind, view.display_state, view.health or "", view.dataset, view.backbone,
                     view.sweep or "", *view.tags, view.note)).lower()
    tags = {t.lower() for t in view.tags}
    return all(w[4:] in tags if w.startswith("tag:") else w in text for w in (w.lower() for w in words))


def row_name(view: RunView, nested: bool, member: bool) -> str:
    """An eval job right under its run: its own name, indented; a sweep member: indented, its
    name without the sweep's (``temperature=0.1,seed=0``)."""
    indent = "  " if member else ""
    if nested:
        return indent + "  └ " + view.key.rsplit("/", 1)[-1]
    if member and view.sweep and view.key.startswith(f"{view.sweep}-"):
        return indent + view.key[len(view.sweep) + 1:]
    return indent + view.name


def row_cells(view: RunView, selected: bool, nested: bool = False, member: bool = False) -> list[Any]:
    """The table cells of one run (strings or Rich Text), in COLUMNS order."""
    right = {c[0] for c in COLUMNS if c[3]}
    queued = view.state == "queued"
    raw = {
        "sel": Text("●", style="bold green") if selected else " ",
        "name": row_name(view, nested, member),
        "kind": view.kind,
        "state": fmt.state_text(view.display_state),
        "health": fmt.health_badge(view.health),
        "dataset": view.dataset or "–",
        "backbone": view.backbone or "–",
        "progress": (fmt.slurm_place(view.slurm.job_id, view.slurm.pending) if view.slurm else
                     fmt.queue_place(view.position)) if queued else
        f"{fmt.progress(view.epoch, view.total_epochs):>7} {fmt.bar(view.progress, 6)}",
        "loss": fmt.number(view.loss),
        "acc": fmt.percent(view.best_acc),
        "ips": fmt.throughput(view.images_per_sec),
        "elapsed": fmt.duration(view.elapsed),
        "eta": fmt.duration(view.eta) if view.live else "",
        "spark": Text(view.spark, style="cyan"),
        "tags": Text(fmt.tags(view.tags)),  # user text: never markup
    }
    return [Text(raw[k], justify="right") if k in right else raw[k] for k, *_ in COLUMNS]


def group_cells(group: SweepGroup, expanded: bool, selected: int) -> list[Any]:
    """The cells of a sweep's group row; `selected`: how many of its members are selected."""
    mark = " " if not selected else "●" if selected == len(group.members) else "◐"
    raw: dict[str, Any] = {
        "sel": Text(mark, style="bold green"),
        "name": Text(("▾ " if expanded else "▸ ") + group.name, style="bold"),
        "state": Text(group.state_text(), style=fmt.GROUP_STYLE),
        "progress": group.progress_text(),
        "acc": Text(fmt.percent(group.best_acc) if group.best_acc is not None else "", justify="right"),
        "spark": " · ".join(t for t in (group.summary_text(), group.best_text()) if t),
        "kind": "sweep",
    }
    return [raw.get(k, "") for k, *_ in COLUMNS]
