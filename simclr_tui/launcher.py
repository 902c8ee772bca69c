"""Starting, stopping and resuming runs: subprocesses described by argument lists.

Every job is `python -m core <subcommand> ...` (or a test runner standing in for it), in a
new session so that quitting the TUI never takes a run down, stdin closed, stdout and
stderr appended to the job's stdout.log. The TUI keeps the `Popen` only to reap the child
(an unreaped child is a zombie, and a zombie's pid still looks alive); whether a run is
alive is always read back from its status.json.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from core import process
from core.errors import UserError
from core.jobs import service
from core.jobs.launch import LAUNCHERS, current_state, slurm_args
from core.jobs.worker import child_env, default_runner
from core.runs import LIVE_STATES, is_unstarted, resolve_run_dir
from core.runs import eval_job_name as rundir_eval_job_name
from core.jobs.slurm import SlurmOptions, read_record

from .enqueue import run_cli
from .store import RunView

#: how a person would type the command (shown in the form, copyable to a cluster)
DISPLAY_PROGRAM = ["simclr"]
EVAL_KINDS = ("linear", "finetune", "knn")
EVAL_SUBCOMMANDS = {"linear": "linear-eval", "finetune": "finetune", "knn": "knn"}


class LaunchError(RuntimeError):
    """A job could not be started or signalled; the message says why."""


@dataclass(frozen=True)
class Launched:
    key: str  # the runs-table key the job will appear under
    pid: int | None  # None: submitted to Slurm (slurm_job), nothing runs here
    argv: tuple[str, ...]
    log: Path
    slurm_job: str | None = None


@dataclass(frozen=True)
class Exited:
    key: str
    returncode: int
    log: Path


def eval_job_name(kind: str, checkpoint: str, label_fraction: float | None = None) -> str:
    """The job folder under NAME/eval/ (linear-last, finetune-0.1-last, knn-epoch_0010): the
    runner's own naming, so the folder created here for stdout.log is the one the job uses."""
    try:
        return rundir_eval_job_name(kind, checkpoint, label_fraction=label_fraction)
    except ValueError as e:
        raise LaunchError(str(e)) from None


def display_command(args: list[str], cwd: Path | None = None) -> str:
    """`simclr ...` as a shell line, with paths under the working directory made relative."""
    cwd = (cwd or Path.cwd()).resolve()
    shown = []
    for a in args:
        p = Path(a)
        if p.is_absolute():
            try:
                a = str(p.relative_to(cwd))
            except ValueError:
                pass
        shown.append(a)
    return shlex.join(DISPLAY_PROGRAM + shown)


def log_tail(path: Path, max_bytes: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - max_bytes))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


class Launcher:
    """Owns the TUI's child processes. Its methods are called from thread workers.

    ``default`` is where a new run goes unless the form says otherwise (``simclr-tui
    --launcher``). A resume or an evaluation goes where its run trained: a Slurm run's to
    Slurm (with the run's own Slurm options), a local run's to ``default``.
    """

    def __init__(self, runs_dir: Path, runner: list[str] | None = None, default: str = "local") -> None:
        if default not in LAUNCHERS:
            raise ValueError(f"unknown launcher {default!r}; choose one of {', '.join(LAUNCHERS)}")
        self.runs_dir = Path(runs_dir)
        self.runner = list(runner) if runner else default_runner()
        self.default = default
        self._children: dict[int, tuple[str, subprocess.Popen, Path]] = {}
        self._lock = threading.Lock()  # launches and reaping run in different worker threads
        self._stop_sent: dict[str, int] = {}  # key -> pgid already sent SIGTERM
        self._slurm_stops: dict[str, str] = {}  # key -> Slurm job already sent SIGTERM

    # .................................................................. starting
    def _spawn(self, key: str, args: list[str], log: Path) -> Launched:
        argv = self.runner + args
        try:  # `python -m core` imports the same core package this TUI uses, from anywhere (child_env)
            proc, _ = process.start_detached(argv, log, child_env(), header=f"\n$ {display_command(args)}\n")
        except OSError as e:
            raise LaunchError(f"cannot start {argv[0]}: {e}") from None
        with self._lock:
            self._children[proc.pid] = (key, proc, log)
        return Launched(key, proc.pid, tuple(argv), log)

    def _submit(self, key: str, args: list[str], log: Path) -> Launched:
        """``simclr ... --launcher slurm``: a short command that submits and returns (exit 0:
        submitted; else its one-line error). Nothing of the job runs here."""
        result = run_cli(self.runner, args)
        if not result.ok:
            raise LaunchError(result.error)
        # the job id from the record the submission wrote (slurm.json), not from its words
        record = read_record(log.parent)
        try:
            with open(log, "a") as out:  # the batch script appends the job's own output after this
                out.write(f"\n$ {display_command(args)}\n{result.output.strip()}\n")
        except OSError:
            pass
        return Launched(key, None, tuple(self.runner + args), log, record["job_id"] if record else None)

    def launcher_for(self, view: RunView) -> str:
        """Where a resume or an evaluation of the run goes: Slurm for a Slurm run, else the default."""
        return "slurm" if view.slurm else self.default

    def pretrain(self, name: str, args: list[str], slurm: SlurmOptions | None = None) -> Launched:
        """A new run NAME under the runs dir; args are the config flags (pretrain_args). With
        ``slurm``: submitted to Slurm with those options instead of started here."""
        try:
            path = resolve_run_dir(self.runs_dir, name)
        except ValueError as e:
            raise LaunchError(str(e)) from None
        # a directory holding only a log or notes may be started in; a queued run is the worker's
        if not is_unstarted(path) or (path / "status.json").exists():
            raise LaunchError(f"a run named {name!r} already exists in {self.runs_dir}; choose another name")
        argv = ["pretrain", "--run-dir", str(path), *args]
        if slurm is not None:
            return self._submit(name, argv + slurm_args(slurm), path / "stdout.log")
        return self._spawn(name, argv, path / "stdout.log")

    def pretrain_command(self, name: str, args: list[str], slurm: SlurmOptions | None = None) -> str:
        return display_command(["pretrain", "--run-dir", str(self.runs_dir.resolve() / name), *args,
                                *(slurm_args(slurm) if slurm is not None else [])])

    def resume(self, view: RunView) -> Launched:
        if view.kind != "pretrain":
            raise LaunchError(f"{view.name} is a {view.kind} job; only pretraining runs can be resumed")
        if view.live:
            raise LaunchError(f"{view.name} is still {view.state}")
        if view.slurm and view.state == "queued":
            raise LaunchError(f"{view.name} waits in Slurm (job {view.slurm.job_id}); it resumes when the job starts")
        if not (view.path / "checkpoints" / "last.pt").exists():
            raise LaunchError(f"{view.name} has no checkpoints/last.pt to resume from")
        argv = ["pretrain", "--resume", str(view.path)]
        if self.launcher_for(view) == "slurm":  # the run's own Slurm options (slurm.json)
            return self._submit(view.key, [*argv, "--launcher", "slurm"], view.path / "stdout.log")
        return self._spawn(view.key, argv, view.path / "stdout.log")

    def evaluate(self, view: RunView, kind: str, checkpoint: str = "last",
                 label_fraction: float | None = None) -> Launched:
        """A linear-eval / finetune / knn job on one checkpoint of a pretraining run."""
        if kind not in EVAL_KINDS:
            raise LaunchError(f"unknown evaluation {kind!r}; choose one of {', '.join(EVAL_KINDS)}")
        if view.kind != "pretrain":
            raise LaunchError(f"{view.name} is not a pretraining run")
        if not (view.path / "checkpoints" / f"{checkpoint}.pt").exists():
            raise LaunchError(f"{view.name} has no checkpoint {checkpoint!r} yet")
        if kind == "finetune" and not (label_fraction and 0 < label_fraction <= 1):
            raise LaunchError(f"the label fraction must be in (0, 1], e.g. 0.1 (got {label_fraction})")
        job = eval_job_name(kind, checkpoint, label_fraction)
        folder = view.path / "eval" / job
        # a Slurm job's queued status.json may be stale (cancelled, never started): Slurm is asked
        state = current_state(folder)[0]
        if state in LIVE_STATES or state == "queued":
            raise LaunchError(f"{job} is already {state} for {view.name}")
        folder.mkdir(parents=True, exist_ok=True)
        args = [EVAL_SUBCOMMANDS[kind], "--run-dir", str(view.path), "--checkpoint", checkpoint]
        if kind == "finetune":
            args += ["--label-fraction", repr(float(label_fraction))]
        if self.launcher_for(view) == "slurm":  # one process, with the run's own Slurm options
            return self._submit(f"{view.key}/eval/{job}", [*args, "--launcher", "slurm"], folder / "stdout.log")
        return self._spawn(f"{view.key}/eval/{job}", args, folder / "stdout.log")

    # .................................................................. stopping
    def stop(self, view: RunView) -> str:
        """SIGTERM the run's process group (it checkpoints and says `stopped`); a second
        stop of the same run escalates to SIGKILL. Returns the signal's name. The stop
        itself is core.jobs.service.stop, the one the command line's `simclr stop` uses."""
        status = view.status or {}
        if not view.live:
            raise LaunchError(f"{view.name} is not running ({view.state})")
        pgid = status.get("pgid")
        # escalate only for the same process group: a resumed run gets a fresh SIGTERM first
        kill = view.key in self._stop_sent and self._stop_sent[view.key] == pgid
        try:
            service.stop(view.path, kill=kill)
        except UserError as e:
            raise LaunchError(str(e)) from None
        except PermissionError:
            raise LaunchError(f"not allowed to signal {view.name}'s processes (pgid {pgid})") from None
        self._stop_sent[view.key] = pgid
        return "SIGKILL" if kill else "SIGTERM"

    def stop_slurm(self, view: RunView) -> str:
        """A Slurm run or job (``core.jobs.launch.stop``): a running one's runner gets SIGTERM and
        checkpoints, a waiting one is cancelled; pressed again for the same job: cancelled
        (Slurm kills it). Runs squeue/scancel: call from a thread. Returns what was done."""
        job = view.slurm.job_id if view.slurm else None
        if job is None:
            raise LaunchError(f"{view.name} is not a Slurm job")
        kill = self._slurm_stops.get(view.key) == job and view.state != "queued"
        try:
            done = service.stop(view.path, kill=kill)
        except UserError as e:
            raise LaunchError(str(e)) from None
        self._slurm_stops[view.key] = job
        return done

    # .................................................................. reaping
    def reap(self) -> list[Exited]:
        """Children that ended since the last call (without this they linger as zombies)."""
        done = []
        with self._lock:
            for pid, (key, proc, log) in list(self._children.items()):
                rc = proc.poll()
                if rc is not None:
                    del self._children[pid]
                    self._stop_sent.pop(key, None)
                    done.append(Exited(key, rc, log))
        return done

    @property
    def children(self) -> list[tuple[str, int]]:
        with self._lock:
            return [(key, pid) for pid, (key, _, _) in self._children.items()]
