"""The Slurm launcher against a real one-node Slurm cluster (tests/slurm_cluster.py).

The cluster is started by the ``cluster`` fixture (munged, slurmctld, slurmd, this host as
the node); without slurm-wlm and munge, or without root, those tests skip with the reason.
Runs are tiny synthetic ones; every state is read the way the TUI and ``simclr runs`` read
it: the run directory first, Slurm second (``core.jobs.launch.current_state``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.training.checkpoint import load_checkpoint
from core.jobs.launch import current_state, strip_launcher_flags
from core.runs import read_json, read_metrics
from core.jobs.slurm import JobInfo, SlurmOptions, reconcile, time_seconds

from . import slurm_cluster
from .helpers import write_status

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--checkpoint-every", "0"]


#: the cluster, with SLURM_CONF set for this process's queries (current_state) and every child
cluster = pytest.fixture(scope="module")(slurm_cluster.cluster)


def simclr(*args: str, cwd: Path, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env or dict(os.environ, PYTHONPATH=str(ROOT)))


def slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True, timeout=30).stdout


def wait_state(run: Path, states: tuple[str, ...], timeout: float, seen: list | None = None,
               cond=lambda status: True) -> str:
    end = time.time() + timeout
    while time.time() < end:
        state, why, status = current_state(run)
        if seen is not None and (not seen or seen[-1] != state):
            seen.append(state)
        if state in states and cond(status):
            return state
        time.sleep(0.3)
    log = (run / "stdout.log").read_text()[-3000:] if (run / "stdout.log").exists() else "(no stdout.log)"
    raise AssertionError(f"{run.name} is {state} ({why}) after {timeout} s, not {states}; seen {seen}\n{log}")


def job_of(run: Path) -> str:
    return read_json(run / "status.json")["slurm_job_id"]


def train_steps(run: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run / "metrics.jsonl")[0] if r["tag"] == "train/loss" and "job" not in r]


# ---------------------------------------------------------------------- with the cluster
def test_submit_returns_at_once_queued_then_running_then_finished(cluster, tmp_path):
    tmp_path = tmp_path / "my runs 100%"  # a space and a % (a pattern to Slurm's --output) in the path
    tmp_path.mkdir()
    t0 = time.time()
    done = simclr("pretrain", *TINY, "--epochs", "12", "--run-dir", "runs/a", "--launcher", "slurm", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert time.time() - t0 < 10  # no training here, no torch import
    run = tmp_path / "runs" / "a"
    status = read_json(run / "status.json")
    job = status["slurm_job_id"]
    assert f"submitted Slurm job {job}: runs/a" in done.stdout
    assert status["state"] == "queued" and status["launcher"] == "slurm"
    assert read_json(run / "slurm.json")["job_id"] == job and (run / "slurm.sh").exists()
    seen: list[str] = []
    wait_state(run, ("finished",), 120, seen)
    assert "running" in seen and seen.index("running") < seen.index("finished")
    assert seen[0] in ("queued", "starting", "running")
    status = read_json(run / "status.json")
    assert status["slurm_job_id"] == job and status["launcher"] == "slurm" and status["step"] == 96
    assert train_steps(run) == list(range(1, 97))
    assert "slurm-job: job" in (run / "stdout.log").read_text()  # the job's output reached its stdout.log
    end = time.time() + 30  # the runner has said finished; the job ends a moment later
    while "COMPLETED" not in slurm("squeue", "--states=all", "--noheader", "-j", job, "-o", "%T") and time.time() < end:
        time.sleep(0.3)
    listed = json.loads(simclr("runs", "--format", "json", cwd=tmp_path).stdout)
    assert listed[0]["state"] == "finished" and listed[0]["slurm"]["job_id"] == job
    assert listed[0]["slurm"]["slurm_state"] == "COMPLETED" and listed[0]["slurm"]["partition"] == "debug"


def test_requeue_resumes_from_the_checkpoint_and_stop_checkpoints_and_never_requeues(cluster, tmp_path):
    done = simclr("pretrain", *TINY, "--epochs", "2000", "--run-dir", "runs/r", "--launcher", "slurm", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "r"
    wait_state(run, ("running",), 120, cond=lambda st: st.get("step", 0) >= 24)  # 3 epochs: last.pt exists
    slurm("scontrol", "requeue", job_of(run))
    seen: list[str] = []
    wait_state(run, ("queued",), 60, seen)  # requeued: waits for Slurm again
    assert "requeued" in current_state(run)[1]
    wait_state(run, ("running",), 120, seen, cond=lambda st: st.get("slurm_restarts") == 1 and st.get("step", 0) > 40)
    log = (run / "stdout.log").read_text()
    assert "resumed from checkpoints/last.pt at step" in log and "(start 2)" in log
    steps = train_steps(run)
    assert steps == list(range(1, steps[-1] + 1))  # the metrics continue without duplicates or gaps

    stopped = simclr("stop", "--run-dir", "runs/r", "--wait", "60", cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "sent SIGTERM to Slurm job" in stopped.stdout and "r is stopped" in stopped.stdout
    status = read_json(run / "status.json")
    assert status["state"] == "stopped"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["progress"]["step"] == status["step"]
    time.sleep(8)  # a user's stop is never requeued
    assert current_state(run)[0] == "stopped"
    assert "FAILED" in slurm("squeue", "--states=all", "--noheader", "-j", job_of(run), "-o", "%T")


def test_a_killed_job_is_crashed_with_slurms_reason_and_resumes(cluster, tmp_path):
    simclr("pretrain", *TINY, "--epochs", "2000", "--run-dir", "runs/k", "--launcher", "slurm", cwd=tmp_path)
    run = tmp_path / "runs" / "k"
    wait_state(run, ("running",), 120, cond=lambda st: st.get("step", 0) >= 16)
    pid = read_json(run / "status.json")["pid"]
    # SIGKILL to the job's batch step: the runner dies with it and never says how it ended
    # (a plain `scancel --signal=KILL` gives this Slurm's processes SIGTERM first: a clean stop)
    slurm("scancel", "--batch", "--signal=KILL", job_of(run))
    wait_state(run, ("crashed",), 60)
    state, why, status = current_state(run)
    assert status["state"] == "running"  # the runner's last word; Slurm's says it is over
    assert f"Slurm ended job {job_of(run)}" in why and "FAILED" in why
    end = time.time() + 15
    while Path(f"/proc/{pid}").exists() and time.time() < end:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists(), "the runner outlived its job"
    out = simclr("stop", "--run-dir", "runs/k", cwd=tmp_path)
    assert out.returncode == 2 and "not running (it is crashed" in out.stderr

    first = job_of(run)
    resumed = simclr("pretrain", "--resume", "runs/k", "--launcher", "slurm", cwd=tmp_path)
    assert resumed.returncode == 0 and "resumes from last.pt" in resumed.stdout, resumed.stderr
    assert job_of(run) != first and read_json(run / "slurm.json")["history"][0]["job_id"] == first
    wait_state(run, ("running",), 120, cond=lambda st: st.get("pid") and st.get("slurm_job_id") != first)
    assert "resumed from checkpoints/last.pt" in (run / "stdout.log").read_text()
    simclr("stop", "--run-dir", "runs/k", "--kill", cwd=tmp_path)


def test_time_limit_stops_with_a_checkpoint_requeues_and_resumes(cluster, tmp_path):
    # a 1-minute limit, told 45 s ahead: the runner stops about 15 s in, the job requeues
    # itself and the next start resumes; how far one start gets depends on the machine's
    # load, so the run is long and the test ends it once it has resumed past its first stop
    done = simclr("pretrain", *TINY, "--epochs", "2000", "--run-dir", "runs/t", "--launcher", "slurm",
                  "--slurm-time", "1", "--slurm-signal-lead", "45", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "t"
    assert "#SBATCH --signal=B:USR1@45" in (run / "slurm.sh").read_text()
    seen: list[str] = []

    def resumed_past_its_stop(status) -> bool:
        stop = re.search(r"stopped at step (\d+)", (run / "stdout.log").read_text())
        return bool(stop) and status.get("slurm_restarts", 0) >= 1 and status.get("step", 0) > int(stop.group(1))

    wait_state(run, ("running",), 240, seen, cond=resumed_past_its_stop)
    log = (run / "stdout.log").read_text()
    assert "the time limit is near" in log and "requeued: the job runs again" in log
    assert "resumed from checkpoints/last.pt" in log and "(start 2)" in log
    assert "queued" in seen[1:]  # it waited in Slurm again between the starts
    steps = train_steps(run)
    assert steps == list(range(1, steps[-1] + 1))  # no step twice, none missing
    stopped = simclr("stop", "--run-dir", "runs/t", "--wait", "60", cwd=tmp_path)
    assert stopped.returncode == 0 and "t is stopped" in stopped.stdout, stopped.stdout + stopped.stderr


def test_several_processes_run_srun_torchrun_and_rank_0_writes(cluster, tmp_path):
    done = simclr("pretrain", *TINY, "--epochs", "3", "--run-dir", "runs/d", "--launcher", "slurm",
                  "--slurm-procs-per-node", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "d"
    wait_state(run, ("finished",), 180)
    assert read_json(run / "meta.json")["world_size"] == 2
    log = (run / "stdout.log").read_text()
    assert "1 node(s) x 2 process(es)" in log and log.count("finished at step 24") == 1
    assert train_steps(run) == list(range(1, 25))


def test_a_sweep_with_then_jobs_submits_jobs_that_finish(cluster, tmp_path):
    done = simclr("sweep", "sw", "--grid", "temperature=0.2,0.5", "--then", "knn", "--launcher", "slurm",
                  "--", *TINY, "--epochs", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    runs = [tmp_path / "runs" / f"sw-temperature={t}" for t in (0.2, 0.5)]
    jobs = [run / "eval" / "knn-last" for run in runs]
    for path in runs + jobs:  # every run and job exists at once, queued in Slurm
        assert read_json(path / "status.json")["state"] == "queued"
        assert read_json(path / "status.json")["slurm_job_id"]
    assert "Dependency" in (current_state(jobs[0])[1] or "") or current_state(jobs[0])[0] != "finished"
    for path in runs + jobs:
        wait_state(path, ("finished",), 240)
    for run in runs:
        assert read_json(run / "sweep.json")["sweep"] == "sw"
        assert 0 <= read_json(run / "eval" / "knn-last.json")["test_top1"] <= 1
    table = json.loads(simclr("results", "--group-by", "sweep", "--format", "json", cwd=tmp_path).stdout)
    assert len(table) == 2


def test_a_pruned_sweep_decides_the_same_way_under_slurm_and_cancels_the_pruned_runs_then_jobs(cluster, tmp_path):
    from core.jobs.plan import sweep_dir
    from core.jobs.prune import read_log
    from tests.test_prune import _replay

    done = simclr("sweep", "pr", "--grid", "lr=3e-3,1e-6,1e-3,1e-5", "--prune", "asha", "--min-epochs", "1",
                  "--reduction-factor", "2", "--then", "knn", "--launcher", "slurm", "--", *TINY, "--epochs", "4",
                  cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    root = tmp_path / "runs"
    runs = sorted(p for p in root.iterdir() if (p / "sweep.json").exists())
    assert len(runs) == 4
    ends = {run: wait_state(run, ("finished", "pruned"), 300) for run in runs}
    assert "pruned" in ends.values() and "finished" in ends.values(), ends
    log = read_log(sweep_dir(root, "pr"))
    assert len({(d.member, d.epoch) for d in log}) == len(log)
    _replay(log, eta=2)
    for run, state in ends.items():
        job = run / "eval" / "knn-last"
        if state == "pruned":  # its evaluation was cancelled in Slurm, and says why
            assert wait_state(job, ("stopped",), 60) == "stopped"
            assert "pruned" in read_json(job / "status.json")["note"]
            assert [d.prune for d in log if d.member == run.name][-1]
        else:
            assert wait_state(job, ("finished",), 240) == "finished"


def test_a_tpe_sweep_under_slurm_proposes_a_setting_as_each_one_ends(cluster, tmp_path):
    done = simclr("sweep", "tp", "--sample", "3", "--sampler", "tpe", "--space", "lr=loguniform:1e-4:1e-2",
                  "--seeds", "0,1", "--launcher", "slurm", "--", *TINY, "--epochs", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    root = tmp_path / "runs"
    names = lambda: sorted(p.name for p in root.iterdir() if (p / "sweep.json").exists())  # noqa: E731
    assert names() == ["tp-001-seed=0", "tp-001-seed=1"]  # TPE's one random start; the rest come later
    want = [f"tp-00{i}-seed={s}" for i in (1, 2, 3) for s in (0, 1)]
    end = time.time() + 300
    while names() != want and time.time() < end:
        time.sleep(0.5)
    assert names() == want, names()
    for name in want:
        wait_state(root / name, ("finished",), 240)
    plan = read_json(root / ".sweeps" / "tp" / "sweep.json")
    assert plan["proposed"] == 3 and sorted(plan["proposed_after"]) == [0, 1]  # once per ended setting
    assert all(read_json(root / n / "slurm.json").get("job_id") or read_json(root / n / "status.json")["slurm_job_id"]
               for n in want)


def test_stop_cancels_a_job_still_waiting(cluster, tmp_path):
    done = simclr("pretrain", *TINY, "--run-dir", "runs/w", "--launcher", "slurm",
                  "--slurm-extra=--begin=now+1hour", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "w"
    end = time.time() + 20  # Slurm gives the reason once its scheduler has looked at the released job
    while "BeginTime" not in ((why := current_state(run)[1]) or "") and time.time() < end:
        time.sleep(0.3)
    state, why, _ = current_state(run)
    assert state == "queued" and "BeginTime" in why
    again = simclr("pretrain", *TINY, "--run-dir", "runs/w", "--launcher", "slurm", cwd=tmp_path)
    assert again.returncode == 2 and "is Slurm job" in again.stderr  # one directory, one job
    out = simclr("stop", "--run-dir", "runs/w", cwd=tmp_path)
    assert out.returncode == 0 and "cancelled Slurm job" in out.stdout
    assert current_state(run)[0] == "stopped"
    assert "before it started" in read_json(run / "status.json")["note"]


def test_a_refused_submission_is_one_line_and_leaves_nothing(cluster, tmp_path):
    out = simclr("pretrain", *TINY, "--run-dir", "runs/x", "--launcher", "slurm", "--slurm-partition", "nosuch",
                 cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "sbatch refused the job" in out.stderr and "partition" in out.stderr.lower()
    assert not (tmp_path / "runs" / "x").exists()


# ---------------------------------------------------------------------- without a cluster
def test_bad_launcher_input_is_one_line_and_writes_nothing(tmp_path):
    cases = [
        (["pretrain", *TINY, "--slurm-partition", "gpu"], "--slurm-partition needs --launcher slurm"),
        (["pretrain", *TINY, "--launcher", "slurm", "--slurm-time", "soon"], "--slurm-time 'soon'"),
        (["pretrain", *TINY, "--launcher", "slurm", "--slurm-time", "1", "--slurm-signal-lead", "90"],
         "is not shorter than --slurm-time"),
        (["pretrain", *TINY, "--launcher", "slurm", "--slurm-nodes", "0"], "--slurm-nodes must be"),
        (["pretrain", *TINY, "--launcher", "slurm", "--queue"], "drop --queue"),
        (["sweep", "s", "--seeds", "0,1", "--launcher", "slurm", "--slots", "2", "--", *TINY], "--slots is for"),
    ]
    for argv, message in cases:
        out = simclr(*argv, cwd=tmp_path)
        assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1, (argv, out.stderr)
    no_slurm = dict(os.environ, PYTHONPATH=str(ROOT), PATH="/nonexistent")
    out = subprocess.run([sys.executable, "-m", "core", "pretrain", *TINY, "--launcher", "slurm"], cwd=tmp_path,
                         capture_output=True, text=True, env=no_slurm, timeout=60)
    assert out.returncode == 2 and "sbatch is not on PATH" in out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    out = simclr("stop", "--run-dir", "runs/none", cwd=tmp_path)
    assert out.returncode == 2 and "no readable status.json" in out.stderr


def test_the_batch_script_asks_for_what_the_options_say(tmp_path):
    from core.jobs.slurm import batch_script
    opts = SlurmOptions(partition="gpu", time="2-00:00:00", nodes=2, gpus_per_node=4, cpus_per_task=8,
                        account="lab", extra=("#SBATCH --qos=high",)).validate()
    text = batch_script(tmp_path / "r", opts, "r")
    for line in ("--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=32", "--partition=gpu", "--time=2-00:00:00",
                 "--account=lab", "--gpus-per-node=4", "--requeue", "--signal=B:USR1@120", "--qos=high",
                 f"--output={tmp_path / 'r' / 'stdout.log'}", "--open-mode=append"):
        assert f"#SBATCH {line}\n" in text
    assert text.rstrip().endswith(f"-m core slurm-job {tmp_path / 'r'}")
    assert time_seconds("90") == 5400 and time_seconds("1-02:03:04") == 93784 and time_seconds("10:30") == 630
    assert strip_launcher_flags(["knn", "--run-dir", "R", "--launcher", "slurm", "--slurm-time=5",
                                 "--slurm-no-requeue", "--slurm-partition", "p", "--k", "5"]) == \
        ["knn", "--run-dir", "R", "--k", "5"]
    # abbreviations argparse accepts are launcher flags too (a job must never submit itself again)
    assert strip_launcher_flags(["knn", "--launch", "slurm", "--slurm-no-req", "--checkpoint", "last",
                                 "--slurm-part=p", "--label-fraction", "0.1"]) == \
        ["knn", "--checkpoint", "last", "--label-fraction", "0.1"]
    spaced = batch_script(tmp_path / "a b", opts, "r")
    assert "#SBATCH --output" not in spaced  # sbatch splits #SBATCH lines at spaces: submit passes it
    assert spaced.rstrip().endswith(f"slurm-job '{tmp_path / 'a b'}'")


def test_slurm_flags_round_trip_and_a_run_lends_its_options_to_its_resume_and_evaluations(tmp_path):
    import argparse

    from core.jobs.launch import add_launcher_flags, eval_options, slurm_args, slurm_options
    from core.runs import atomic_write_json

    p = argparse.ArgumentParser()
    add_launcher_flags(p)
    opts = SlurmOptions(partition="gpu", time="1:00:00", nodes=2, gpus_per_node=4, mem="32G", account="lab",
                        extra=("--qos=high", "#SBATCH --constraint=a100"), signal_lead=300, requeue=False).validate()
    flags = slurm_args(opts)
    assert slurm_options(p.parse_args(flags)) == opts  # the TUI's flags say exactly what the form says
    assert slurm_args(SlurmOptions()) == ["--launcher", "slurm"]
    # no --slurm-* flag: a resume or an evaluation asks for what the run asked for
    atomic_write_json(tmp_path / "slurm.json", {"job_id": "7", "options": opts.to_dict()})
    assert slurm_options(p.parse_args(["--launcher", "slurm"]), inherit=tmp_path) == opts
    assert slurm_options(p.parse_args(["--launcher", "slurm", "--slurm-time", "5"]), inherit=tmp_path) == \
        SlurmOptions(time="5")  # a flag given: the flags alone
    assert slurm_options(p.parse_args([]), inherit=tmp_path) is None  # local stays local
    one = eval_options(opts)
    assert (one.nodes, one.procs, one.gpus_per_node, one.partition, one.extra) == (1, 1, 1, "gpu", opts.extra)
    assert eval_options(SlurmOptions()).requeue is False  # an evaluation starts over: a requeue would loop
    for bad in ({"nodes": True}, {"extra": [5]}, {"requeue": "yes"}):
        with pytest.raises(ValueError):
            SlurmOptions.from_dict(bad).validate()
    atomic_write_json(tmp_path / "slurm.json", {"job_id": "7", "options": {"extra": [5]}})
    assert slurm_options(p.parse_args(["--launcher", "slurm"]), inherit=tmp_path) == SlurmOptions()
    (tmp_path / "slurm.json").write_text("{broken")
    assert slurm_options(p.parse_args(["--launcher", "slurm"]), inherit=tmp_path) == SlurmOptions()


def test_slurm_multi_node_command_meets_at_the_first_node(monkeypatch):
    from core.jobs import slurm_job
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_NNODES", "2")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "n[1-2]")
    monkeypatch.setattr(slurm_job.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout="n1\nn2\n"))
    argv = slurm_job.launch_argv(SlurmOptions(nodes=2, gpus_per_node=4), ["pretrain", "--resume", "R"])
    assert argv[:3] == ["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert "--nnodes=2" in argv and "--nproc-per-node=4" in argv and "--rdzv-endpoint=n1:21234" in argv
    assert argv[-3:] == ["pretrain", "--resume", "R"]
    assert slurm_job.launch_argv(SlurmOptions(), ["x"])[1:] == ["-m", "core", "x"]


STATUS = {"kind": "pretrain", "launcher": "slurm", "slurm_job_id": "7", "host": "elsewhere", "pid": 1}


@pytest.mark.parametrize("written, slurm_state, reason, want, why", [
    ("queued", "PENDING", "Priority", "queued", "pending (Priority)"),
    ("queued", "RUNNING", None, "starting", "running on n1"),
    ("queued", "CANCELLED", None, "stopped", "before it started"),
    ("queued", "FAILED", None, "failed", "did not start"),
    ("running", "RUNNING", None, "running", None),
    ("running", "PENDING", "BeginTime", "queued", "requeued"),
    ("running", "CANCELLED", None, "crashed", "CANCELLED"),
    ("running", "NODE_FAIL", None, "crashed", "node failure"),
    ("running", "OUT_OF_MEMORY", None, "crashed", "out of memory"),
    ("running", "TIMEOUT", None, "crashed", "time limit"),
    ("stopped", "PENDING", "BeginTime", "queued", "requeued after the stop"),
    ("stopped", "FAILED", None, "stopped", None),
    ("finished", "COMPLETED", None, "finished", None),
    ("failed", "FAILED", None, "failed", None),
])
def test_reconcile_takes_the_run_directory_first_and_slurm_second(written, slurm_state, reason, want, why):
    status = {**STATUS, "state": written, "heartbeat": time.time()}
    state, said = reconcile(status, JobInfo("7", slurm_state, reason, "debug", "n1"))
    assert state == want
    assert (said is None) if why is None else (why in said), said


def test_a_stop_before_the_runner_can_checkpoint_reads_stopped(tmp_path):
    # SIGTERM to the batch step at once: the runner is still starting (no handler yet) and dies
    # of it; the job says the run was stopped, not that it crashed
    from core.config import PretrainConfig, preset
    from core.runs import atomic_write_json

    run = tmp_path / "r"
    run.mkdir()
    atomic_write_json(run / "config.json", PretrainConfig.from_dict(preset("tiny")).to_dict())
    atomic_write_json(run / "slurm.json", {"kind": "pretrain", "job_id": "5", "options": SlurmOptions().to_dict()})
    write_status(run, **{**STATUS, "slurm_job_id": "5", "state": "queued", "heartbeat": time.time()})
    env = dict(os.environ, PYTHONPATH=str(ROOT), SLURM_JOB_ID="5")
    proc = subprocess.Popen([sys.executable, "-m", "core", "slurm-job", str(run)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = proc.stdout.readline()  # the shell's first line: its stop handlers are in place (under any load)
    assert "job 5 (start 1)" in first, first
    proc.send_signal(subprocess.signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    out = first + out
    status = read_json(run / "status.json")
    assert proc.returncode != 0 and status["state"] == "stopped", out
    assert status["note"] == "stopped before it began training" and "the run is stopped" in out


def test_an_evaluation_whose_run_did_not_finish_says_it_never_starts():
    state, why = reconcile({**STATUS, "state": "queued"}, JobInfo("7", "PENDING", reason="DependencyNeverSatisfied"))
    assert state == "queued" and "never starts" in why


def test_a_heartbeat_that_is_not_a_number_is_no_traceback():
    for beat in ("x", [1], None):
        status = {**STATUS, "state": "stopped", "heartbeat": beat}
        assert reconcile(status, JobInfo("7", "COMPLETED"))[0] == "stopped"
        assert reconcile(status, JobInfo("7", "PENDING"))[0] == "queued"


def test_without_slurms_word_the_heartbeat_decides_never_a_local_pid():
    import socket
    here = {**STATUS, "host": socket.gethostname(), "pid": os.getpid(), "state": "running"}
    assert reconcile({**here, "heartbeat": time.time() - 600}, None, known=False)[0] == "crashed"  # our pid lives
    assert reconcile({**here, "heartbeat": time.time()}, None, known=False)[0] == "running"
    gone = reconcile({**here, "heartbeat": time.time() - 600}, None, known=True)
    assert gone[0] == "crashed" and "no longer knows job 7" in gone[1]


def test_a_job_ended_before_its_first_checkpoint_starts_again_from_step_0(tmp_path, monkeypatch):
    from core.runs import atomic_write_json, is_unstarted
    from core.jobs.slurm_job import runner_argv
    monkeypatch.setenv("SLURM_JOB_ID", STATUS["slurm_job_id"])  # the job that owns the directory
    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "eval" / "knn-last").mkdir(parents=True)  # a --then job queued to follow it stays
    atomic_write_json(run / "config.json", {"preset": "x"})
    write_status(run, **{**STATUS, "state": "running", "step": 5})
    for name in ("metrics.jsonl", "meta.json", "events.out.tfevents.1", "stdout.log", "slurm.json", "notes.json"):
        (run / name).write_text("x")
    with monkeypatch.context() as m:  # another job never cleans a directory that is not its own
        m.setenv("SLURM_JOB_ID", "99999")
        with pytest.raises(SystemExit, match="belongs to Slurm job"):
            runner_argv(run, {"kind": "pretrain"})
        assert (run / "metrics.jsonl").exists()
    argv = runner_argv(run, {"kind": "pretrain"})
    assert argv == ["pretrain", "--run-dir", str(run), "--config", str(run / "config.json")]
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "eval", "notes.json", "slurm.json", "status.json",
                                                     "stdout.log"]
    assert read_json(run / "status.json")["state"] == "queued" and is_unstarted(run)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    assert runner_argv(run, {"kind": "pretrain"}) == ["pretrain", "--resume", str(run)]
    assert runner_argv(run, {"kind": "eval", "argv": ["knn", "--run-dir", "R"]}) == ["knn", "--run-dir", "R"]
