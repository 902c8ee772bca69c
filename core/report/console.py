"""The records of ``core.report.listing`` for a terminal: the runs table and the queue's lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.report.states import state_style

#: the narrowest each column gets before the name gives way
_WIDTHS = {"kind": 8, "state": 8, "health": 6, "epoch": 5, "loss": 5, "kNN": 5, "top-1": 5}
_NUMBERS = ("epoch", "loss", "kNN", "top-1")


def _progress(rec: dict[str, Any], kind: str) -> str:
    """A queued run's place, a Slurm job still waiting, or a run's epoch/epochs."""
    if rec["position"] is not None:
        return f"#{rec['position']}"
    if rec["slurm"] and rec["state"] == "queued":
        return f"job {rec['slurm']['job_id']}"
    if kind == "pretrain":
        return "/".join("" if rec[k] is None else str(rec[k]) for k in ("epoch", "total_epochs"))
    return ""


def _cells(rec: dict[str, Any]) -> list[Any]:
    from rich.text import Text

    cfg, last, is_job = rec["config"] or {}, rec["last"], rec["parent"] is not None
    name = Path(rec["path"]).name
    kind = (rec["kind"] or "?").removesuffix("-eval")
    # a run's best evaluation result, from its jobs' result files; a job's own
    top1 = rec["results"] if is_job else max(rec["results"].values(), default=None)
    return [f"└ {name}" if is_job else name, kind, Text(rec["state"], style=state_style(rec["state"])),
            "" if is_job else (rec["health"] or "-").replace(" ", "-"),  # one token: not-learning
            "" if is_job else f"{cfg.get('dataset', '')}/{cfg.get('backbone', '')}",
            _progress(rec, kind), f"{last['train/loss']:.3f}" if "train/loss" in last else "",
            f"{last['knn/top1']:.3f}" if "knn/top1" in last else "", f"{top1:.3f}" if top1 is not None else ""]


def runs_table(records: list[dict[str, Any]], runs_dir: str | Path):
    """``simclr runs``: a Rich table, one row per run and job (jobs indented under their run)."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"runs in {runs_dir}", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    # the name is what people look for: it keeps its width, the other columns give way
    names = [Path(r["path"]).name for r in records]
    table.add_column("name", no_wrap=True, min_width=min(32, max((len(n) + 2 for n in names), default=4)))
    for col in ("kind", "state", "health", "data/model", *_NUMBERS):
        # data/model is the one column rich may narrow (it never wraps: no spaces, ellipsis);
        # with every column no_wrap, rich would cut the last one, top-1, instead
        table.add_column(col, no_wrap=col != "data/model", min_width=_WIDTHS.get(col), overflow="ellipsis",
                         max_width=16 if col == "data/model" else None,
                         justify="right" if col in _NUMBERS else "left")
    for rec in records:
        table.add_row(*_cells(rec))
    return table


def queue_lines(data: dict[str, Any], has_work: bool) -> list[str]:
    """``simclr queue``: a summary line, then what runs, what is queued and the jobs waiting."""
    root, worker = data["runs_dir"], data["worker"]
    running, queued, jobs = data["running"], data["queued"], data["jobs"]
    w = (f"worker pid {worker.get('pid')}, {worker.get('slots')} slot(s)" if worker else
         "no worker" + (f" (start one: simclr queue work --runs-dir {root})" if has_work else ""))
    lines = [f"queue of {root}: {len(queued)} queued, {len(running)} running, {len(jobs)} job(s) waiting; {w}"]
    for r in running:
        lines.append(f"  running  {r['name']}  ({r['kind']}, pid {r['pid']}" + (f", GPU {r['gpu']})" if r["gpu"] else ")"))
    for q in queued:
        lines.append(f"  #{q['position']:<6} {q['name']}" + (f"  [sweep {q['sweep']}]" if q["sweep"] else ""))
    for j in jobs:
        why = "ready" if j["ready"] else "never: its run was pruned" if j["run_state"] == "pruned" else \
            "after the run, now " + j["run_state"]
        lines.append(f"  then     {j['name']}  ({why})")
    return lines
