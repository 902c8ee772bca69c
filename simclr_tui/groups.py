"""Compared runs grouped by setting: the seeds of one setting side by side as one column.

A sweep member's setting is its sweep and swept values without the seed (sweep.json); any
other run's is its config.json without the keys that do not define a setting (seed, device,
workers). An evaluation job belongs to its run's setting and its own job name, so
``linear-last`` of three seeds is one group. Pure functions of `RunView`s, no widgets.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from core.jobs.sweep import setting_label
from core.report.groups import NOT_A_SETTING, differing_keys

from .store import RunView


@dataclass(frozen=True)
class Group:
    label: str  # what the column says: the values that tell the groups apart
    keys: tuple[str, ...]  # the compared runs in it, in the compare screen's order
    sweep: str | None  # the sweep of its members (None: grouped by config)
    setting: tuple[tuple[str, Any], ...]  # the shared values (swept, or the config), seed aside

    @property
    def n(self) -> int:
        return len(self.keys)


def _run_of(view: RunView, runs: dict[str, RunView]) -> RunView:
    return runs.get(view.parent, view) if view.parent else view


def setting_of(view: RunView, runs: dict[str, RunView]) -> tuple[str | None, dict[str, Any]]:
    """(sweep or None, the values its group shares); an eval job adds its job name."""
    run = _run_of(view, runs)
    if run.sweep:
        sweep, values = run.sweep, {k: v for k, v in run.swept.items() if k not in NOT_A_SETTING}
    else:
        sweep, values = None, {k: v for k, v in (run.config or {}).items() if k not in NOT_A_SETTING}
    if view.parent:
        values = {**values, "job": view.key.rsplit("/", 1)[-1]}
    return sweep, values


def group_runs(keys: list[str], runs: dict[str, RunView]) -> list[Group]:
    """The compared runs' groups, in order of their first member; a run not (yet) in ``runs``
    is a group of its own."""
    found: dict[str, tuple[str | None, dict[str, Any], list[str]]] = {}
    for key in keys:
        view = runs.get(key)
        if view is None:
            found[f"missing:{key}"] = (None, {}, [key])
            continue
        sweep, values = setting_of(view, runs)
        ident = json.dumps([view.kind, sweep, values], sort_keys=True, default=str)
        found.setdefault(ident, (sweep, values, []))[2].append(key)
    entries = list(found.values())
    labels = _labels(entries, runs)
    return [Group(label, tuple(members), sweep, tuple(values.items()))
            for (sweep, values, members), label in zip(entries, labels, strict=True)]


def _labels(entries: list[tuple[str | None, dict[str, Any], list[str]]], runs: dict[str, RunView]) -> list[str]:
    """Each group by the values that differ between the groups (the swept values of a sweep's
    groups); a group nothing tells apart is named by its first run (and how many more)."""
    sweeps = {s for s, _, _ in entries if s}
    differing = differing_keys([v for _, v, _ in entries])
    out = []
    for sweep, values, members in entries:
        if sweep:
            label = setting_label({k: v for k, v in values.items() if k != "job"}) or sweep
            if len(sweeps) > 1 and label != sweep:
                label = f"{sweep} {label}"
            if "job" in values:
                label = f"{label} ▸ {values['job']}"
        else:
            label = ",".join(f"{k}={values[k]}" for k in differing if k in values and k != "job")
            if not label:
                first = runs.get(members[0])
                label = first.name if first else members[0]
                label += f" +{len(members) - 1}" if len(members) > 1 else ""
            elif "job" in values:
                label = f"{label} ▸ {values['job']}"
        out.append(label)
    # a run outside the sweep with a swept setting's values: say which runs it is
    for i, (sweep, _, members) in enumerate(entries):
        if not sweep and out.count(out[i]) > 1:
            first = runs.get(members[0])
            out[i] += f" ({first.name if first else members[0]}{f' +{len(members) - 1}' if len(members) > 1 else ''})"
    return out


def is_grouped(groups: list[Group]) -> bool:
    """Grouping says something: some setting has more than one run."""
    return any(g.n > 1 for g in groups)


def states(group: Group, runs: dict[str, RunView]) -> str:
    """``2 finished, 1 queued``."""
    counts = Counter(runs[k].display_state if k in runs else "missing" for k in group.keys)
    return ", ".join(f"{n} {state}" for state, n in counts.most_common())
