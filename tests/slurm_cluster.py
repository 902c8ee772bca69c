"""A real one-node Slurm cluster on this machine, for the tests (and by hand).

    python tests/slurm_cluster.py up      # start it (idempotent); prints the SLURM_CONF to export
    python tests/slurm_cluster.py down    # stop its daemons

It needs Debian's ``slurm-wlm`` and ``munge`` (``apt-get install slurm-wlm munge``; .ci/run
installs them) and root, to run munged, slurmctld and slurmd. The cluster lives in
``/tmp/simclr-slurm/`` with its own slurm.conf (cons_tres, linuxproc proctrack, task/none,
this host as the only node), which clients find through ``SLURM_CONF``; nothing under /etc
is changed. ``AuthInfo=cred_expire=10`` and short scheduler intervals make a requeued job run
again within about 20 s instead of minutes, and ``MinJobAge`` keeps ended jobs in
``squeue --states=all`` for 30 minutes (there is no accounting database, as on many small
clusters).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HOME = Path("/tmp/simclr-slurm")
CONF = HOME / "slurm.conf"
DAEMONS = ("munged", "slurmctld", "slurmd")


def missing() -> str | None:
    """None when this machine can run the test cluster, else why not (a skip reason)."""
    absent = [d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()]
    if absent:
        return f"Slurm is not installed ({', '.join(absent)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the test Slurm cluster needs root to start munged, slurmctld and slurmd"
    return None


def config(host: str, cpus: int, mem_mb: int) -> str:
    return f"""# the simclr test cluster (tests/slurm_cluster.py)
ClusterName=simclrtest
SlurmctldHost={host}
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
StateSaveLocation={HOME}/state
SlurmdSpoolDir={HOME}/spool
SlurmctldPidFile={HOME}/slurmctld.pid
SlurmdPidFile={HOME}/slurmd.pid
SlurmctldLogFile={HOME}/slurmctld.log
SlurmdLogFile={HOME}/slurmd.log
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2,sched_min_interval=100000
MinJobAge=1800
KillWait=10
JobAcctGatherType=jobacct_gather/none
NodeName={host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def env() -> dict[str, str]:
    return dict(os.environ, SLURM_CONF=str(CONF))


#: node states (sinfo %T, without its suffix) in which the cluster can run jobs: a busy node
#: (a job completing, say) is up; restarting the cluster then would kill every test's jobs
USABLE = ("idle", "mixed", "allocated", "completing", "reserved", "planned")


def responds() -> bool:
    """slurmctld answers and this host's node can take jobs (busy or not)."""
    if not CONF.exists():
        return False
    try:
        done = subprocess.run(["sinfo", "--noheader", "--format=%T"], env=env(), capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    # "idle", "mixed", "completing", "idle*" (not responding), "mixed+drain"...: the base word
    # must be usable and no "*" (slurmd not responding) or "drain" flag may follow it
    return done.returncode == 0 and any(
        s.split("+")[0].rstrip("~#!%$@^-") in USABLE and "drain" not in s
        for s in (w.strip().lower() for w in done.stdout.split()))


def _pid_alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().split()[0]), 0)
        return True
    except (OSError, ValueError, IndexError):
        return False


def up(timeout: float = 60.0) -> Path:
    """Start the cluster unless it already answers; returns the slurm.conf. Several test
    processes may call this at once: one starts it, under a lock."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    HOME.mkdir(parents=True, exist_ok=True)
    with open(HOME / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if responds():
            return CONF
        down()
        for sub in ("state", "spool"):
            shutil.rmtree(HOME / sub, ignore_errors=True)
            (HOME / sub).mkdir()
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        CONF.write_text(config(socket.gethostname(), os.cpu_count() or 1, max(1024, mem * 3 // 4)))
        run_dir = Path("/run/munge")
        run_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError, KeyError):
            import pwd
            m = pwd.getpwnam("munge")
            os.chown(run_dir, m.pw_uid, m.pw_gid)
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["/usr/sbin/mungekey", "--create"], check=False, capture_output=True)
        if subprocess.run(["munge", "-n"], capture_output=True, check=False).returncode != 0:
            subprocess.run(["munged", "--force"], check=True, capture_output=True)
        subprocess.run(["slurmctld", "-c", "-f", str(CONF)], check=True, capture_output=True, env=env())
        subprocess.run(["slurmd", "-f", str(CONF)], check=True, capture_output=True, env=env())
        end = time.monotonic() + timeout
        while not responds():
            if time.monotonic() > end:
                log = "".join((HOME / f).read_text()[-2000:] for f in ("slurmctld.log", "slurmd.log")
                              if (HOME / f).exists())
                raise RuntimeError(f"the test Slurm cluster did not come up within {timeout:.0f} s:\n{log}")
            time.sleep(0.5)
        return CONF


def cluster():
    """The body of the tests' ``cluster`` fixture: skip with the reason where this machine
    cannot run the cluster, else start it and point this process (and its children) at it
    with SLURM_CONF for the fixture's lifetime."""
    import pytest

    reason = missing()
    if reason:
        pytest.skip(reason)
    conf = up()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    yield conf
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


def down() -> None:
    """Stop slurmd and slurmctld (munged is left: other users of this machine may need it)."""
    for name in ("slurmd", "slurmctld"):
        pidfile = HOME / f"{name}.pid"
        if _pid_alive(pidfile):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text().split()[0]), 15)
    end = time.monotonic() + 10
    while any(_pid_alive(HOME / f"{n}.pid") for n in ("slurmd", "slurmctld")) and time.monotonic() < end:
        time.sleep(0.2)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "up"
    if what == "up":
        print(f"export SLURM_CONF={up()}")
    elif what == "down":
        down()
    else:
        sys.exit("usage: python tests/slurm_cluster.py up|down")
