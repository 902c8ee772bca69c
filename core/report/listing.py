"""The records of ``simclr runs`` and ``simclr queue``: one reading of the runs directory each.

Plain data with stable keys (``--format json`` prints them as they are; docs/RUN_DIRECTORY.md
names them); ``core.report.console`` renders them for a terminal. Torch-free, and cheap: a
listing of 50 runs answers in a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.jobs import queue, worker
from core.jobs.launch import with_slurm_states
from core.runs import LIVE_STATES, iter_runs, job_result_path, number, read_json, read_metrics, read_notes, read_sweep

#: the metrics a run's row shows, last value of each
SHOWN_METRICS = ("train/loss", "knn/top1")


_number = number  # garbage in a status or result file reads as absent


def _last_metrics(run_dir: Path) -> dict[str, float]:
    last: dict[str, float] = {}
    for r in read_metrics(run_dir / "metrics.jsonl")[0]:
        if "job" not in r and r["tag"] in SHOWN_METRICS and _number(r["value"]) is not None:
            last[r["tag"]] = r["value"]  # a garbage record is skipped, as the TUI does
    return last


def _top1(result_file: Path) -> int | float | None:
    return _number((read_json(result_file) or {}).get("test_top1"))


def run_records(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every run and evaluation job under ``runs_dir``, one record each (jobs right after their
    run), with the state Slurm gives a Slurm run, a queued run's place, the last loss and kNN
    accuracy, the health verdict (a run's status.json), and the evaluation results (a run: job -> top-1;
    a job: its own top-1)."""
    runs = list(iter_runs(runs_dir, jobs=True))
    runs, slurm = with_slurm_states(runs)
    places = queue.positions(runs_dir, queue.Listing(runs_dir, runs)) if any(r.state == "queued" for r in runs) else {}
    records = []
    for run in runs:
        st = run.status or {}
        parent = run.path.parent.parent if run.is_job else None
        if parent is None:
            last = _last_metrics(run.path)
            tops = {f.stem: _top1(f) for f in sorted((run.path / "eval").glob("*.json"))}
            results: dict[str, float] | float | None = {job: top for job, top in tops.items() if top is not None}
        else:
            last, results = {}, _top1(job_result_path(run.path))
        sweep = read_sweep(parent or run.path)
        note, tags = read_notes(run.path)
        kind = st.get("kind", None if parent else "pretrain")
        records.append({
            "name": f"{parent.name}/eval/{run.name}" if parent else run.name,
            "kind": kind if isinstance(kind, str) else None, "state": run.state,
            "sweep": sweep["sweep"] if sweep else None, "swept": sweep["swept"] if sweep else None,
            "position": places.get(run.name) if parent is None and run.state == "queued" else None,
            "config": run.config,
            **{k: _number(st.get(k)) for k in ("epoch", "total_epochs", "step", "total_steps")},
            "health": run.record.health if run.record else None,
            "health_reason": run.record.health_reason if run.record else None,
            "last": last, "results": results, "note": note, "tags": tags, "slurm": slurm.get(run.path),
            "parent": parent.name if parent else None, "path": str(run.path)})
    return records


def queue_overview(runs_dir: str | Path, listing: queue.Listing | None = None) -> dict[str, Any]:
    """The queue of ``runs_dir``: its worker and slots, what runs now (live, or started by the
    worker and not yet writing), the queued runs in order and the --then jobs waiting; from
    one reading of the runs directory (``listing``, read here if not given)."""
    root = Path(runs_dir)
    listing = listing if listing is not None else queue.Listing(root)
    running = []
    for run in listing.all:
        launch = run.launch or {}
        if run.state in LIVE_STATES or (run.state == "queued" and launch):
            st = run.status or {}
            name = f"{run.path.parent.parent.name}/eval/{run.name}" if run.is_job else run.name
            running.append({"name": name, "kind": st.get("kind", "pretrain"), "state": run.state,
                            "pid": st.get("pid") or launch.get("pid"), "gpu": launch.get("gpu")})
    queued = [{"position": i + 1, "name": e.run, "sweep": e.sweep} for i, e in enumerate(queue.queued(root, listing))]
    jobs = [{"name": e.name, "run": e.run, "command": " ".join(e.argv), "run_state": state,
             "ready": state == "finished"} for e, state in queue.pending_jobs(root, listing)]
    return {"runs_dir": str(root), "worker": worker.worker_info(root), "slots": worker.default_slots(root),
            "running": running, "queued": queued, "jobs": jobs}
