"""A real one-node Slurm cluster on this machine, for the tests (and by hand).

    python tests/slurm_cluster.py up      # start it (idempotent); prints the SLURM_CONF to export
    python tests/slurm_cluster.py down    # stop its daemons

It needs Debian's ``slurm-wlm`` and ``munge`` (``apt-get install slurm-wlm munge``; .ci/run
installs them) and root, to run munged, slurmctld and slurmd. The cluster lives in
``/tmp/simclr-slurm/`` (or ``SIMCLR_TEST_SLURM_HOME``) with its own slurm.conf (cons_tres,
linuxproc proctrack, task/none, this host as the only node), which clients find through
``SLURM_CONF``; nothing under /etc is changed. ``AuthInfo=cred_expire=10`` and short
scheduler intervals make a requeued job run again within about 20 s instead of minutes, and
``MinJobAge`` keeps ended jobs in ``squeue --states=all`` for 30 minutes (there is no
accounting database, as on many small clusters).

A test session stops the daemons it started, once, when it ends (tests/conftest.py calls
:func:`release`). The session's controller puts a token naming it in ``SIMCLR_TEST_SLURM_SESSION``
before pytest-xdist starts its workers, so every process of one session shares it: :func:`up`
registers the session as a user of the cluster (``users/<token>``) and, when it starts the
daemons, records that a test session did (``started-by.json``). The last test session using the
cluster then stops what a test session started; a cluster that was running before the tests
(or was started by hand) is left alone, and so is one that another test session still uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

#: where the cluster lives; SIMCLR_TEST_SLURM_HOME and SIMCLR_TEST_SLURM_PORT (slurmctld's port,
#: slurmd's the next) run a second cluster beside one already running on the default ports
HOME = Path(os.environ.get("SIMCLR_TEST_SLURM_HOME", "/tmp/simclr-slurm"))
PORT = os.environ.get("SIMCLR_TEST_SLURM_PORT")
CONF = HOME / "slurm.conf"
DAEMONS = ("munged", "slurmctld", "slurmd")
#: the environment variable naming the test session (set by tests/conftest.py in pytest's
#: controller and inherited by its workers); "<controller pid>-<random>"
SESSION_ENV = "SIMCLR_TEST_SLURM_SESSION"
#: {"session": token, "daemons": [...]}: the daemons a test session started (absent: not a test's)
OWNER = HOME / "started-by.json"
#: one empty file per test session that asked for the cluster, named by its token
USERS = HOME / "users"
MUNGED_PID = Path("/run/munge/munged.pid")


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
""" + (f"SlurmctldPort={int(PORT)}\nSlurmdPort={int(PORT) + 1}\n" if PORT else "")


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
    """The daemon whose pid ``pidfile`` holds runs (an exited one its parent has not yet reaped,
    a zombie, does not)."""
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def up(timeout: float = 60.0) -> Path:
    """Start the cluster unless it already answers; returns the slurm.conf. Several test
    processes may call this at once: one starts it, under a lock."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    HOME.mkdir(parents=True, exist_ok=True)
    session = os.environ.get(SESSION_ENV) or None
    with open(HOME / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if session:
            USERS.mkdir(exist_ok=True)
            (USERS / session).touch()
        if responds():
            return CONF
        owner = _owner()
        down()
        # a munged a test session started, still running, stays that session's to stop
        started = ["munged"] if owner and "munged" in owner["daemons"] and _pid_alive(MUNGED_PID) else []
        OWNER.unlink(missing_ok=True)
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
            started = ["munged"]
        if session:  # before the daemons start: one that fails to come up is still stopped
            tmp = OWNER.with_suffix(".tmp")
            tmp.write_text(json.dumps({"session": session, "daemons": [*started, "slurmctld", "slurmd"]}))
            tmp.replace(OWNER)
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


def down(munged: bool = False) -> None:
    """Stop slurmd and slurmctld, and munged only if asked (other users of this machine may
    need it: :func:`release` stops it only where a test session started it)."""
    pidfiles = [HOME / "slurmd.pid", HOME / "slurmctld.pid"] + ([MUNGED_PID] if munged else [])
    for pidfile in pidfiles:
        if _pid_alive(pidfile):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text().split()[0]), 15)
    end = time.monotonic() + 10
    while any(_pid_alive(f) for f in pidfiles) and time.monotonic() < end:
        time.sleep(0.2)


def _owner() -> dict | None:
    """started-by.json: which test session started which daemons, or None (none did)."""
    try:
        owner = json.loads(OWNER.read_text())
        return owner if isinstance(owner, dict) and isinstance(owner.get("daemons"), list) else None
    except (OSError, ValueError):
        return None


def _session_alive(token: str) -> bool:
    """A test session is alive while its controller (the token's pid) is."""
    try:
        os.kill(int(token.split("-")[0]), 0)
        return True
    except (OSError, ValueError):
        return False


def release(session: str | None) -> bool:
    """The end of a test session (its controller, after every worker ended): it no longer uses
    the cluster, and if no other live test session does and a test session started the daemons,
    stop them. True when it stopped them. A session that never asked for the cluster does nothing."""
    if not session or not (USERS / session).exists():
        return False
    with open(HOME / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (USERS / session).unlink(missing_ok=True)
        others = False
        for user in USERS.iterdir():
            if _session_alive(user.name):
                others = True
            else:  # a session that ended without releasing (killed): no longer a user
                user.unlink(missing_ok=True)
        owner = _owner()
        if others or owner is None:
            return False
        down(munged="munged" in owner["daemons"])
        OWNER.unlink(missing_ok=True)
        return True


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "up"
    if what == "up":
        print(f"export SLURM_CONF={up()}")
    elif what == "down":
        down()
        OWNER.unlink(missing_ok=True)  # stopped by hand: nothing left for a test session to stop
    else:
        sys.exit("usage: python tests/slurm_cluster.py up|down")
