"""Stopping a run whose step is stuck in native code (core/training/stopping.py).

The runner is tests/fault_runner.py with ``block-in-c:S``: after step S its main thread
deadlocks inside a C call that released the GIL (as PyTorch's operators do) and that no
signal interrupts, so Python's own signal handler never runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import wait_for

from core.training import trainer
from core.training.checkpoint import load_checkpoint
from core.runs import effective_state, read_json, read_metrics
from core.training.stopping import StopGuard

ROOT = Path(__file__).resolve().parents[1]
FAULT_RUNNER = [sys.executable, str(ROOT / "tests" / "fault_runner.py")]
# 8 steps an epoch: last.pt is written at step 8, the step after 11 never ends
ARGS = ["pretrain", "--preset", "tiny", "--epochs", "4", "--knn-every", "0"]
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def _no_runner_left_behind():
    """A failed test must not leave a runner deadlocked forever: SIGKILL every process group
    started from this test that is still there."""
    started: list[int] = []
    real_popen = subprocess.Popen

    class Popen(real_popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if kwargs.get("start_new_session"):
                started.append(self.pid)
    subprocess.Popen = Popen
    try:
        yield
    finally:
        subprocess.Popen = real_popen
        for pgid in started:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def start_blocked(tmp_path: Path, grace: float, after_step: int = 11) -> tuple[subprocess.Popen, Path, Path]:
    run, out = tmp_path / "r", tmp_path / "out.log"
    env = {**os.environ, "SIMCLR_CACHE": str(tmp_path / ".cache"), "SIMCLR_STOP_GRACE": str(grace)}
    with open(out, "wb") as f:
        proc = subprocess.Popen([*FAULT_RUNNER, f"block-in-c:{after_step}", *ARGS, "--run-dir", str(run)], env=env,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: "block_in_c after step" in out.read_text(), timeout=90, proc=proc,
             what="the runner blocked in C")
    time.sleep(0.5)  # well inside the C call
    return proc, run, out


def resume_finishes(run: Path, tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "core", "pretrain", "--resume", str(run)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "SIMCLR_CACHE": str(tmp_path / ".cache")})
    assert res.returncode == 0, res.stderr[-2000:]
    status = read_json(run / "status.json")
    assert status["state"] == "finished" and status["step"] == 32 and "note" not in status
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl")[0] if r["tag"] == "train/loss"]
    assert steps == list(range(1, 33))  # the steps logged after the checkpoint were replaced, not repeated


def test_sigterm_to_a_step_stuck_in_c_records_the_last_checkpoint_and_exits(tmp_path):
    proc, run, out = start_blocked(tmp_path, grace=3)
    t0 = time.time()
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert 2.5 < time.time() - t0 < 30  # waited out the grace period, then went
    status = read_json(run / "status.json")
    assert status["state"] == "stopped" and effective_state(status) == "stopped"
    assert status["step"] == 8 and status["epoch"] == 1  # what checkpoints/last.pt holds, not step 11
    assert load_checkpoint(run / "checkpoints" / "last.pt")["progress"]["step"] == 8
    assert "did not end within" in status["note"] and "SIGTERM" in status["note"]
    assert "stopped at the last checkpoint, step 8" in status["note"]
    for log in (out.read_text(), (run / "stdout.log").read_text()):  # the terminal, and the run's own log
        assert "stopping after this step" in log and "block_in_c" in log  # the stuck thread's stack
        assert "stopped at the last checkpoint, step 8" in log
    resume_finishes(run, tmp_path)


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    proc, run, _ = start_blocked(tmp_path, grace=600)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(1.0)
    assert proc.poll() is None  # the first one waits for the step (600 s of grace)
    t0 = time.time()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=20) == 128 + signal.SIGINT
    assert time.time() - t0 < 10
    status = read_json(run / "status.json")
    assert status["state"] == "stopped" and status["step"] == 8
    assert "second SIGINT" in status["note"]


def test_sigkill_after_a_stuck_stop_reads_as_crashed_and_resumes(tmp_path, monkeypatch):
    """The TUI's second `x`: SIGTERM, then SIGKILL of the process group."""
    from simclr_tui.launcher import Launcher
    from simclr_tui.store import RunStore

    runs = tmp_path / "runs"
    launcher = Launcher(runs, runner=[*FAULT_RUNNER, "block-in-c:11"])
    monkeypatch.setenv("SIMCLR_STOP_GRACE", "600")
    monkeypatch.setenv("SIMCLR_CACHE", str(tmp_path / ".cache"))
    launcher.pretrain("stuck", ARGS[1:])
    run = runs / "stuck"
    wait_for(lambda: "block_in_c after step" in (run / "stdout.log").read_text(), timeout=90,
             what="the runner blocked in C")
    wait_for(lambda: (read_json(run / "status.json") or {}).get("state") == "running", timeout=90,
             what="the run running")
    store = RunStore(runs)

    def view():
        return store.poll().views.get("stuck")

    assert launcher.stop(view()) == "SIGTERM"
    time.sleep(1.0)
    assert view().live  # stuck: still running
    assert launcher.stop(view()) == "SIGKILL"
    launcher_reaps = lambda: launcher.reap() or True  # noqa: E731 - the TUI reaps its children as it polls
    wait_for(lambda: launcher_reaps() and view().state == "crashed", timeout=90, what="the run crashed")
    assert load_checkpoint(run / "checkpoints" / "last.pt")["progress"]["step"] == 8
    launched = Launcher(runs).resume(view())  # crashed, with a checkpoint: resumable (without the fault)
    wait_for(lambda: view().state == "finished", timeout=120, what="the resumed run finished")
    assert read_json(run / "status.json")["step"] == 32 and launched.pid


def test_the_grace_period_follows_the_slowest_recent_step(monkeypatch):
    monkeypatch.setenv("SIMCLR_STOP_GRACE", "5")
    guard = StopGuard()
    assert guard.grace() == 5
    time.sleep(0.2)
    guard.beat()  # the first step's end: what came before it (set-up) is not a step's time
    assert guard.grace() == 5 and not guard._beats
    guard._beats.extend([0.5, 4.0, 1.0])
    assert guard.grace() == 12


def test_the_default_grace_is_shorter_under_torchrun(monkeypatch):
    """torchrun SIGKILLs its workers 30 s after forwarding a SIGTERM: give up before that."""
    monkeypatch.delenv("SIMCLR_STOP_GRACE", raising=False)
    assert StopGuard().grace() == 60
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert StopGuard().grace() == 20


def test_a_slow_step_is_not_a_stuck_one(tmp_path):
    """The main thread that runs Python code after the signal (a slow monitor, a slow save)
    is left to finish: Python's own handler ran, so nothing needs rescuing."""
    code = (
        "import os, signal, time, sys\n"
        "from core.training.stopping import StopGuard\n"
        "with StopGuard() as g:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    end = time.time() + 4\n"
        "    while time.time() < end: sum(range(1000))  # Python code, for twice the grace\n"
        "    print('finished', g.requested, flush=True)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={**os.environ, "SIMCLR_STOP_GRACE": "2"})
    assert res.returncode == 0 and res.stdout.strip() == "finished True", res.stderr


@pytest.mark.parametrize("value", ["soon", "0", "-3"])
def test_a_bad_grace_is_refused_in_one_line(tmp_path, monkeypatch, capsys, value):
    from core import cli
    monkeypatch.setenv("SIMCLR_STOP_GRACE", value)
    run = tmp_path / "r"
    assert cli.main([*ARGS, "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SIMCLR_STOP_GRACE" in err[0] and not run.exists()


def test_handlers_are_restored_after_a_run(tmp_path, monkeypatch):
    from core import cli
    monkeypatch.setenv("SIMCLR_CACHE", str(tmp_path / ".cache"))
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    during = []
    real_stop_agreed = trainer.stop_agreed

    def stop_agreed(stop, asked):
        during.append(signal.getsignal(signal.SIGTERM))
        return real_stop_agreed(stop, asked)
    monkeypatch.setattr(trainer, "stop_agreed", stop_agreed)
    assert cli.main([*ARGS, "--max-steps", "2", "--run-dir", str(tmp_path / "r")]) == 0
    assert during and all(getattr(h, "__self__", None).__class__ is StopGuard for h in during)  # installed meanwhile
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert signal.set_wakeup_fd(-1) == -1  # and no wakeup fd left behind


def test_an_evaluation_job_stuck_in_c_is_stopped_too(tmp_path):
    """linear-eval / knn / finetune share the guard: a job whose work blocks in C ends after
    the grace period, recorded as stopped with a note, and keeps no half result."""
    run = tmp_path / "r"
    run.mkdir()
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from pathlib import Path\n"
        "from core.evaluation.job import EvalJob\n"
        "from fault_runner import block_in_c\n"
        "def work(job):\n"
        "    job.say('extracting features')\n"
        "    block_in_c()\n"
        f"sys.exit(EvalJob(Path({str(run)!r}), 'linear-last', 'linear-eval', 'last').run(work))\n")
    out = tmp_path / "out.log"
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "SIMCLR_STOP_GRACE": "2"}, start_new_session=True)
    wait_for(lambda: "extracting features" in out.read_text(), timeout=90, proc=proc,
             what="the evaluation extracting features")
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    status = read_json(run / "eval" / "linear-last" / "status.json")
    assert status["state"] == "stopped" and "did not end within" in status["note"]
    assert not (run / "eval" / "linear-last.json").exists()
