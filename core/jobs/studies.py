"""Where new runs come from: a run directory claimed for a run, a queued run, a whole sweep.

Every check is made before anything is written, and what is made is all or nothing: a
sweep whose tenth run cannot be queued (or submitted to Slurm) leaves no run directory and
no Slurm job behind. ``simclr pretrain``, ``--queue``, ``--launcher slurm`` and ``simclr
sweep`` call these; the command line only parses flags and prints. Torch-free.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

from core.config import PretrainConfig
from core.errors import UsageError
from core.jobs import queue
from core.jobs.plan import FOLDER, sweep_dir, write_plan
from core.jobs.launch import current_state, slurm_job_of, submit_eval, submit_pretrain
from core.jobs.slurm import SlurmError, SlurmOptions, cancel_job, this_job
from core.jobs.sweep import Member
from core.runs import (LIVE_STATES, check_run_name, claim_run_dir, generate_run_name, is_unstarted, iter_runs,
                       read_json, read_sweep)


# ---------------------------------------------------------------------- one run
def check_free(run_dir: Path, resume: bool) -> None:
    """A new run needs an unstarted directory (empty but for the TUI's stdout.log, notes, or a
    queued run's files: ``core.runs.is_unstarted``); a resumed one a dead writer."""
    if resume:
        state, _, status = current_state(run_dir)  # a Slurm run: Slurm's word, not a pid
        if status.get("launcher") == "slurm" and this_job(status):
            return  # this job's own earlier start, ended by a requeue (the run's lock guards the rest)
        if state in LIVE_STATES:
            raise UsageError(f"{run_dir} is still running (pid {status.get('pid')}"
                             + (f", Slurm job {status['slurm_job_id']}" if status.get("launcher") == "slurm" else "")
                             + f"); stop it before resuming (`simclr stop --run-dir {run_dir}`)")
        if state == "queued" and status.get("launcher") == "slurm":
            raise UsageError(f"{run_dir} waits in Slurm (job {status.get('slurm_job_id')}) and resumes when it "
                             f"starts; `simclr stop --run-dir {run_dir}` cancels it")
    elif not is_unstarted(run_dir):
        raise UsageError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or choose another --run-dir")
    else:
        status = read_json(run_dir / "status.json") or {}
        job = slurm_job_of(status)
        if job is not None and not this_job(status):  # another job's directory, not this job's own start
            state, _, _ = current_state(run_dir)
            if state == "queued" or state in LIVE_STATES:
                raise UsageError(f"{run_dir} is Slurm job {job}'s ({state}); choose another --run-dir, or "
                                 f"`simclr stop --run-dir {run_dir}` first")


def new_run_dir(runs_dir: str | Path, run_dir: str | Path | None, cfg: PretrainConfig, *, queued: bool = False,
                writer: bool = True) -> tuple[Path, bool]:
    """The directory of a new run, checked: ``run_dir`` as given (a valid name, not holding a
    run), or a generated name under ``runs_dir``, claimed. Returns (path, made: this call or
    nothing yet created it, so a set-up error may remove it).

    ``queued``: it goes into the queue of ``runs_dir``, so it must live there and hold no
    queued run either. ``writer=False`` (the ranks of a multi-process run that never write
    the run directory): no check, and a name, never a claim.
    """
    if run_dir is None:
        if not writer:
            return Path(runs_dir) / generate_run_name(runs_dir, cfg.dataset, cfg.backbone), False
        return claim_run_dir(runs_dir, cfg.dataset, cfg.backbone), True
    path = Path(run_dir)
    check_run_name(path.name)
    if queued:
        if Path(runs_dir).resolve() != path.resolve().parent:
            raise UsageError(f"a queued run lives in the queue's runs directory: give --run-dir "
                             f"{Path(runs_dir) / path.name} (or --runs-dir {path.parent})")
        if (path / "status.json").exists() or (path / "config.json").exists():
            raise UsageError(f"{path} already holds a run (queued or not); choose another --run-dir")
    if writer:
        check_free(path, resume=False)
    return path, not path.exists()


def queue_run(runs_dir: str | Path, run_dir: str | Path | None, cfg: PretrainConfig,
              then: list[list[str]]) -> tuple[Path, int | None]:
    """A new run at the end of the queue of ``runs_dir`` (its --then jobs after it): its
    directory and place in the queue."""
    with queue.queue_lock(runs_dir):
        path, _ = new_run_dir(runs_dir, run_dir, cfg, queued=True)
        queue.enqueue(runs_dir, path, cfg, then)
        return path, queue.positions(runs_dir).get(path.name)


def submit_then(run_dir: Path, argv: list[str], opts: SlurmOptions, after: str) -> tuple[str, str]:
    """A --then evaluation of a Slurm run as its own Slurm job, started once the run's job
    ends well (``afterok``: never after a stopped or failed run). Returns (job name, job id)."""
    job, kind = queue.job_name(argv, run_dir), argv[0]  # the status kind an evaluation job writes is its command
    checkpoint = queue._options(argv[1:]).get("--checkpoint", "last")
    job_id = submit_eval(run_dir, job, kind, checkpoint, [argv[0], "--run-dir", str(run_dir.absolute()), *argv[1:]],
                         opts, dependency=f"afterok:{after}")
    return job, job_id


# ---------------------------------------------------------------------- a sweep
def make_sweep(runs_dir: str | Path, name: str, members: list[Member], grid_keys: list[str],
               seeds: list[int] | None, then: list[list[str]], opts: SlurmOptions | None = None,
               plan: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every member of sweep ``name`` as a run of ``runs_dir``: queued (``opts`` None) or
    submitted to Slurm, each followed by the ``then`` evaluations. All or nothing: on any
    failure the jobs submitted are cancelled and the directories made removed.

    ``plan``: the sweep's plan, written to its own folder (core.jobs.plan) before any member.
    A TPE sweep (``plan["sampler"] == "tpe"``, ``members`` empty) starts with its first
    settings proposed by its study (core.jobs.propose).

    Returns member name -> its place in the queue, or its Slurm job id.
    """
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    grid = {k: list(dict.fromkeys(m.swept[k] for m in members)) for k in grid_keys}  # typed, as validated
    with queue.queue_lock(root):
        _check_unused(root, name, members)
        made: list[Path] = []
        jobs: list[str] = []
        try:
            if plan is not None:
                made.append(write_plan(root, name, plan))
            if plan is not None and plan.get("sampler") == "tpe":
                from core.jobs.propose import grow

                placed = grow(root, name, int(plan["startup"]), opts, queue_locked=True)
                if not placed:
                    raise UsageError(f"sweep {name}: the sampler drew no valid setting; widen or fix --space")
                return placed
            pairs = [(m, m.sweep_record(name, len(members), grid, seeds)) for m in members]
            return _make(root, pairs, then, opts, made, jobs)
        except BaseException:  # a sweep half made is not a sweep
            _undo(made, jobs)
            raise


def _make(root: Path, pairs: list[tuple[Member, dict[str, Any]]], then: list[list[str]], opts: SlurmOptions | None,
          made: list[Path], jobs: list[str]) -> dict[str, Any]:
    """Queue or submit each member with its sweep.json record (``made``/``jobs`` grow as it goes,
    for the caller to undo). Call under the queue's lock."""
    placed: dict[str, Any] = {}
    for m, record in pairs:
        check_run_name(m.name)
        made.append(root / m.name)
        if opts is None:
            queue.enqueue(root, root / m.name, m.config, then, record)
            continue
        placed[m.name] = submit_pretrain(root / m.name, m.config, opts, sweep=record)
        jobs.append(placed[m.name])
        jobs += [submit_then(root / m.name, argv, opts, placed[m.name])[1] for argv in then]
    if opts is None:
        where = queue.positions(root)
        placed = {m.name: where.get(m.name) for m, _ in pairs}
    return placed


def _check_unused(root: Path, name: str, members: list[Member]) -> None:
    used = [r.name for r in iter_runs(root) if (read_sweep(r.path) or {}).get("sweep") == name]
    if not used and sweep_dir(root, name).exists():  # a cancelled sweep's folder: no member is left to need it
        shutil.rmtree(sweep_dir(root, name), ignore_errors=True)
    if used:
        raise UsageError(f"sweep {name} already exists in {root} ({len(used)} run(s), e.g. {used[0]}); "
                         f"choose another name, or `simclr queue cancel {name}` to drop its queued runs")
    taken = [m.name for m in members if (root / m.name).exists()]
    if taken:
        raise UsageError(f"sweep {name}: {root / taken[0]} already exists"
                         f"{f' (and {len(taken) - 1} more)' if len(taken) > 1 else ''}; choose another "
                         f"sweep name, or `simclr queue cancel {name}` to drop its queued runs")


def _undo(made: list[Path], jobs: list[str]) -> None:
    for job in jobs:
        with contextlib.suppress(SlurmError):
            cancel_job(job)
    for path in made:
        shutil.rmtree(path, ignore_errors=True)
        if path.parent.name == FOLDER:  # the sweep's own folder: .sweeps/ goes too if it was the only one
            with contextlib.suppress(OSError):
                path.parent.rmdir()
