"""The numbers the Compare screen shows and exports: per run, and per group of seeds.

A metric is read from a run's view and series (bounded histories, with the exact extremes
and last value); a group's is the mean ± sample std of its members' values (members without
the metric are left out, and n says how many counted; members their sweep pruned, stopped at
a rung, are left out too and counted apart: ``0.532 ± 0.004 (n=3, 2 pruned)``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any

from .aggregate import Stat, mean_std
from .groups import Group
from .series import SeriesData
from .store import RunView

Series = dict[str, SeriesData]


def best(series: Series, base: str) -> float | None:
    """The highest value of a tag, over the run's own records and its eval jobs' (``tag@job``)."""
    vals = [s.vmax for t, s in series.items() if t.split("@")[0] == base and s.vmax is not None]
    return max(vals) if vals else None


def final(series: Series, tag: str) -> float | None:
    s = series.get(tag)
    return s.last if s is not None else None


def lowest(series: Series, tag: str) -> float | None:
    s = series.get(tag)
    return s.vmin if s is not None else None


@dataclass(frozen=True)
class Metric:
    key: str  # the CSV column
    label: str  # the table row
    read: Callable[[RunView, Series], float | None]
    accuracy: bool  # a fraction shown as a percentage


METRICS: tuple[Metric, ...] = (
    Metric("final_loss", "final loss", lambda v, s: v.loss, False),
    Metric("lowest_loss", "lowest loss", lambda v, s: lowest(s, "train/loss"), False),
    Metric("best_acc", "best acc", lambda v, s: v.best_acc, True),
    Metric("best_knn_top1", "best kNN top-1", lambda v, s: best(s, "knn/top1"), True),
    Metric("final_knn_top1", "final kNN top-1", lambda v, s: final(s, "knn/top1"), True),
    Metric("best_linear_top1", "best linear top-1", lambda v, s: best(s, "linear/test_top1"), True),
    Metric("best_finetune_top1", "best fine-tune top-1", lambda v, s: best(s, "finetune/test_top1"), True),
)
#: what a group column shows (the per-run table has every metric)
GROUP_METRICS = ("final_loss", "best_acc", "best_knn_top1", "best_linear_top1", "best_finetune_top1")


def run_values(view: RunView | None, series: Series) -> dict[str, float | None]:
    return {m.key: (m.read(view, series) if view else None) for m in METRICS}


def pruned_keys(keys: list[str], runs: dict[str, RunView]) -> set[str]:
    """The runs (and their evaluation jobs) that their sweep pruned: state ``pruned``."""
    def run_of(view: RunView) -> RunView:
        return runs.get(view.parent, view) if view.parent else view
    return {k for k in keys if k in runs and run_of(runs[k]).state == "pruned"}


def group_stats(group: Group, values: dict[str, dict[str, float | None]],
                pruned: Collection[str] = ()) -> dict[str, Stat | None]:
    """Each metric's mean ± std over the group's members, those in ``pruned`` left out and counted."""
    kept = [k for k in group.keys if k not in pruned]
    left_out = len(group.keys) - len(kept)
    stats = {m.key: mean_std(values.get(k, {}).get(m.key) for k in kept) for m in METRICS}
    return {key: replace(s, pruned=left_out) if s is not None else None for key, s in stats.items()}


def stat_text(metric: Metric, stat: Stat | None) -> str:
    """``4.033 ± 0.012 (n=3)``, accuracies ``71.1 ± 0.4% (n=3)``; ``–`` when no member has it."""
    if stat is None:
        return "–"
    return stat.text(1, 100.0, "%") if metric.accuracy else stat.text(3)


def metric(key: str) -> Metric:
    return next(m for m in METRICS if m.key == key)


def csv_records(keys: list[str], names: dict[str, str], states: dict[str, str], groups: list[Group],
                values: dict[str, dict[str, float | None]],
                pruned: Collection[str] = ()) -> tuple[list[str], list[list[Any]]]:
    """One row per run, then one per group (only when some group has several runs): raw
    numbers (accuracies as fractions), a group's as mean with its std and n (pruned runs
    left out of it, as on screen)."""
    header = ["level", "name", "group", "n", "state"]
    for m in METRICS:
        header += [m.key, f"{m.key}_std", f"{m.key}_n"]
    group_of = {k: g.label for g in groups for k in g.keys}
    rows: list[list[Any]] = []
    for key in keys:
        row: list[Any] = ["run", names.get(key, key), group_of.get(key, ""), 1, states.get(key, "")]
        for m in METRICS:
            v = values.get(key, {}).get(m.key)
            row += [v, None, None if v is None else 1]
        rows.append(row)
    if any(g.n > 1 for g in groups):
        for g in groups:
            stats = group_stats(g, values, pruned)
            row = ["group", g.label, g.label, g.n, ""]
            for m in METRICS:
                s = stats[m.key]
                row += [None, None, 0] if s is None else [s.mean, s.std, s.n]
            rows.append(row)
    return header, rows
