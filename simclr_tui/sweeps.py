"""Sweeps in the runs table: one collapsible group row per sweep (pure functions, no widgets).

A sweep's members are ordinary runs whose sweep.json names it (`RunView.sweep`). The group
row says how far the sweep got (members finished / members), what is live or queued, and
its best setting: the swept values without the seed (`core.jobs.sweep.setting_label`) whose
members' mean accuracy is highest. A member's accuracy is the best test top-1 of its
evaluation jobs (linear, fine-tune, kNN), else the best of its kNN monitor; a member its
sweep pruned (state ``pruned``: stopped at a rung) does not count towards its setting's mean.
A sweep with a folder of its own (`SweepFiles`: plan and pruning decisions) also says how many
settings a model-based sampler has still to propose (`core.jobs.plan.to_come`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from statistics import fmean

from core.jobs.plan import to_come
from core.jobs.sweep import setting_label
from core.runs import LIVE_STATES

from .store import RunView
from .views import SweepFiles

#: row keys of group rows; a run name cannot hold ':' (core.runs.check_run_name)
GROUP_PREFIX = "sweep:"
#: an evaluation job kind -> how a sweep's best names its metric
METRIC_NAMES = {"linear-eval": "linear", "finetune": "fine-tune", "knn": "kNN"}


@dataclass(frozen=True)
class SweepGroup:
    name: str
    members: tuple[str, ...]  # run keys, by name
    done: int  # finished
    live: int
    queued: int
    best_setting: str | None = None  # "temperature=0.2" ("" for a sweep over seeds only)
    best_acc: float | None = None  # the mean accuracy of that setting's members
    best_metric: str = ""  # "kNN", "linear", "fine-tune", "kNN monitor"
    best_n: int = 0  # how many of its members had an accuracy
    pruned: int = 0  # members its pruning stopped at a rung
    to_come: int = 0  # settings a model-based sampler has still to propose
    files: SweepFiles | None = None  # its own folder: plan, decisions (None: a sweep made before plans)

    @property
    def key(self) -> str:
        return GROUP_PREFIX + self.name

    def state_text(self) -> str:
        """``2 running 3 queued 1 pruned``; ``sweep`` when nothing is live, waiting or pruned."""
        parts = [f"{n} {what}" for n, what in ((self.live, "running"), (self.queued, "queued"),
                                               (self.pruned, "pruned")) if n]
        return " ".join(parts) or "sweep"

    def progress_text(self) -> str:
        return f"{self.done}/{len(self.members)} done"

    def summary_text(self) -> str:
        """``3/8 done, 2 pruned, 1 running, 2 queued, 4 to come`` (settings still to come)."""
        parts = [self.progress_text()] + [f"{n} {what}" for n, what in ((self.pruned, "pruned"), (
            self.live, "running"), (self.queued, "queued"), (self.to_come, "to come")) if n]
        return ", ".join(parts)

    def best_text(self) -> str:
        """``best temperature=0.2 (kNN 59.6%, n=2)``, or ``mean kNN 59.6% (n=3)`` over seeds only."""
        if self.best_acc is None:
            return ""
        what = f"{self.best_metric} {100 * self.best_acc:.1f}%, n={self.best_n}"
        return f"best {self.best_setting} ({what})" if self.best_setting else f"mean {what}"


def group_key(key: str) -> str | None:
    """The sweep name of a group row's key, else None."""
    return key[len(GROUP_PREFIX):] if key.startswith(GROUP_PREFIX) else None


def member_accuracy(run: RunView, jobs: Iterable[RunView]) -> tuple[float, str] | None:
    """(accuracy, metric name) of one member: its best evaluation job, else its kNN monitor."""
    scored = [(j.best_acc, METRIC_NAMES.get(j.kind, j.kind)) for j in jobs if j.best_acc is not None]
    if scored:
        return max(scored)
    return (run.monitor_acc, "kNN monitor") if run.monitor_acc is not None else None


def summarise(views: dict[str, RunView], files: dict[str, SweepFiles] | None = None) -> dict[str, SweepGroup]:
    """Every sweep among the views, by name; ``files``: the sweeps' own folders (Snapshot.sweeps)."""
    members: dict[str, list[RunView]] = defaultdict(list)
    jobs: dict[str, list[RunView]] = defaultdict(list)
    for v in views.values():
        if v.parent:
            jobs[v.parent].append(v)
        elif v.sweep:
            members[v.sweep].append(v)
    files = files or {}
    return {name: _summary(name, runs, jobs, files.get(name)) for name, runs in sorted(members.items())}


def _summary(name: str, runs: list[RunView], jobs: dict[str, list[RunView]], files: SweepFiles | None) -> SweepGroup:
    runs = sorted(runs, key=lambda v: v.key)
    by_setting: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for v in runs:
        acc = member_accuracy(v, jobs.get(v.key, ())) if v.state != "pruned" else None
        if acc is not None:
            by_setting[setting_label(v.swept)].append(acc)
    best = max(by_setting.items(), key=lambda kv: fmean(a for a, _ in kv[1]), default=None)
    settings = len({setting_label(v.swept) for v in runs})
    group = SweepGroup(name, tuple(v.key for v in runs), done=sum(v.state == "finished" for v in runs),
                       live=sum(v.state in LIVE_STATES for v in runs), queued=sum(v.state == "queued" for v in runs),
                       pruned=sum(v.state == "pruned" for v in runs),
                       to_come=to_come(files.plan, settings) if files else 0, files=files)
    if best is None:
        return group
    setting, accs = best
    metric = Counter(m for _, m in accs).most_common(1)[0][0]
    return replace(group, best_setting=setting, best_acc=fmean(a for a, _ in accs), best_metric=metric,
                   best_n=len(accs))


@dataclass(frozen=True)
class Row:
    """One row of the runs table, in order."""

    key: str
    view: RunView | None = None  # None for a group row
    group: SweepGroup | None = None
    member: bool = False  # a sweep member (or one of its jobs) drawn under its group


def arrange(ordered: list[RunView], groups: dict[str, SweepGroup], expanded: set[str]) -> list[Row]:
    """The table's rows: each sweep as a group row where its first member (in `ordered`) would
    be, then, if expanded, its members in `ordered`'s order, each followed by its jobs."""
    sweep_of = {m: g.name for g in groups.values() for m in g.members}
    in_group: dict[str, list[RunView]] = defaultdict(list)
    for v in ordered:
        name = sweep_of.get(v.parent or v.key)
        if name is not None:
            in_group[name].append(v)
    rows: list[Row] = []
    shown: set[str] = set()
    for v in ordered:
        name = sweep_of.get(v.parent or v.key)
        if name is None:
            rows.append(Row(v.key, v))
            continue
        if name in shown:
            continue
        shown.add(name)
        rows.append(Row(groups[name].key, group=groups[name]))
        if name in expanded:
            rows += _members(in_group[name])
    return rows


def _members(views: list[RunView]) -> list[Row]:
    runs = [v for v in views if v.parent is None]
    jobs: dict[str, list[RunView]] = defaultdict(list)
    for v in views:
        if v.parent is not None:
            jobs[v.parent].append(v)
    rows = []
    for run in runs:
        rows.append(Row(run.key, run, member=True))
        rows += [Row(j.key, j, member=True) for j in jobs.pop(run.key, [])]
    # jobs that matched a filter their run did not: still under the group, with the run's name
    rows += [Row(j.key, j, member=True) for js in jobs.values() for j in js]
    return rows
