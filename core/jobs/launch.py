"""Where a job runs: ``--launcher local|slurm`` and ``simclr stop`` for either.

The command-line side of ``core.jobs.slurm``: the ``--slurm-*`` flags (generated from
``SlurmOptions``, as pretrain's flags are from ``PretrainConfig``), submitting a pretraining
run, a resume or an evaluation job, and stopping a run whichever launcher started it.
Torch-free.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from core.errors import UsageError
from core.runs import LIVE_STATES, RunInfo, atomic_write_json, read_json, read_status, update_status
from core.runs.listing import launch_record
from core.runs.state import decide
from core.runs.status import Status
from core import process
from core.jobs.slurm import RECORD, SlurmError, SlurmOptions, cancel_job, job_id_of, query, reconcile, signal_job, submit

LAUNCHERS = ("local", "slurm")


# ---------------------------------------------------------------------- flags
def slurm_flag(name: str) -> str:
    return "--slurm-" + ("no-requeue" if name == "requeue" else name.replace("_", "-"))


def add_launcher_flags(p: argparse.ArgumentParser) -> None:
    """``--launcher`` and one ``--slurm-*`` flag per SlurmOptions field."""
    p.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local: run here now (default); slurm: submit with sbatch and return at once "
                        "(the run directory must be on a filesystem the compute nodes share)")
    defaults = SlurmOptions()
    for f in fields(SlurmOptions):
        help_text = f"with --launcher slurm: {f.metadata['help']}"
        if f.name == "requeue":
            p.add_argument(slurm_flag(f.name), dest="slurm_requeue", action="store_false", default=None,
                           help="with --launcher slurm: never requeue the job (default: requeue after "
                                "preemption or a time-limit stop, resuming from last.pt)")
        elif f.name == "extra":
            p.add_argument(slurm_flag(f.name), dest="slurm_extra", action="append", default=None,
                           metavar="LINE", help=help_text)
        else:
            kind = int if f.name in ("nodes", "gpus_per_node", "procs_per_node", "cpus_per_task", "signal_lead") else str
            shown = help_text if "(default" in help_text else f"{help_text} (default: {getattr(defaults, f.name)})"
            p.add_argument(slurm_flag(f.name), dest=f"slurm_{f.name}", type=kind, default=None,
                           metavar=kind.__name__.upper(), help=shown)


def slurm_options(args: argparse.Namespace, inherit: Path | None = None) -> SlurmOptions | None:
    """The SlurmOptions the flags give with --launcher slurm; None for local (where a
    --slurm-* flag is an error: it would be silently ignored). With no --slurm-* flag, a
    Slurm run's own options (``inherit``'s slurm.json) are used: a resume or an evaluation of
    a run asks for the partition, account and time the run asked for."""
    given = {f.name: getattr(args, f"slurm_{f.name}") for f in fields(SlurmOptions)
             if getattr(args, f"slurm_{f.name}", None) is not None}
    if getattr(args, "launcher", "local") != "slurm":
        if given:
            raise UsageError(f"{slurm_flag(next(iter(given)))} needs --launcher slurm")
        return None
    if os.environ.get("SIMCLR_LAUNCHER") == "slurm" and os.environ.get("SLURM_JOB_ID"):
        # what a Slurm job of ours runs never submits again (a job that resubmits itself loops)
        raise UsageError("--launcher slurm inside a Slurm job started by simclr: the job runs the command itself")
    if not given and inherit is not None and (saved := saved_options(inherit)) is not None:
        return saved
    if "extra" in given:
        given["extra"] = tuple(given["extra"])
    try:
        return SlurmOptions(**given).validate()
    except ValueError as e:
        raise UsageError(str(e)) from None


def saved_options(job_dir: Path) -> SlurmOptions | None:
    """The options a Slurm run or job was submitted with (its slurm.json), if it was."""
    record = read_json(Path(job_dir) / RECORD)
    if not isinstance(record, dict) or not isinstance(record.get("options"), dict):
        return None
    try:
        return SlurmOptions.from_dict(record["options"]).validate()
    except (TypeError, ValueError, AttributeError):
        return None  # a slurm.json from another version, or edited: the flags' defaults stand


def slurm_args(opts: SlurmOptions) -> list[str]:
    """``--launcher slurm`` and the ``--slurm-*`` flags that give ``opts`` (defaults left out):
    what the TUI passes to ``simclr pretrain`` / the evaluations."""
    out = ["--launcher", "slurm"]
    defaults = SlurmOptions()
    for f in fields(SlurmOptions):
        value = getattr(opts, f.name)
        if value == getattr(defaults, f.name):
            continue
        if f.name == "requeue":
            out.append(slurm_flag(f.name))
        elif f.name == "extra":
            for line in value:
                out.append(f"{slurm_flag(f.name)}={line}")  # '=': a line starting with '--' is not a flag
        else:
            out += [slurm_flag(f.name), str(value)]
    return out


def eval_options(opts: SlurmOptions) -> SlurmOptions:
    """An evaluation is one process: one node, one task, at most one GPU; never requeued (it
    starts from scratch each time, so a requeue at the time limit would repeat it forever)."""
    return SlurmOptions.from_dict({**opts.to_dict(), "nodes": 1, "procs_per_node": 1,
                                   "gpus_per_node": min(1, opts.gpus_per_node), "requeue": False})


def launcher_flag_names() -> list[str]:
    return ["--launcher"] + [slurm_flag(f.name) for f in fields(SlurmOptions)]


def strip_launcher_flags(argv: list[str]) -> list[str]:
    """A command's argv without --launcher and --slurm-* (what the job itself runs), however
    argparse let them be spelled: ``--flag value``, ``--flag=value`` or an abbreviation."""
    names = launcher_flag_names()
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        given = a.split("=", 1)[0]
        full = [n for n in names if n.startswith(given)] if given.startswith("--") and len(given) > 4 else []
        if a == "--":
            out += argv[i:]
            break
        if given in names or len(full) == 1:
            name = given if given in names else full[0]
            takes_value = name != "--slurm-no-requeue" and "=" not in a
            i += 2 if takes_value else 1
            continue
        out.append(a)
        i += 1
    return out


# ---------------------------------------------------------------------- submitting
def _submit(job_dir: Path, opts: SlurmOptions, spec: dict[str, Any], status: dict[str, Any], name: str,
            dependency: str | None = None) -> str:
    try:
        return submit(job_dir, opts, spec, status, name, dependency)
    except SlurmError as e:
        raise UsageError(str(e)) from None


def submit_pretrain(run_dir: Path, cfg, opts: SlurmOptions, resume: bool = False,
                    sweep: dict[str, Any] | None = None) -> str:
    """A new run (or a resume of ``run_dir``) as a Slurm job; returns the job id. The run
    directory is ``queued`` with the job id at once; a new run's config.json is written with
    its data folder made absolute (the job starts elsewhere)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    status = (read_json(run_dir / "status.json") or {}) if resume else {}
    if not resume:
        cfg = cfg.replace(data_dir=str(Path(cfg.data_dir).expanduser().absolute()))
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
        if sweep is not None:
            atomic_write_json(run_dir / "sweep.json", sweep)
        status = {"kind": "pretrain", "host": socket.gethostname(), "created": time.time(), "epoch": 0,
                  "step": 0, "total_steps": None, "total_epochs": cfg.epochs}
    try:
        job = _submit(run_dir, opts, {"kind": "pretrain"}, status, run_dir.name)
        if resume and status.get("state") == "pruned":  # a person resumes it: its sweep's pruning is off for it
            from core.jobs.prune import release
            release(run_dir, "resumed after its sweep pruned it (submitted to Slurm)")
        return job
    except UsageError:
        if not resume:  # nothing was submitted: leave nothing behind
            import shutil
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def submit_eval(run_dir: Path, job: str, kind: str, checkpoint: str, argv: list[str], opts: SlurmOptions,
                dependency: str | None = None) -> str:
    """An evaluation job (``argv``: ``linear-eval --run-dir R ...``) as a Slurm job writing
    ``R/eval/<job>/``, as one process (:func:`eval_options`); ``dependency`` e.g.
    ``afterok:123`` (a sweep's --then jobs)."""
    status = {"kind": kind, "parent": run_dir.name, "checkpoint": checkpoint, "host": socket.gethostname(),
              "created": time.time(), "epoch": 0, "step": 0, "total_epochs": None, "phase": "queued"}
    return _submit(run_dir / "eval" / job, eval_options(opts), {"kind": "eval", "argv": argv}, status,
                   f"{run_dir.name}:{job}", dependency)


# ---------------------------------------------------------------------- state and stopping
def slurm_job_of(status: dict[str, Any] | Status | None) -> str | None:
    """The Slurm job of a run our Slurm launcher submitted (None for local runs)."""
    if isinstance(status, Status):
        return status.slurm_job
    return job_id_of(status) if (status or {}).get("launcher") == "slurm" else None


def current_state(job_dir: Path) -> tuple[str, str | None, dict[str, Any]]:
    """The state of one run or job now (the state machine, asking Slurm for Slurm jobs):
    (state, reason, the raw status)."""
    record = read_status(job_dir / "status.json")
    launch = launch_record(job_dir)
    job = record.slurm_job if record else None
    if job is None:
        reading = decide(record, launch=launch)
        return reading.state, reading.reason, record.raw if record else {}
    try:
        info = query([job]).get(job)
    except SlurmError as e:
        return decide(record).state, f"Slurm cannot be asked: {e}", record.raw
    reading = decide(record, slurm=info, asked_slurm=True)
    return reading.state, reading.reason, record.raw


def stop(job_dir: Path, kill: bool = False) -> str:
    """Stop a run or evaluation job, whichever launcher started it; returns what was done.

    Local: SIGTERM the process group (the runner checkpoints and says ``stopped``), SIGKILL
    with ``kill``. Slurm: a running job's batch shell gets SIGTERM and forwards it to the
    runner (``core.jobs.slurm_job``), which checkpoints; a waiting job is cancelled; ``kill``
    cancels the job (Slurm kills it; the run reads as crashed and resumes from last.pt).
    A stop is never requeued (``stop_requested`` in slurm.json).
    """
    record = read_status(job_dir / "status.json")
    if record is None:
        raise UsageError(f"{job_dir} has no readable status.json: is it a run directory (runs/NAME)?")
    status = record.raw
    if record.slurm_job is not None:
        return _stop_slurm(job_dir, status, record.slurm_job, kill)
    launch = launch_record(job_dir)
    state = decide(record, launch=launch).state
    sig = signal.SIGKILL if kill else signal.SIGTERM
    if record.state == "queued" and state == "starting":  # the worker started it; its runner is still setting up
        return _stop_launched(job_dir, launch, sig)
    if state == "queued":
        raise UsageError(f"{job_dir} is queued, not running: take it out of the queue with "
                         f"`simclr queue cancel {job_dir.name} --runs-dir {job_dir.parent}`")
    if state not in LIVE_STATES:
        raise UsageError(f"{job_dir} is not running (it is {state}); nothing to stop")
    if status.get("host") != socket.gethostname():
        raise UsageError(f"{job_dir} runs on host {status.get('host')}: stop it there "
                         f"(ssh {status.get('host')} simclr stop --run-dir {job_dir})")
    try:
        target = process.signal_run(record.pid, record.pgid, sig)
    except ProcessLookupError:
        raise UsageError(f"{job_dir}: its process (pid {record.pid}) is gone; it reads as crashed now") from None
    return f"sent {sig.name} to {job_dir} ({target})" + (
        "" if kill else "; it checkpoints and stops after the current step")


def _stop_launched(job_dir: Path, launch: dict[str, Any], sig: signal.Signals) -> str:
    """A queued run the worker has started whose runner has not written status.json yet (it
    loads data, builds the model): signal its session (the worker starts each run in a
    session of its own, so the group is its pid) and record that it stopped before training."""
    if launch.get("host") not in (None, socket.gethostname()):
        raise UsageError(f"{job_dir} was started on host {launch.get('host')}: stop it there "
                         f"(ssh {launch.get('host')} simclr stop --run-dir {job_dir})")
    try:
        process.signal_run(launch["pid"], launch["pid"], sig)
    except ProcessLookupError:
        raise UsageError(f"{job_dir}: its process (pid {launch['pid']}) is gone") from None
    update_status(job_dir / "status.json", lambda st: {
        **st, "state": "stopped", "heartbeat": time.time(), "note": "stopped before it began training"}
        if st.get("state") == "queued" else st)
    return f"sent {sig.name} to {job_dir} (process group {launch['pid']}, still setting up); it did not train"


def _stop_slurm(job_dir: Path, status: dict[str, Any], job: str, kill: bool) -> str:
    try:
        info = query([job]).get(job)
    except SlurmError as e:
        raise UsageError(str(e)) from None
    state, _ = reconcile(status, info)
    if info is None or info.ended:
        raise UsageError(f"{job_dir} is not running (it is {state}; Slurm job {job} "
                         f"{'has ended' if info else 'is unknown to Slurm'}); nothing to stop")
    record = read_json(job_dir / RECORD) or {}
    atomic_write_json(job_dir / RECORD, {**record, "stop_requested": time.time()})
    try:
        if info.waiting or kill:
            cancel_job(job)
        else:
            signal_job(job, "TERM")
    except SlurmError as e:
        raise UsageError(str(e)) from None
    if info.waiting:
        if status.get("state") == "queued":  # it never ran: nothing to keep
            note = f"cancelled in Slurm (job {job}) before it started"
            update_status(job_dir / "status.json", lambda st: {
                **st, "state": "stopped", "heartbeat": time.time(), "note": note} if st.get("state") == "queued" else st)
        return f"cancelled Slurm job {job} ({info.state.lower()}{f', {info.reason}' if info.reason else ''}); " \
               f"{job_dir.name} did not run again"
    if kill:
        return f"cancelled Slurm job {job}: Slurm kills it; {job_dir.name} reads as crashed and resumes from last.pt"
    return f"sent SIGTERM to Slurm job {job} ({job_dir.name}); it checkpoints and stops after the current step"


def wait_until_stopped(job_dir: Path, seconds: float) -> str:
    """Poll until the run or job is neither live nor queued; its state then (or still live)."""
    end = time.monotonic() + seconds
    while True:
        state, _, _ = current_state(job_dir)
        if state not in (*LIVE_STATES, "queued") or time.monotonic() > end:
            return state
        time.sleep(1.0)


def with_slurm_states(runs: list[RunInfo]) -> tuple[list[RunInfo], dict[Path, dict[str, Any]]]:
    """The runs with each Slurm run's state decided with Slurm's word (one question for all),
    and path -> ``{"job_id", "slurm_state", "reason", "partition", "nodes"}`` for those runs
    (``slurm_state`` null when Slurm could not be asked: the run directory's word stands)."""
    jobs = {run.path: run.record.slurm_job for run in runs if run.record and run.record.slurm_job}
    if not jobs:
        return list(runs), {}
    try:
        infos, known = query(list(jobs.values())), True
    except SlurmError:
        infos, known = {}, False
    out, decided = {}, []
    for run in runs:
        job = jobs.get(run.path)
        if job is None:
            decided.append(run)
            continue
        info = infos.get(job)
        if known:
            reading = decide(run.record, launch=run.launch, slurm=info, asked_slurm=True)
            run, why = run.with_reading(reading), reading.reason
        else:
            why = "Slurm cannot be asked now"
        decided.append(run)
        out[run.path] = {"job_id": job, "slurm_state": info.state if info else None, "reason": why,
                         "partition": info.partition if info else None, "nodes": info.nodes if info else None}
    return decided, out
