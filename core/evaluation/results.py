"""`simclr results`: one table over every evaluated run, in the seed's results-table format.

A row per result file ``runs/NAME/eval/<job>.json``: method, batch size, backbone,
projection dim, epochs, optimizer (of pretraining), dataset (evaluated on), top-1 accuracy
(a fraction) and the run's name. Plain Python, no torch: cheap for the TUI to call.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..rundir import iter_runs, read_json

COLUMNS = ("Method", "Batch Size", "Backbone", "Projection dim", "Epochs", "Optimizer", "Dataset",
           "Accuracy", "Run")
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10", "synthetic": "synthetic"}
PROTOCOL_NAMES = {"lbfgs": "L-BFGS", "adam": "Adam"}
OPTIMIZER_NAMES = {"lars": "LARS", "adam": "Adam", "sgd": "SGD"}


def method(result: dict[str, Any], baseline: str | None) -> str:
    kind = result.get("kind", "")
    if kind == "linear-eval":
        protocol = PROTOCOL_NAMES.get(result.get("protocol"), result.get("protocol"))
        if result.get("protocol") == "adam":
            protocol += f", {result.get('settings', {}).get('epochs')} ep."
        base = {"raw-pixels": "Logistic Regression on raw pixels",
                "random-encoder": "Random init + Linear eval."}.get(baseline, "SimCLR + Linear eval.")
        return f"{base} ({protocol})"
    if kind == "finetune":
        who = "Random init" if baseline == "random-encoder" else "SimCLR"
        return f"{who} + Fine-tune ({100 * float(result.get('label_fraction', 0)):g}% labels)"
    if kind == "knn":
        who = {"raw-pixels": "raw pixels", "random-encoder": "Random init"}.get(baseline, "SimCLR")
        return f"{who} + kNN (k={result.get('settings', {}).get('k')})"
    return kind or "?"


def backbone_name(cfg: dict[str, Any]) -> str:
    name = str(cfg.get("backbone", "?")).replace("resnet", "ResNet")
    return name if cfg.get("width", 64) == 64 else f"{name} (width {cfg.get('width')})"


def dataset_name(result: dict[str, Any]) -> str:
    ds = result.get("dataset", "?")
    if ds == "folder":
        return f"{Path(str(result.get('data_dir', ''))).name or 'folder'} (folder)"
    return DATASET_NAMES.get(ds, ds)


def row(run: str, cfg: dict[str, Any], baseline: str | None, result: dict[str, Any]) -> dict[str, str]:
    pretrained = baseline is None
    epochs = result.get("pretrain_epoch")
    return {
        "Method": method(result, baseline),
        "Batch Size": str(cfg.get("batch_size", "-")) if pretrained else "-",
        "Backbone": backbone_name(cfg) if baseline != "raw-pixels" else "-",
        "Projection dim": str(cfg.get("projection_dim", "-")) if pretrained else "-",
        "Epochs": str(epochs) if pretrained and epochs is not None else ("0" if baseline == "random-encoder" else "-"),
        "Optimizer": OPTIMIZER_NAMES.get(cfg.get("optimizer"), str(cfg.get("optimizer"))) if pretrained else "-",
        "Dataset": dataset_name(result),
        "Accuracy": f"{result['test_top1']:.4f}",
        "Run": run,
    }


def collect(runs_dir: str | Path) -> list[dict[str, str]]:
    """Rows for every finished evaluation of every run under ``runs_dir``, by run then job."""
    rows = []
    for run in iter_runs(runs_dir):
        eval_dir = run.path / "eval"
        if not eval_dir.is_dir():
            continue
        status = run.status or {}
        baseline = status.get("baseline") if status.get("kind") == "baseline" else None
        for path in sorted(eval_dir.glob("*.json")):
            result = read_json(path)
            if result and isinstance(result.get("test_top1"), (int, float)):
                rows.append(row(run.name, run.config or {}, baseline, result))
    return rows


def render(rows: list[dict[str, str]], fmt: str = "markdown") -> str:
    """The rows as a markdown table (the seed's README format) or CSV."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(" --- " for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"
