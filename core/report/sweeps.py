"""``simclr sweep show NAME``: one sweep, its members and its pruning decisions.

:func:`sweep_overview` is plain data with stable keys (``--format json`` prints it as it is;
docs/RUN_DIRECTORY.md names them), :func:`sweep_lines` renders it for a terminal. Torch-free
and Optuna-free: the TUI shows the same from the same record.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from core.errors import UsageError
from core.jobs.launch import with_slurm_states
from core.jobs.plan import members, read_plan, sweep_dir, sweep_names, to_come
from core.jobs.prune import read_log, setting_of
from core.report.listing import _last_metrics
from core.runs import iter_runs, read_sweep
from core.runs.state import LIVE_STATES


def sweep_members(root: Path, name: str) -> list[tuple[Any, dict[str, Any]]]:
    """(RunInfo, its sweep record) of every member of sweep ``name``, by index."""
    runs = members(root, name)
    if not runs:
        return []
    infos, _ = with_slurm_states([r for r, _ in runs])
    return sorted(zip(infos, [s for _, s in runs]), key=lambda rs: (rs[1]["index"] is None, rs[1]["index"] or 0))


def sweep_overview(runs_dir: str | Path, name: str) -> dict[str, Any]:
    """The sweep's plan, members (state, setting, seed, epoch, last kNN top-1), counts by
    state, settings still to come (a model-based sampler), and its decision log."""
    root = Path(runs_dir)
    plan = read_plan(root, name)
    members = sweep_members(root, name)
    if plan is None and not members:
        known = sweep_names(root) or sorted({s["sweep"] for r in iter_runs(root) if (s := read_sweep(r.path))})
        raise UsageError(f"no sweep {name} in {root}" + (f"; its sweeps: {', '.join(known)}" if known else
                                                         "; make one with `simclr sweep NAME --grid ...`"))
    rows = []
    for run, rec in members:
        st = run.record
        rows.append({"run": run.name, "index": rec["index"], "state": run.state, "reason": run.reason,
                     "setting": setting_of(rec["swept"]), "seed": rec["swept"].get("seed"), "swept": rec["swept"],
                     "epoch": st.epoch if st else None, "total_epochs": st.total_epochs if st else None,
                     "knn_top1": _last_metrics(run.path).get("knn/top1"), "note": st.note if st else None})
    counts = Counter(r["state"] for r in rows)
    settings = {r["setting"] for r in rows}
    decisions = [vars(d) for d in read_log(sweep_dir(root, name))]
    return {"sweep": name, "runs_dir": str(root), "plan": plan, "members": rows, "counts": dict(counts),
            "settings": len(settings), "to_come": to_come(plan, len(settings)),
            "pruned": sum(r["state"] == "pruned" for r in rows), "decisions": decisions}


def describe_plan(plan: dict[str, Any] | None) -> str:
    """``grid temperature x lr, seeds 0,1; asha on knn_top1, rungs at epochs 1, 2 (eta 2)``."""
    if not plan:
        return "made before sweeps kept a plan"
    if plan.get("mode") == "sample":
        made = f"{plan.get('sample')} settings drawn by {plan.get('sampler')} (sweep seed {plan.get('sweep_seed')}) " \
               f"from {', '.join(plan.get('space') or {})}"
    else:
        made = "grid " + " x ".join(plan.get("grid") or {}) if plan.get("grid") else "seeds only"
    seeds = plan.get("seeds")
    text = made + (f", seeds {','.join(map(str, seeds))}" if seeds else "")
    prune = plan.get("prune")
    if prune:
        text += (f"; prune {prune['rule']} on {prune['metric']} from epoch {prune['min_epochs']} "
                 f"(reduction factor {prune['reduction_factor']})")
    return text


def _f(v: Any, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns two spaces apart."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]


def short_setting(swept: dict[str, Any]) -> str:
    """A setting for the eye: floats to 4 significant digits (``lr=0.001264``), the seed left out."""
    return ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in swept.items() if k != "seed") or "(base)"


def sweep_lines(data: dict[str, Any]) -> list[str]:
    """The overview as terminal lines: a header, the members table, the decision log."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(data["counts"].items()))
    live = sum(data["counts"].get(s, 0) for s in LIVE_STATES)
    head = [f"sweep {data['sweep']} in {data['runs_dir']}: {describe_plan(data['plan'])}",
            f"{len(data['members'])} member(s) ({counts or 'none yet'}); {live} running"
            + (f"; {data['to_come']} setting(s) still to come" if data["to_come"] else "")]
    members = table(["RUN", "STATE", "SETTING", "SEED", "EPOCH", "KNN TOP-1"],
                    [[m["run"], m["state"], short_setting(m["swept"]), _f(m["seed"]),
                      f"{_f(m['epoch'], 2)}/{_f(m['total_epochs'], 0)}" if m["epoch"] is not None else "-",
                      _f(m["knn_top1"])] for m in data["members"]])
    lines = head + [""] + members
    if data["decisions"]:
        lines += ["", f"pruning decisions ({len(data['decisions'])}):"]
        lines += table(["RUNG", "EPOCH", "MEMBER", "VALUE", "SETTING MEAN", "CUTOFF", "DECISION", "COMPARED"],
                       [[str(d["rung"]), str(d["epoch"]), d["member"], _f(d["value"]),
                         f"{_f(d['setting_value'])} (n={d['seeds_in_mean']})", _f(d["cutoff"]),
                         "prune" if d["prune"] else "go on", str(len(d["compared"]))] for d in data["decisions"]])
    return lines
