"""`simclr results`: one table over every evaluated run, in the seed's results-table format.

A row per result file ``runs/NAME/eval/<job>.json``: method, batch size, backbone,
projection dim, epochs, optimizer (of pretraining), dataset (evaluated on), top-1 accuracy
(a fraction) and the run's name. ``--group-by sweep|config`` folds the runs of one setting
(the same sweep values, or the same config, seed aside) into one row: the mean top-1 over
them ± its sample standard deviation (n - 1 in the denominator), and n. Output as markdown,
CSV, JSON or a LaTeX tabular (``core.report.tables``, as the TUI's exports). Plain Python,
no torch: cheap for the TUI to call.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.report.groups import differing_keys, setting_of
from core.report.tables import table
from core.runs import iter_runs, number, read_json, read_sweep

COLUMNS = ("Method", "Batch Size", "Backbone", "Projection dim", "Epochs", "Optimizer", "Dataset",
           "Accuracy", "Run")
FORMATS = ("markdown", "csv", "json", "latex")
GROUP_BY = ("sweep", "config")
METRICS = ("test_top1", "test_top5")
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10", "synthetic": "synthetic"}
PROTOCOL_NAMES = {"lbfgs": "L-BFGS", "adam": "Adam"}
OPTIMIZER_NAMES = {"lars": "LARS", "adam": "Adam", "sgd": "SGD"}


def _name(names: dict[str, str], value: Any) -> str:
    return names.get(value, str(value)) if isinstance(value, str) else str(value)


def method(result: dict[str, Any], baseline: str | None) -> str:
    kind = result.get("kind", "")
    settings = result.get("settings") if isinstance(result.get("settings"), dict) else {}
    if kind == "linear-eval":
        protocol = _name(PROTOCOL_NAMES, result.get("protocol"))
        if result.get("protocol") == "adam":
            protocol += f", {settings.get('epochs')} ep."
        base = {"raw-pixels": "Logistic Regression on raw pixels",
                "random-encoder": "Random init + Linear eval."}.get(baseline, "SimCLR + Linear eval.")
        return f"{base} ({protocol})"
    if kind == "finetune":
        who = "Random init" if baseline == "random-encoder" else "SimCLR"
        return f"{who} + Fine-tune ({100 * float(result.get('label_fraction', 0)):g}% labels)"
    if kind == "knn":
        who = {"raw-pixels": "raw pixels", "random-encoder": "Random init"}.get(baseline, "SimCLR")
        return f"{who} + kNN (k={settings.get('k')})"
    return str(kind or "?")


def backbone_name(cfg: dict[str, Any]) -> str:
    name = str(cfg.get("backbone", "?")).replace("resnet", "ResNet")
    return name if cfg.get("width", 64) == 64 else f"{name} (width {cfg.get('width')})"


def dataset_name(result: dict[str, Any]) -> str:
    ds = result.get("dataset", "?")
    if ds == "folder":
        return f"{Path(str(result.get('data_dir', ''))).name or 'folder'} (folder)"
    return _name(DATASET_NAMES, ds)


def row(run: str, cfg: dict[str, Any], baseline: str | None, result: dict[str, Any]) -> dict[str, str]:
    pretrained = baseline is None
    epochs = result.get("pretrain_epoch")
    return {
        "Method": method(result, baseline),
        "Batch Size": str(cfg.get("batch_size", "-")) if pretrained else "-",
        "Backbone": backbone_name(cfg) if baseline != "raw-pixels" else "-",
        "Projection dim": str(cfg.get("projection_dim", "-")) if pretrained else "-",
        "Epochs": str(epochs) if pretrained and epochs is not None else ("0" if baseline == "random-encoder" else "-"),
        "Optimizer": _name(OPTIMIZER_NAMES, cfg.get("optimizer")) if pretrained else "-",
        "Dataset": dataset_name(result),
        "Accuracy": f"{result['test_top1']:.4f}",
        "Run": run,
    }


@dataclass
class Result:
    """One finished evaluation (``runs/NAME/eval/<job>.json``) and what its run says of itself."""

    run: str
    job: str
    config: dict[str, Any]
    result: dict[str, Any]
    sweep: dict[str, Any] | None  # read_sweep's, None for a run made outside a sweep
    cells: dict[str, str]         # the table row
    state: str = "finished"       # the run's state (core.runs.state): a pruned run's results count apart

    def metric(self, name: str) -> float | None:
        return _number(self.result.get(name))


def _number(value: Any) -> float | None:
    return None if (n := number(value)) is None else float(n)


def collect(runs_dir: str | Path) -> list[Result]:
    """Every finished evaluation of every run under ``runs_dir``, by run then job."""
    found = []
    for run in iter_runs(runs_dir):
        eval_dir = run.path / "eval"
        if not eval_dir.is_dir():
            continue
        status, cfg = run.status or {}, run.config or {}
        baseline = status.get("baseline") if status.get("kind") == "baseline" else None
        sweep = read_sweep(run.path)
        for path in sorted(eval_dir.glob("*.json")):
            result = read_json(path)
            if result and _number(result.get("test_top1")) is not None:
                found.append(Result(run.name, path.name[: -len(".json")], cfg, result, sweep,
                                    row(run.name, cfg, baseline, result), run.state))
    return found


@dataclass(frozen=True)
class Pruned:
    """A run its sweep pruned (core.jobs.prune): no group's mean counts it, each says how many."""

    run: str
    config: dict[str, Any]
    sweep: dict[str, Any] | None


def collect_pruned(runs_dir: str | Path) -> list[Pruned]:
    """Every pruned run under ``runs_dir``, evaluated or not."""
    return [Pruned(r.name, r.config or {}, read_sweep(r.path)) for r in iter_runs(runs_dir) if r.state == "pruned"]


def rows(results: list[Result]) -> list[dict[str, Any]]:
    """One record per result: the table's columns, and the run, job, sweep and accuracies."""
    return [{**r.cells, "run": r.run, "job": r.job, "sweep": r.sweep["sweep"] if r.sweep else None,
             **{m: r.metric(m) for m in METRICS}} for r in results]


# ---------------------------------------------------------------------- groups
def _shared(r: Result, by: str) -> dict[str, Any]:
    """What the runs of one group have in common: the swept values or the config, seed aside."""
    return setting_of(r.sweep["swept"] if by == "sweep" else r.config)


def _label(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def groups(results: list[Result], by: str, pruned: list[Pruned] = ()) -> list[dict[str, Any]]:
    """One record per group of results that differ only in their runs' seeds (and device,
    workers), with the same job and the same table row: mean and sample std of each metric.
    Pruned runs (``pruned``: :func:`collect_pruned`, and any result of a pruned run) are left
    out of the means; each group says how many of its setting's runs were pruned
    (``0.5320 ± 0.0040 (n=3, 2 pruned)``).

    ``by="sweep"``: runs with a sweep.json, grouped by sweep and swept values, in the sweep's
    order. ``by="config"``: every run, grouped by config.json; the setting named is the
    config keys that differ between groups.
    """
    if by == "sweep":
        results = [r for r in results if r.sweep]
        pruned = [p for p in pruned if p.sweep]
    cut: dict[str, set[str]] = {}  # a setting -> its pruned runs
    for p in [*pruned, *[r for r in results if r.state == "pruned"]]:
        cut.setdefault(_setting_key(p, by), set()).add(p.run)
    results = [r for r in results if r.state != "pruned"]
    members: dict[str, list[Result]] = {}
    for r in results:
        same_row = {**r.cells, "Accuracy": None, "Run": None}  # protocol, k, epochs ... all equal
        key = [r.sweep["sweep"] if by == "sweep" else None, _shared(r, by), r.job, r.result.get("protocol"), same_row]
        members.setdefault(json.dumps(key, sort_keys=True, default=str), []).append(r)
    found = list(members.values())
    if by == "sweep":
        def place(m: list[Result]) -> tuple:
            indices = [r.sweep["index"] for r in m if r.sweep["index"] is not None]
            return m[0].sweep["sweep"], min(indices, default=float("inf")), m[0].job
        found.sort(key=place)
        differing = None
    else:  # the keys whose values are not the same in every group's config
        differing = differing_keys([_shared(m[0], by) for m in found])
    return [_group_record(m, by, differing, len(cut.get(_setting_key(m[0], by), ()))) for m in found]


def _setting_key(r: Result | Pruned, by: str) -> str:
    shared = setting_of(r.sweep["swept"] if by == "sweep" else r.config)
    return json.dumps([r.sweep["sweep"] if by == "sweep" else None, shared], sort_keys=True, default=str)


def _group_record(m: list[Result], by: str, differing: list[str] | None, pruned: int = 0) -> dict[str, Any]:
    first, n = m[0], len(m)
    if by == "sweep":
        setting = _shared(first, by)
        name = f"{first.sweep['sweep']} [{_label(setting)}]" if setting else first.sweep["sweep"]
    else:
        setting = {k: first.config.get(k) for k in differing}
        name = f"[{_label(setting)}]" if setting else first.run + (f" +{n - 1} more" if n > 1 else "")
    stats: dict[str, float | None] = {}
    for metric in METRICS:
        values = [r.metric(metric) for r in m]
        complete = all(v is not None for v in values)
        stats[f"{metric}_mean"] = statistics.fmean(values) if complete else None
        stats[f"{metric}_std"] = statistics.stdev(values) if complete and n > 1 else None
    mean, std = stats["test_top1_mean"], stats["test_top1_std"]
    accuracy = (f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")
                + f" (n={n}" + (f", {pruned} pruned" if pruned else "") + ")")
    sweeps = {r.sweep["sweep"] if r.sweep else None for r in m}  # by config: one sweep's runs, or not
    return {**first.cells, "Accuracy": accuracy, "Run": name, "n": n, "pruned": pruned, "runs": [r.run for r in m],
            "sweep": sweeps.pop() if len(sweeps) == 1 else None, "setting": setting, "job": first.job,
            "method": first.cells["Method"], "protocol": first.result.get("protocol"), **stats}


# ---------------------------------------------------------------------- output
def render(records: list[dict[str, Any]], fmt: str = "markdown") -> str:
    """Records (of :func:`rows` or :func:`groups`) as a markdown table (the seed's README
    format), CSV, a LaTeX tabular (the table's columns) or JSON (every key)."""
    if fmt == "json":
        return json.dumps(records, indent=2) + "\n"
    return table(COLUMNS, [[r.get(c) for c in COLUMNS] for r in records], fmt)
