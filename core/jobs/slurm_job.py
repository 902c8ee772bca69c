"""`simclr slurm-job DIR`: what a Slurm job runs (the batch script execs it; core.jobs.slurm writes that).

It is the batch shell's process on the job's first node, and it:

* picks the runner's command from the run directory: a run that holds ``checkpoints/last.pt``
  resumes (``--resume``), a queued one starts (``--run-dir D --config D/config.json``), and
  one that started but was ended before its first checkpoint starts again from step 0;
  an evaluation job runs the command saved in ``slurm.json``;
* starts it directly (one process), or as ``srun torchrun`` (several processes, on one node
  or many) with the rendezvous taken from Slurm's environment;
* forwards SIGTERM (``simclr stop``, preemption) and USR1 (sent ``--slurm-signal-lead``
  seconds before the time limit) to the runner as one SIGTERM, so it checkpoints and stops;
* after a time-limit stop requeues the job itself (``scontrol requeue``): it runs again and
  resumes from last.pt. A stop by ``simclr stop`` is never requeued.

Its exit code is 0 only when the run (or job) finished, so ``--dependency=afterok`` jobs
(a sweep's evaluations) never run after a stopped or failed run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.runs import output
from core.runs import PRE_START_FILES, is_unstarted, list_jobs, read_json, read_status, update_status
from core.jobs.slurm import RECORD, SlurmOptions, job_id_of, this_job

#: what a run directory keeps when a job ended before its first checkpoint starts it again
KEEP_ON_RESTART = PRE_START_FILES | {"config.json", "status.json", "eval"}


def say(text: str) -> None:
    output.say(text, "slurm-job")


def runner_argv(job_dir: Path, record: dict) -> list[str]:
    """The ``simclr ...`` arguments this start of the job runs."""
    if record.get("kind") == "eval":
        return list(record["argv"])
    if (job_dir / "checkpoints" / "last.pt").exists():
        return ["pretrain", "--resume", str(job_dir)]
    if not is_unstarted(job_dir):  # started, ended before its first checkpoint: from step 0
        status = read_json(job_dir / "status.json") or {}
        owner = job_id_of(status)
        if owner is not None and not this_job(status):
            raise SystemExit(f"slurm-job: {job_dir} belongs to Slurm job {owner}, not this one; leaving it alone")
        say("the run was ended before its first checkpoint: starting it again from step 0")
        for p in job_dir.iterdir():
            if p.name not in KEEP_ON_RESTART:
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        update_status(job_dir / "status.json", state="queued", pid=None, step=0, epoch=0, heartbeat=time.time())
    return ["pretrain", "--run-dir", str(job_dir), "--config", str(job_dir / "config.json")]


def launch_argv(opts: SlurmOptions, args: list[str]) -> list[str]:
    """One process (the batch step's child), or ``srun torchrun`` over the job's nodes, one
    torchrun per node meeting at the first node (c10d rendezvous): the same command for one
    node with several processes as for many nodes."""
    py = [sys.executable]
    if not distributed(opts):
        return py + ["-m", "core", *args]
    host = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
                          capture_output=True, text=True, check=False).stdout.split()[0]
    port = 20000 + int(os.environ["SLURM_JOB_ID"]) % 40000
    # srun of Slurm 22.05 no longer takes the job's --cpus-per-task by itself: say it again
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    return ["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1", *([f"--cpus-per-task={cpus}"] if cpus else []),
            *py, "-m", "torch.distributed.run",
            f"--nnodes={os.environ.get('SLURM_NNODES', opts.nodes)}", f"--nproc-per-node={opts.procs}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={host}:{port}", f"--rdzv-id={os.environ['SLURM_JOB_ID']}",
            "-m", "core", *args]


def die_with_parent() -> None:
    """In the child before exec: SIGKILL it when this process dies. A job whose batch shell is
    killed (scancel --batch --signal=KILL, a node's OOM killer) must take its runner along,
    as cgroup process tracking does; linuxproc tracking loses a reparented child."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def distributed(opts: SlurmOptions) -> bool:
    return opts.nodes > 1 or opts.procs > 1


def main(job_dir: str) -> int:
    path = Path(job_dir)
    record = read_json(path / RECORD)
    if not record:
        print(f"simclr: error: {path / RECORD} is missing or unreadable; submit again with --launcher slurm",
              file=sys.stderr)
        return 2
    opts = SlurmOptions.from_dict(record.get("options") or {})
    job_id = os.environ.get("SLURM_JOB_ID", "?")
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    warned = {"time": False, "sent": 0.0, "pending": False}
    child: subprocess.Popen | None = None

    def forward(signum, frame) -> None:
        if signum == signal.SIGUSR1:
            warned["time"] = True
            say("the time limit is near: the runner checkpoints and stops, then the job requeues")
        if child is None:  # the runner is not started yet: it is told as soon as it is
            warned["pending"] = True
            return
        if time.monotonic() - warned["sent"] < 2.0:  # the same stop reached us twice (scancel --full)
            return
        warned["sent"] = time.monotonic()
        if distributed(opts):  # srun's tasks are job steps: Slurm signals them (a SIGTERM to srun kills them)
            subprocess.run(["scancel", "--signal=TERM", job_id], capture_output=True, check=False)
        else:
            child.send_signal(signal.SIGTERM)

    for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):  # first: a stop from now on is never lost
        signal.signal(s, forward)
    say(f"job {job_id} (start {restarts + 1}) on {os.uname().nodename}, {opts.nodes} node(s) x {opts.procs} process(es)")
    state = (read_json(path / "status.json") or {}).get("state")
    if record.get("kind") != "eval" and state == "finished":
        say("the run has already finished: nothing to do")
        return 0
    if record.get("kind") != "eval" and state == "pruned":  # a requeue after its sweep pruned it
        say(f"its sweep pruned the run: nothing to do (`simclr pretrain --resume {path}` trains it on)")
        return 1
    argv = launch_argv(opts, runner_argv(path, record))
    env = dict(os.environ, SIMCLR_LAUNCHER="slurm")
    if distributed(opts):  # srun copies its tasks' output into the job's output, stdout.log
        env["SIMCLR_SLURM_OUTPUT"] = str(path / "stdout.log")
    child = subprocess.Popen(argv, env=env, preexec_fn=die_with_parent)
    if warned["pending"]:
        forward(signal.SIGTERM, None)
    rc = child.wait()
    status = read_json(path / "status.json") or {}
    state = status.get("state")
    if warned["sent"] and state in ("queued", "starting"):  # stopped before its runner could checkpoint
        state = "stopped"
        update_status(path / "status.json", state=state, heartbeat=time.time(), note="stopped before it began training")
    say(f"the runner exited with code {rc}; the run is {state}")
    stop_asked = bool((read_json(path / RECORD) or {}).get("stop_requested"))
    if warned["time"] and state == "stopped" and opts.requeue and not stop_asked:  # evaluations: requeue False
        done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, check=False)
        say("requeued: the job runs again and resumes from checkpoints/last.pt" if done.returncode == 0 else
            f"could not requeue ({' '.join(done.stderr.split())}); resume with `simclr pretrain --resume {path} "
            f"--launcher slurm`")
    if state == "pruned":
        drop_then_jobs(path)
    code = 0 if state == "finished" else (rc or 1)
    requeued = warned["time"] and state == "stopped" and opts.requeue and not stop_asked
    if record.get("kind") != "eval" and state in ("finished", "pruned", "failed", "stopped") and not requeued:
        try:
            propose_next(path)
        except Exception as e:  # noqa: BLE001 - the sweep's next setting must not change how this job ended
            say(f"its sweep's next setting could not be made: {' '.join(str(e).split())}")
    return code


def propose_next(run_dir: Path) -> None:
    """A member of a model-based Slurm sweep ended: when it was its setting's last seed to end,
    the sweep proposes its next setting and submits it (core.jobs.propose.grow: once per
    ended setting, however many of its seeds end at once), so the sweep keeps as many
    settings in Slurm as it began with."""
    from core.jobs.plan import read_plan
    from core.jobs.propose import grow
    from core.runs import read_sweep

    sweep = read_sweep(run_dir)
    plan = read_plan(run_dir.parent, sweep["sweep"]) if sweep else None
    if not plan or plan.get("sampler") != "tpe" or plan.get("launcher") != "slurm":
        return
    from core.jobs.launch import current_state
    from core.runs import LIVE_STATES

    from core.jobs.plan import members

    mine = sweep["setting"]
    siblings = [r.path for r, rec in members(run_dir.parent, sweep["sweep"]) if r.path != run_dir and rec["setting"] == mine]
    if any(current_state(p)[0] in ("queued", *LIVE_STATES) for p in siblings):  # Slurm's word on each
        return  # the setting's last seed to end proposes the next setting
    placed = grow(run_dir.parent, sweep["sweep"], 1, SlurmOptions.from_dict(plan.get("slurm") or {}),
                  after=mine)
    if placed:
        say(f"sweep {sweep['sweep']} proposed " + ", ".join(f"{n} (job {j})" for n, j in placed.items()))


def drop_then_jobs(run_dir: Path) -> None:
    """A pruned run's --then jobs do not run: its waiting Slurm evaluation jobs are cancelled
    (``afterok`` alone would leave them waiting forever) and marked stopped with why."""
    from core.jobs.slurm import SlurmError, cancel_job

    for job_dir in list_jobs(run_dir):
        st = read_status(job_dir)
        if st is None or st.state != "queued" or st.slurm_job_id is None:
            continue
        try:
            cancel_job(st.slurm_job_id)
        except SlurmError as e:
            say(f"could not cancel {job_dir.name}: {e}")
            continue
        update_status(job_dir / "status.json", state="stopped", heartbeat=time.time(),
                      note="its run was pruned by its sweep, so its --then jobs do not run")
        say(f"cancelled {job_dir.name} (Slurm job {st.slurm_job_id}): the run was pruned")
