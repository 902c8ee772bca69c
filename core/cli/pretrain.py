"""`simclr pretrain`: a run now, a resume, a queued run (--queue, --then) or a Slurm job.

Exit codes: 0 done or stopped, 1 failed while training, 2 bad arguments, config or data
(nothing written). A bug is neither: it keeps its traceback, and the run directory is kept,
``failed`` with the error. Queueing and submitting never import torch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from datetime import timedelta
from pathlib import Path

from core.cli.flags import RUNTIME_ONLY, add_config_flags, add_source_flags, given_flags, parse_then, resolve_config
from core.config import ConfigError, PretrainConfig, dash
from core.errors import UsageError, UserError
from core.jobs import studies
from core.jobs.launch import add_launcher_flags, slurm_options


def add_commands(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain an encoder with SimCLR",
                       description="Pretrain an encoder with SimCLR. Flags override --config and --preset.")
    p.add_argument("--run-dir", help="run directory (default: a generated name under --runs-dir)")
    p.add_argument("--runs-dir", default="runs", help="where generated run directories go (default: runs)")
    add_source_flags(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped/crashed run from its checkpoints/last.pt")
    p.add_argument("--queue", action="store_true",
                   help="add the run to the queue of --runs-dir instead of running it now (see `simclr queue`)")
    p.add_argument("--then", action="append", default=[], metavar="JOB",
                   help="with --queue: an evaluation to queue after the run finishes: linear-eval, knn, or "
                        "'finetune --label-fraction 0.1' (quoted, with flags); repeatable")
    p.add_argument("--no-start", action="store_true", help="with --queue: only queue; start with `simclr queue work`")
    add_launcher_flags(p)
    add_config_flags(p)
    p.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args: argparse.Namespace) -> int:
    opts = slurm_options(args, inherit=Path(args.resume) if args.resume else None)
    if opts is not None:  # before torch is imported: a login node submits in a fraction of a second
        return submit_pretrain_job(args, opts)
    if (args.then or args.no_start) and not args.queue:
        if args.no_start:
            raise UsageError("--no-start only means something with --queue")
        raise UsageError("--then runs jobs after a queued run: add --queue, or --launcher slurm (or use `simclr sweep`)")
    timeout = environment_settings()  # checked before anything is written, and before torch is imported
    if args.queue:
        if args.resume:
            raise UsageError("--queue starts a new run later; resume a run now with --resume (no --queue)")
        return queue_one(args)
    writer = os.environ.get("RANK", "0") == "0"  # other ranks never write the run directory, nor check it
    if args.resume:
        run_dir, cfg = resume_target(args, check=writer)
        made = False
    else:
        cfg = resolve_config(args)
        run_dir, made = studies.new_run_dir(args.runs_dir, args.run_dir, cfg, writer=writer)
    return _run_pretrain(cfg, run_dir, args.resume is not None, made, timeout)


def environment_settings() -> timedelta:
    """The runner's settings from the environment, checked before anything is written:
    SIMCLR_STOP_GRACE, and SIMCLR_DIST_TIMEOUT (returned: how long collectives wait)."""
    from core.config import dist_timeout_seconds
    from core.training.stopping import base_grace  # torch-free

    base_grace()  # ConfigError: they say which variable and what to give
    return timedelta(seconds=dist_timeout_seconds())


def resume_target(args: argparse.Namespace, check: bool = True) -> tuple[Path, PretrainConfig]:
    """The run --resume continues and its saved config (only --device/--workers may change)."""
    from core.runs import read_json

    run_dir = Path(args.resume)
    if args.run_dir and Path(args.run_dir).resolve() != run_dir.resolve():
        raise UsageError("give the run to resume once: --resume runs/NAME (no --run-dir)")
    saved = read_json(run_dir / "config.json")
    if saved is None:
        raise ConfigError(f"{run_dir} has no readable config.json; is it a run directory made by `simclr pretrain`?")
    given = given_flags(args)
    extra = [n for n in given if n not in RUNTIME_ONLY]
    if extra or args.config or args.preset:
        raise UsageError(f"--resume continues the saved config; only --device/--workers may change "
                         f"(got --{dash(extra[0]) if extra else 'config/--preset'})")
    cfg = PretrainConfig.from_dict(saved).replace(**{n: getattr(args, n) for n in given})
    cfg = PretrainConfig.from_dict(cfg.to_dict()).validate()
    if check:
        studies.check_free(run_dir, resume=True)
    if not (run_dir / "checkpoints" / "last.pt").exists():
        raise ConfigError(f"{run_dir}/checkpoints/last.pt does not exist: nothing to resume; start a new run")
    return run_dir, cfg


def submit_pretrain_job(args: argparse.Namespace, opts) -> int:
    """`simclr pretrain ... --launcher slurm`: submit the run (or --resume) and return at once."""
    from core.jobs.launch import submit_pretrain
    from core.jobs.slurm import available
    from core.runs import atomic_write_json

    if args.queue or args.no_start:
        raise UsageError("--queue is the local queue; with --launcher slurm, Slurm queues the run (drop --queue)")
    why = available()
    if why:
        raise UsageError(why)
    then = [parse_then(t) for t in args.then]
    if args.resume:
        if then:
            raise UsageError("--then with --resume: submit the evaluations once the run finishes")
        run_dir, cfg = resume_target(args)
        if any(n in RUNTIME_ONLY for n in given_flags(args)):  # a new --device/--workers: the job reads the file
            atomic_write_json(run_dir / "config.json", cfg.to_dict())
        job = submit_pretrain(run_dir, cfg, opts, resume=True)
    else:
        cfg = resolve_config(args)
        run_dir, _ = studies.new_run_dir(args.runs_dir, args.run_dir, cfg)
        job = submit_pretrain(run_dir, cfg, opts)
    print(f"submitted Slurm job {job}: {run_dir} ({'resumes from last.pt' if args.resume else 'queued'})")
    for argv in then:
        name, job_id = studies.submit_then(run_dir, argv, opts, job)
        print(f"  then {then_line(name, job_id, job)}")
    print(f"follow it with `simclr runs` or simclr-tui; stop it with `simclr stop --run-dir {run_dir}`")
    return 0


def then_line(name: str, job_id: str, after: str) -> str:
    return f"{name} as Slurm job {job_id} (after job {after} finishes)"


def queue_one(args: argparse.Namespace) -> int:
    """`simclr pretrain ... --queue`: a queued run at the end of the queue, started by the worker."""
    cfg = resolve_config(args)
    then = [parse_then(t) for t in args.then]
    run_dir, position = studies.queue_run(args.runs_dir, args.run_dir, cfg, then)
    print(f"queued {run_dir} at position {position}" + (f", then {', '.join(t[0] for t in then)}" if then else ""))
    start_or_say(args.no_start, args.runs_dir)
    return 0


def start_or_say(no_start: bool, runs_dir: str) -> None:
    """After queueing: start a worker (if none runs) and say which, or say how to start one."""
    from core.jobs.worker import ensure_worker

    if no_start:
        print(f"not started (--no-start); start with `simclr queue work --runs-dir {runs_dir}`")
    else:
        report_worker(runs_dir, ensure_worker(runs_dir))


def report_worker(runs_dir: str, pid: int | None) -> None:
    from core.jobs.worker import default_slots

    if pid is None:
        print(f"no worker started; start one with `simclr queue work --runs-dir {runs_dir}`")
    else:
        print(f"worker pid {pid} ({default_slots(runs_dir)} slot(s)); follow it with "
              f"`simclr queue --runs-dir {runs_dir}` or simclr-tui")


def _run_pretrain(cfg: PretrainConfig, run_dir: Path, resume: bool, made: bool, timeout: timedelta) -> int:
    """Train on rank 0 while holding the run directory (`core.runs.hold_run_dir`); ``made``:
    this process created the directory, so a user error in set-up (before the run has its
    config) removes it again; ``timeout``: how long collectives wait for a silent rank. Any
    other error is a bug: the directory stays, ``failed`` with the error."""
    from core import runs
    from core.runs.output import tee_to
    from core.simclr import dist
    from core.training.trainer import pretrain

    dist.init_from_env(timeout=timeout)
    try:
        with runs.hold_run_dir(run_dir) if dist.is_main() else contextlib.nullcontext():
            if dist.is_main():
                studies.check_free(run_dir, resume)  # again: another launch may have filled it meanwhile
            with tee_to(run_dir / "stdout.log", enabled=dist.is_main()):
                try:
                    return pretrain(cfg, run_dir, resume=resume, argv=sys.argv)
                except Exception as e:
                    if dist.is_main():
                        _set_up_failed(cfg, run_dir, made, e)
                    raise
                except BaseException:  # a Ctrl-C in set-up: as a user error
                    if dist.is_main():
                        _set_up_failed(cfg, run_dir, made, None)
                    raise
    finally:
        dist.cleanup()


def _set_up_failed(cfg: PretrainConfig, run_dir: Path, made: bool, error: Exception | None) -> None:
    """What a run that failed before its loop leaves: nothing, if this process made the
    directory and a person must act (``error`` a UserError, or None for an interrupt) before
    the run had its config; otherwise the directory, ``failed`` with a bug's error."""
    import shutil

    from core.errors import one_line
    from core.runs import StatusFile, update_status

    if error is None or isinstance(error, UserError):
        if made and not (run_dir / "config.json").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        return
    status = run_dir / "status.json"
    if status.exists():  # the runner's own, or a resumed run's: only its state and error change
        done = ("finished", "stopped", "pruned")  # a bug after the run's last word leaves that word alone
        update_status(status, lambda st: st if st.get("state") in done else
                      {**st, "state": "failed", "error": one_line(error)})
    else:
        StatusFile(status, total_epochs=cfg.epochs, dataset=cfg.dataset, backbone=cfg.backbone).update(
            state="failed", error=one_line(error))
