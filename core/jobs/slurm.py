"""Slurm: the launcher and the queue on a cluster, with the run directory still the contract.

Plain Python (no torch), so the CLI and the TUI use it on a login node.

* :class:`SlurmOptions` is its own small config (partition, time, GPUs per node, nodes,
  CPUs, memory, account, extra ``#SBATCH`` lines), saved in the run directory's
  ``slurm.json``, never mixed into ``PretrainConfig``.
* :func:`submit` writes ``slurm.sh`` (the batch script) and ``slurm.json`` into the run (or
  evaluation job) directory, marks it ``queued`` with ``slurm_job_id`` in status.json, and
  calls ``sbatch``; the job runs ``simclr slurm-job DIR`` (``core.jobs.slurm_job``), which starts
  the runner, forwards the stop signals to it and requeues the job after a time-limit stop.
* :func:`query` asks ``squeue --states=all`` (and ``sacct`` where the cluster keeps
  accounting) about jobs; :func:`reconcile` turns a status.json and Slurm's word into the
  state a reader shows: the run directory first, Slurm second, never a local pid.
* :func:`signal_job` / :func:`cancel_job`: ``simclr stop`` and the TUI's ``x``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from core.errors import SlurmError

from core.runs import atomic_write_json, atomic_write_text, read_json, update_status
from core.runs.status import Status

SCRIPT = "slurm.sh"
RECORD = "slurm.json"
#: Slurm job states in which the job will still run (or runs now)
WAITING = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED", "RESV_DEL_HOLD")
RUNNING = ("RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING", "STOPPED")
_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


# ---------------------------------------------------------------------- options
@dataclass(frozen=True)
class SlurmOptions:
    """How a job asks Slurm for resources (``--slurm-*`` flags; ``slurm.json`` in the run)."""

    partition: str | None = field(default=None, metadata={"help": "partition (default: the cluster's default)"})
    time: str | None = field(default=None, metadata={
        "help": "time limit, Slurm's format: MINUTES, HH:MM:SS or D-HH:MM (default: the partition's)"})
    nodes: int = field(default=1, metadata={"help": "nodes; with more than 1 (or several processes per node) "
                                                    "the job runs `srun torchrun` over them"})
    gpus_per_node: int = field(default=0, metadata={"help": "GPUs per node (one process per GPU)"})
    procs_per_node: int | None = field(default=None, metadata={
        "help": "training processes per node (default: one per GPU, else 1)"})
    cpus_per_task: int | None = field(default=None, metadata={"help": "CPUs per process"})
    mem: str | None = field(default=None, metadata={"help": "memory per node, e.g. 32G"})
    account: str | None = field(default=None, metadata={"help": "account to charge"})
    extra: tuple[str, ...] = field(default=(), metadata={
        "help": "an extra #SBATCH line, e.g. '--qos=high' or '#SBATCH --constraint=a100'; repeatable"})
    signal_lead: int = field(default=120, metadata={
        "help": "seconds before the time limit the runner is told to checkpoint and the job requeues"})
    requeue: bool = field(default=True, metadata={
        "help": "requeue after preemption or a time-limit stop, resuming from last.pt"})

    @property
    def procs(self) -> int:
        return self.procs_per_node or max(1, self.gpus_per_node)

    def validate(self) -> SlurmOptions:
        for name in ("nodes", "procs_per_node", "cpus_per_task"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"--slurm-{name.replace('_', '-')} must be a whole number of at least 1 (got {value!r})")
        if not isinstance(self.gpus_per_node, int) or isinstance(self.gpus_per_node, bool) or self.gpus_per_node < 0:
            raise ValueError(f"--slurm-gpus-per-node must be 0 or more (got {self.gpus_per_node!r})")
        if not isinstance(self.signal_lead, int) or isinstance(self.signal_lead, bool) or self.signal_lead < 0:
            raise ValueError(f"--slurm-signal-lead must be seconds, 0 or more (got {self.signal_lead!r})")
        if self.time is not None:
            limit = time_seconds(self.time)
            if limit is not None and self.signal_lead and self.signal_lead >= limit:
                raise ValueError(f"--slurm-signal-lead {self.signal_lead} s is not shorter than --slurm-time "
                                 f"{self.time} ({limit} s); lower it, or give the job more time")
        for text in (self.partition, self.account, self.mem, self.time):
            if text is not None and (not text or any(c.isspace() for c in text)):
                raise ValueError(f"Slurm option {text!r} must be one word")
        if not isinstance(self.requeue, bool):
            raise ValueError(f"requeue must be true or false (got {self.requeue!r})")
        for line in self.extra:
            if not isinstance(line, str):
                raise ValueError(f"--slurm-extra {line!r}: give one sbatch option as text, e.g. '--qos=high'")
            if not sbatch_option(line).startswith("-") or "\n" in line:
                raise ValueError(f"--slurm-extra {line!r}: give one sbatch option, e.g. '--qos=high' "
                                 f"or '#SBATCH --constraint=a100'")
        return self

    def sbatch_lines(self) -> list[str]:
        """The resource lines of the batch script (the rest is :func:`batch_script`'s)."""
        # one task per node: the runner, or a torchrun that starts the node's processes
        opts = [f"--nodes={self.nodes}", "--ntasks-per-node=1"]
        cpus = (self.cpus_per_task or 1) * self.procs if self.procs > 1 else self.cpus_per_task
        if cpus:
            opts.append(f"--cpus-per-task={cpus}")
        for flag, value in (("partition", self.partition), ("time", self.time), ("mem", self.mem),
                            ("account", self.account)):
            if value is not None:
                opts.append(f"--{flag}={value}")
        if self.gpus_per_node:
            opts.append(f"--gpus-per-node={self.gpus_per_node}")
        opts.append("--requeue" if self.requeue else "--no-requeue")
        if self.signal_lead:
            opts.append(f"--signal=B:USR1@{self.signal_lead}")  # the batch step: core.jobs.slurm_job forwards it
        return [f"#SBATCH {o}" for o in opts + [sbatch_option(x) for x in self.extra]]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["extra"] = list(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlurmOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown Slurm option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(data)
        if "extra" in values:
            values["extra"] = tuple(values["extra"] or ())
        return cls(**values)


def sbatch_option(line: str) -> str:
    return line.strip().removeprefix("#SBATCH").strip()


def time_seconds(text: str) -> int | None:
    """Slurm's time format in seconds: MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS;
    None for UNLIMITED/INFINITE. Anything else is a ValueError."""
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    m = _TIME_RE.match(text)
    if not m:
        raise ValueError(f"--slurm-time {text!r}: give MINUTES, HH:MM:SS or D-HH:MM:SS, e.g. 4:00:00")
    days, a, b, c = m.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        h, mi, s = (parts + [0, 0])[:3]
        return ((int(days) * 24 + h) * 60 + mi) * 60 + s
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]


# ---------------------------------------------------------------------- submitting
def available() -> str | None:
    """None when sbatch is on PATH, else the one-line reason."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH: run this on a Slurm login node (or install slurm-wlm), or use --launcher local"
    return None


def _run(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              check=False)
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} is not on PATH: run this on a Slurm login node, or use --launcher local") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{argv[0]} did not answer within {timeout:.0f} s: is slurmctld up? (`scontrol ping`)") from None


def batch_script(job_dir: Path, opts: SlurmOptions, job_name: str, python: str | None = None) -> str:
    """The batch script: resources, output appended to the directory's stdout.log, and one
    command, ``simclr slurm-job DIR``, which does the rest (core.jobs.slurm_job)."""
    job_dir = job_dir.absolute()
    root = str(Path(__file__).resolve().parents[2])
    log = output_path(job_dir)
    # sbatch splits #SBATCH lines at spaces: such a path goes on the sbatch command line only (submit)
    output = f"#SBATCH --output={log}" if not any(c.isspace() or c in "\"'\\" for c in log) else \
        "# --output is given on the sbatch command line (the path has spaces)"
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name[:100]}", output,
             "#SBATCH --open-mode=append", *opts.sbatch_lines(),
             "# written by simclr (core/jobs/slurm.py); `simclr slurm-job` starts the runner, forwards SIGTERM/USR1 to it",
             "# and requeues the job after a stop at the time limit", f"cd {shlex.quote(os.getcwd())}",
             f"export PYTHONUNBUFFERED=1 PYTHONPATH={shlex.quote(root)}${{PYTHONPATH:+:$PYTHONPATH}}",
             f"exec {shlex.quote(python or sys.executable)} -m core slurm-job {shlex.quote(str(job_dir))}", ""]
    return "\n".join(lines)


def output_path(job_dir: Path) -> str:
    """The job's stdout.log as Slurm's --output wants it: ``%`` starts a filename pattern there."""
    return str(Path(job_dir).absolute() / "stdout.log").replace("%", "%%")


def submit(job_dir: Path, opts: SlurmOptions, spec: dict[str, Any], status: dict[str, Any],
           job_name: str, dependency: str | None = None) -> str:
    """Write slurm.sh, slurm.json and a ``queued`` status.json into ``job_dir``, sbatch it,
    and return the job id. ``spec`` says what the job runs (``{"kind": "pretrain"}`` or
    ``{"kind": "eval", "argv": [...]}``); ``status`` is the rest of the queued status.

    The job is submitted held and released once both files name it: on an idle cluster it
    could otherwise start before they exist (and a shared filesystem may show them late)."""
    why = available()
    if why:
        raise SlurmError(why)
    job_dir.mkdir(parents=True, exist_ok=True)
    script = job_dir / SCRIPT
    atomic_write_text(script, batch_script(job_dir, opts, job_name))
    argv = ["sbatch", "--parsable", "--hold", f"--output={output_path(job_dir)}"] + (
        [f"--dependency={dependency}"] if dependency else []) + [str(script)]
    done = _run(argv)
    if done.returncode != 0:
        msg = " ".join((done.stderr or done.stdout).split()).removeprefix("sbatch: error: ")
        raise SlurmError(f"sbatch refused the job: {msg or f'exit code {done.returncode}'}")
    job_id = done.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch answered {done.stdout.strip()!r}, not a job id")
    old = read_json(job_dir / RECORD) or {}
    atomic_write_json(job_dir / RECORD, {
        **spec, "options": opts.to_dict(), "job_id": job_id, "submitted": time.time(),
        "dependency": dependency, "stop_requested": None,
        "history": old.get("history", []) + ([{k: old.get(k) for k in ("job_id", "submitted")}]
                                             if old.get("job_id") else [])})
    update_status(job_dir / "status.json", lambda _: {
        **status, "state": "queued", "pid": None, "launcher": "slurm", "slurm_job_id": job_id,
        "heartbeat": time.time(), "error": None, "note": None})
    released = _run(["scontrol", "release", job_id])
    if released.returncode != 0:
        _run(["scancel", job_id])
        msg = " ".join((released.stderr or released.stdout).split())
        raise SlurmError(f"Slurm took job {job_id} but would not release it ({msg or released.returncode}); "
                         f"it was cancelled: submit again")
    return job_id


def read_record(job_dir: Path) -> dict[str, Any] | None:
    data = read_json(Path(job_dir) / RECORD)
    return data if data and isinstance(data.get("job_id"), str) else None


def job_id_of(status: dict[str, Any] | None) -> str | None:
    value = (status or {}).get("slurm_job_id")
    return str(value) if isinstance(value, (str, int)) and str(value).isdigit() else None


def this_job(status: dict[str, Any] | None) -> bool:
    """The status names the Slurm job this process runs in (SLURM_JOB_ID; a requeue keeps it)."""
    job = job_id_of(status)
    return job is not None and job == os.environ.get("SLURM_JOB_ID")


# ---------------------------------------------------------------------- asking Slurm
@dataclass
class JobInfo:
    """Slurm's word on one job."""

    job_id: str
    state: str                 # PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, NODE_FAIL, ...
    reason: str | None = None  # why it waits (Priority, Resources, BeginTime, Dependency, ...)
    partition: str | None = None
    nodes: str | None = None
    start: float | None = None
    end: float | None = None
    source: str = "squeue"

    @property
    def waiting(self) -> bool:
        return self.state in WAITING

    @property
    def running(self) -> bool:
        return self.state in RUNNING

    @property
    def ended(self) -> bool:
        return not (self.waiting or self.running)


def _when(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _none(text: str) -> str | None:
    text = text.strip()
    return None if text in ("", "None", "(null)", "N/A", "Unknown") else text


def query(job_ids: list[str], timeout: float = 10.0) -> dict[str, JobInfo]:
    """What Slurm knows of these jobs: ``squeue --states=all`` (running, waiting and recently
    ended jobs), then ``sacct`` for the rest where the cluster keeps accounting. A job
    neither knows is absent; an unreachable Slurm raises SlurmError."""
    ids = sorted({j for j in job_ids if j and j.isdigit()}, key=int)
    if not ids:
        return {}
    done = _run(["squeue", "--states=all", "--noheader", f"--jobs={','.join(ids)}",
                 "--format=%i|%T|%r|%P|%N|%S|%e"], timeout)
    out: dict[str, JobInfo] = {}
    if done.returncode == 0:
        for line in done.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 7 and parts[0] in ids:
                out[parts[0]] = JobInfo(parts[0], parts[1].strip(), _none(parts[2]), _none(parts[3]),
                                        _none(parts[4]), _when(parts[5]), _when(parts[6]))
    elif "Invalid job id" not in done.stderr:  # only unknown ids: nothing known, not an outage
        raise SlurmError(f"squeue failed: {' '.join(done.stderr.split()) or done.returncode}")
    missing = [j for j in ids if j not in out]
    if missing and shutil.which("sacct"):
        out.update(_sacct(missing, timeout))
    return out


def _sacct(ids: list[str], timeout: float) -> dict[str, JobInfo]:
    try:
        done = _run(["sacct", "-X", "--noheader", "--parsable2", f"--jobs={','.join(ids)}",
                     "--format=JobIDRaw,State,Partition,NodeList,Start,End"], timeout)
    except SlurmError:
        return {}
    out = {}
    if done.returncode == 0:  # a cluster without accounting says so on stderr and exits non-zero
        for line in done.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 6 and parts[0] in ids:
                out[parts[0]] = JobInfo(parts[0], parts[1].split()[0] if parts[1] else "UNKNOWN", None,
                                        _none(parts[2]), _none(parts[3]), _when(parts[4]), _when(parts[5]), "sacct")
    return out


# ---------------------------------------------------------------------- the state a reader shows
def reconcile(status: dict[str, Any] | Status, job: JobInfo | None, known: bool = True) -> tuple[str, str | None]:
    """The state of a Slurm run or job and a reason to show, from its status.json (first) and
    Slurm's word on its job (second): core.runs.state.decide with Slurm's answer.
    ``known=False``: Slurm could not be asked, and status.json stands."""
    from core.runs.state import decide

    record = status if isinstance(status, Status) else Status.from_dict(status)
    if record.launcher != "slurm" and record.slurm_job_id:  # asked about it all the same
        record = Status.from_dict({**record.raw, "launcher": "slurm"})
    reading = decide(record, slurm=job, asked_slurm=known)
    return reading.state, reading.reason


# ---------------------------------------------------------------------- stopping
def signal_job(job_id: str, sig: str = "TERM") -> None:
    """Signal the job's batch shell (``core.jobs.slurm_job``), which forwards it to the runner once:
    the runner itself gets SIGTERM and checkpoints. (A plain ``scancel --signal=TERM`` would
    reach only job steps; our runner is the batch step's child, or srun's tasks.)"""
    done = _run(["scancel", "--batch", f"--signal={sig}", job_id])
    if done.returncode != 0:
        raise SlurmError(f"scancel could not signal job {job_id}: {' '.join(done.stderr.split())}")


def cancel_job(job_id: str) -> None:
    """End the job now (pending: never starts; running: Slurm kills it)."""
    done = _run(["scancel", job_id])
    if done.returncode != 0:
        raise SlurmError(f"scancel could not cancel job {job_id}: {' '.join(done.stderr.split())}")
