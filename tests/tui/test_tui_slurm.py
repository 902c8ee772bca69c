"""Slurm runs in the TUI: states from the run directory first and Slurm second, the job id,
partition, node and pending reason on screen, `x` through `core.jobs.launch.stop`, and the form's
launcher and Slurm options.

Most tests answer for Slurm with a stand-in `query` (the store asks it in a thread of its
own, at most every `interval`); the last one submits a tiny run to the real one-node
cluster of tests/slurm_cluster.py from the form and stops it with `x`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import Input, Select
from tui_helpers import FAKE_RUNNER, cursor_to, screen_text, wait_for, wait_screen, wait_text

from core.errors import UsageError
from core.runs import atomic_write_json, read_json
from core.jobs.slurm import JobInfo, SlurmError, SlurmOptions
from simclr_tui.app import make_app
from simclr_tui.enqueue import CliResult
from simclr_tui.screens.detail import RunDetailScreen
from simclr_tui.screens.new_run import NewRunScreen
from simclr_tui.slurm_watch import SlurmWatch
from simclr_tui.store import RunStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests import slurm_cluster
from tests.helpers import write_status

SIZE = (140, 36)


def slurm_run(runs_dir: Path, name: str, job: str, state: str = "queued", beat_age: float = 0.0,
              partition: str | None = "gpu") -> Path:
    """A run directory as `simclr pretrain --launcher slurm` leaves it (then the runner's state)."""
    d = runs_dir / name
    d.mkdir(parents=True)
    atomic_write_json(d / "config.json", {"dataset": "synthetic", "backbone": "resnet18", "epochs": 2})
    atomic_write_json(d / "slurm.json", {"kind": "pretrain", "job_id": job,
                                         "options": SlurmOptions(partition=partition).to_dict()})
    write_status(d, kind="pretrain", state=state, pid=4242 if state != "queued" else None, pgid=4242,
                 host="node-7", created=time.time() - 100, heartbeat=time.time() - beat_age, epoch=1,
                 step=5, total_steps=10, total_epochs=2, error=None, launcher="slurm", slurm_job_id=job)
    return d


class FakeSlurm:
    """`core.jobs.slurm.query` as a cluster would answer it; counts the questions."""

    def __init__(self, jobs: dict[str, JobInfo]) -> None:
        self.jobs = jobs
        self.asked: list[list[str]] = []
        self.down = False

    def __call__(self, ids: list[str]) -> dict[str, JobInfo]:
        self.asked.append(list(ids))
        if self.down:
            raise SlurmError("squeue failed: slurm_load_jobs error: Unable to contact slurm controller")
        return {i: self.jobs[i] for i in ids if i in self.jobs}


def poll_until(store: RunStore, cond, timeout: float = 5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        snap = store.poll()
        if cond(snap):
            return snap
        time.sleep(0.02)
    raise AssertionError(f"no poll satisfied the condition; last: {snap.views}")


# ---------------------------------------------------------------------- the store
def test_store_reads_slurms_word_in_a_thread_at_most_every_interval(tmp_path):
    runs = tmp_path / "runs"
    slurm_run(runs, "waits", "11")
    slurm_run(runs, "trains", "12", state="running")
    slurm_run(runs, "killed", "13", state="running", beat_age=400)
    slurm_run(runs, "forgotten", "14", state="running", beat_age=400)
    fake = FakeSlurm({
        "11": JobInfo("11", "PENDING", reason="Priority", partition="gpu"),
        "12": JobInfo("12", "RUNNING", partition="gpu", nodes="node-7"),
        "13": JobInfo("13", "CANCELLED", partition="gpu", nodes="node-7"),
    })
    store = RunStore(runs, slurm=SlurmWatch(interval=0.3, ask=fake))
    first = store.poll()  # never waits on Slurm: the run directories' word until it answers
    assert first.views["waits"].state == "queued" and first.views["waits"].slurm.state is None
    assert first.views["waits"].slurm.partition == "gpu"  # what the job asked for (slurm.json)
    snap = poll_until(store, lambda s: s.views["waits"].slurm.state == "PENDING")
    waits, trains = snap.views["waits"], snap.views["trains"]
    assert (waits.state, waits.slurm.job_id, waits.slurm.pending) == ("queued", "11", "Priority")
    assert waits.slurm.text() == "Slurm job 11 · PENDING · partition gpu · waiting: Priority"
    assert (trains.state, trains.slurm.nodes) == ("running", "node-7")
    # a heartbeat 400 s old is no proof of death while Slurm runs the job; a job Slurm ended
    # without the runner's word is crashed with Slurm's reason; one Slurm forgot is crashed too
    assert snap.views["killed"].state == "crashed" and "CANCELLED" in snap.views["killed"].slurm.reason
    assert snap.views["forgotten"].state == "crashed" and "no longer knows" in snap.views["forgotten"].slurm.reason
    # one question for all the jobs, and no more than one per interval however often it polls
    n = len(fake.asked)
    assert sorted(fake.asked[-1]) == ["11", "12", "13", "14"]
    for _ in range(5):
        store.poll()
    assert len(fake.asked) == n
    time.sleep(0.35)
    store.poll()
    store.slurm.wait_idle()
    assert len(fake.asked) == n + 1
    # Slurm down: the run directories' word stands, and the snapshot says why
    fake.down = True
    snap = poll_until(store, lambda s: s.slurm_error is not None)
    assert "Unable to contact" in snap.slurm_error and snap.views["trains"].slurm.error
    assert snap.views["trains"].state == "running"  # a fresh heartbeat; a stale one goes crashed by itself
    assert snap.views["waits"].state == "queued" and snap.views["killed"].state == "crashed"


def test_runs_that_ended_long_ago_are_not_asked_about(tmp_path):
    runs = tmp_path / "runs"
    slurm_run(runs, "old", "61", state="finished", beat_age=3600)
    slurm_run(runs, "recent", "62", state="stopped", beat_age=30)  # a requeue may still bring it back
    fake = FakeSlurm({"62": JobInfo("62", "PENDING", reason="BeginTime", partition="gpu")})
    store = RunStore(runs, slurm=SlurmWatch(interval=0.0, ask=fake))
    snap = poll_until(store, lambda s: s.views["recent"].slurm.state == "PENDING")
    assert all(ids == ["62"] for ids in fake.asked)
    assert snap.views["recent"].state == "queued" and snap.views["old"].state == "finished"
    assert snap.views["old"].slurm.text() == "Slurm job 61 · partition gpu"


def test_no_slurm_runs_never_ask_slurm(tmp_path):
    runs = tmp_path / "runs"
    write_status(runs / "local", kind="pretrain", state="finished", epoch=1)
    fake = FakeSlurm({})
    store = RunStore(runs, slurm=SlurmWatch(interval=0.0, ask=fake))
    for _ in range(3):
        snap = store.poll()
    assert fake.asked == [] and snap.views["local"].slurm is None and snap.slurm_error is None


# ---------------------------------------------------------------------- the app
def app_for(runs_dir: Path, fake: FakeSlurm, **kw):
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1, start_worker=False, **kw)
    app.store.slurm = SlurmWatch(interval=0.2, ask=fake)
    return app


@pytest.mark.asyncio
async def test_runs_and_detail_show_the_job_partition_node_and_pending_reason(runs_dir):
    slurm_run(runs_dir, "waits", "21")
    slurm_run(runs_dir, "trains", "22", state="running")
    fake = FakeSlurm({"21": JobInfo("21", "PENDING", reason="Resources", partition="gpu"),
                      "22": JobInfo("22", "RUNNING", partition="gpu", nodes="node-7")})
    app = app_for(runs_dir, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "waits" in app.runs and app.runs["waits"].slurm.state == "PENDING",
                       what="Slurm's answer")
        # the table repaints after the state changes: wait for it on screen (a fixed pause raced under load)
        text = await wait_text(pilot, "job 21 Resources", "Slurm: 1 running, 1 waiting", what="the waiting job")
        assert "job 21 Resources" in text  # Progress of a run waiting in Slurm
        assert "Slurm: 1 running, 1 waiting" in text
        app.open_run("trains")
        await wait_screen(pilot, RunDetailScreen, "#detail-summary")
        await wait_for(pilot, lambda: "Slurm job 22 · RUNNING · partition gpu · node node-7" in screen_text(app),
                       what="the job line")
        assert "pid 4242" not in screen_text(app)  # a pid on another host means nothing here


@pytest.mark.asyncio
async def test_x_stops_a_slurm_run_through_core_launch_stop_and_again_cancels_it(runs_dir, monkeypatch):
    slurm_run(runs_dir, "trains", "31", state="running")
    slurm_run(runs_dir, "waits", "32")
    fake = FakeSlurm({"31": JobInfo("31", "RUNNING", partition="gpu", nodes="node-7"),
                      "32": JobInfo("32", "PENDING", reason="Priority", partition="gpu")})
    calls = []

    def fake_stop(path, kill=False):
        calls.append((Path(path).name, kill))
        if Path(path).name == "waits" and len([c for c in calls if c[0] == "waits"]) > 1:
            raise UsageError("waits is not running (it is stopped); nothing to stop")
        return f"{'cancelled' if kill else 'sent SIGTERM to'} Slurm job {read_json(Path(path) / 'status.json')['slurm_job_id']}"

    monkeypatch.setattr("core.jobs.service.stop_job", fake_stop)
    app = app_for(runs_dir, fake)

    def said(text):
        return any(text in str(n.message) for n in app._notifications)

    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "trains" in app.runs and app.runs["trains"].slurm.state == "RUNNING",
                       what="Slurm's answer")
        await cursor_to(pilot, "trains")
        await pilot.press("x")
        await wait_for(pilot, lambda: said("sent SIGTERM to Slurm job 31"), what="the stop notice")
        await pilot.press("x")  # again: Slurm kills it
        await wait_for(pilot, lambda: said("cancelled Slurm job 31"), what="the cancel notice")
        assert calls == [("trains", False), ("trains", True)]
        # a run waiting in Slurm is cancelled by the first x, with no dialog (nothing is deleted)
        await cursor_to(pilot, "waits")
        await pilot.press("x")
        await wait_for(pilot, lambda: ("waits", False) in calls, what="the waiting job's stop")
        await pilot.press("x")
        await wait_for(pilot, lambda: said("nothing to stop"), what="the refusal as a notification")
        assert (runs_dir / "waits").is_dir() and app.is_running
        # d refuses a run that waits in Slurm; [ ] say Slurm orders its queue
        await pilot.press("d")
        await wait_for(pilot, lambda: said("before deleting"), what="the delete refusal")
        await pilot.press("]")
        await wait_for(pilot, lambda: said("Slurm orders its queue"), what="the move refusal")


@pytest.mark.asyncio
async def test_slurm_down_is_one_warning_and_the_run_directory_stands(runs_dir):
    slurm_run(runs_dir, "trains", "41", state="running")
    fake = FakeSlurm({})
    fake.down = True
    app = app_for(runs_dir, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.slurm_error is not None, what="the Slurm error")
        await pilot.pause(0.5)
        warnings = [n for n in app._notifications if "Unable to contact" in str(n.message)]
        assert len(warnings) == 1 and app.runs["trains"].state == "running"


@pytest.mark.asyncio
async def test_the_form_submits_to_slurm_with_its_options(runs_dir, monkeypatch):
    submitted = []

    def fake_cli(runner, args, timeout=120.0):
        submitted.append(args)
        Path(args[2]).mkdir(parents=True, exist_ok=True)  # as `simclr pretrain --launcher slurm` does:
        atomic_write_json(Path(args[2]) / "slurm.json", {"kind": "pretrain", "job_id": "77"})  # its record
        return CliResult(0, f"submitted Slurm job 77: {args[2]} (queued)\n", "")

    monkeypatch.setattr("simclr_tui.launcher.run_cli", fake_cli)
    app = app_for(runs_dir, FakeSlurm({}), launcher="slurm")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        form = await wait_screen(pilot, NewRunScreen, "#preset")
        form.query_one("#preset", Select).value = "tiny"
        await wait_for(pilot, lambda: "--preset tiny" in form.command, what="the preset")
        form.query_one("#run-name", Input).value = "on-gpu"
        assert form.query_one("#launcher", Select).value == "slurm"  # simclr-tui --launcher slurm
        form.query_one("#slurm-partition", Input).value = "gpu"
        form.query_one("#slurm-nodes", Input).value = "0"
        await wait_for(pilot, lambda: (form.error or "").startswith("--slurm-nodes must be"), what="the error")
        assert form.query_one("#slurm-row-nodes").has_class("-invalid")
        form.query_one("#slurm-nodes", Input).value = "2"
        form.query_one("#slurm-gpus-per-node", Input).value = "4"
        form.query_one("#slurm-extra", Input).value = "--qos=high; #SBATCH --constraint=a100"
        await wait_for(pilot, lambda: form.error is None and "--slurm-gpus-per-node 4" in form.command,
                       what="the command")
        assert not form.query_one("#slurm-row-nodes").has_class("-invalid")
        assert form.command.endswith("--preset tiny --launcher slurm --slurm-partition gpu --slurm-nodes 2 "
                                     "--slurm-gpus-per-node 4 --slurm-extra=--qos=high "
                                     "'--slurm-extra=#SBATCH --constraint=a100'")
        assert form.query_one("#launch").label.plain == "Submit to Slurm"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: submitted, what="the submission")
        await wait_screen(pilot, RunDetailScreen, "#detail-summary")
        assert submitted[0][:3] == ["pretrain", "--run-dir", str(runs_dir.resolve() / "on-gpu")]
        assert submitted[0][-10:] == ["--launcher", "slurm", "--slurm-partition", "gpu", "--slurm-nodes", "2",
                                      "--slurm-gpus-per-node", "4", "--slurm-extra=--qos=high",
                                      "--slurm-extra=#SBATCH --constraint=a100"]
        assert any("Slurm job 77" in str(n.message) for n in app._notifications)
        assert "$ simclr pretrain" in (runs_dir / "on-gpu" / "stdout.log").read_text()
        # switching a form back to local hides the Slurm options and launches here
        await pilot.press("escape")
        await pilot.press("n")
        form = await wait_screen(pilot, NewRunScreen, "#preset")
        form.query_one("#launcher", Select).value = "local"
        await wait_for(pilot, lambda: "--launcher" not in form.command and form.query_one("#launch").label.plain
                       == "Launch now", what="the local command")
        assert not form.query_one("#slurm-section").display


@pytest.mark.asyncio
async def test_resume_and_evaluate_of_a_slurm_run_go_to_slurm(runs_dir, monkeypatch):
    d = slurm_run(runs_dir, "was-stopped", "51", state="stopped", partition="gpu")
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "last.pt").write_bytes(b"x")
    submitted = []

    def fake_cli(runner, args, timeout=120.0):
        submitted.append(args)
        return CliResult(0, "submitted Slurm job 78: somewhere\n", "")

    monkeypatch.setattr("simclr_tui.launcher.run_cli", fake_cli)
    app = app_for(runs_dir, FakeSlurm({"51": JobInfo("51", "CANCELLED", partition="gpu")}))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "was-stopped" in app.runs and app.runs["was-stopped"].slurm.state,
                       what="Slurm's answer")
        assert app.runs["was-stopped"].state == "stopped"
        await cursor_to(pilot, "was-stopped")
        await pilot.press("r")
        await wait_for(pilot, lambda: submitted, what="the resume")
        # no --slurm-* flags: `simclr pretrain --resume` asks for what the run asked for (slurm.json)
        assert submitted[0] == ["pretrain", "--resume", str(d), "--launcher", "slurm"]
        app.launcher.evaluate(app.runs["was-stopped"], "knn")
        assert submitted[1] == ["knn", "--run-dir", str(d), "--checkpoint", "last", "--launcher", "slurm"]


# ---------------------------------------------------------------------- a real cluster
cluster = pytest.fixture(slurm_cluster.cluster)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_run_submitted_from_the_form_runs_on_the_cluster_and_x_stops_it(cluster, runs_dir):
    app = make_app(runs_dir, poll_interval=0.25, start_worker=False, launcher="slurm")  # python -m core
    app.store.slurm = SlurmWatch(interval=1.0)  # the real squeue, asked more often than the default 5 s
    job = None
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("n")
            form = await wait_screen(pilot, NewRunScreen, "#preset")
            form.query_one("#preset", Select).value = "tiny"
            await wait_for(pilot, lambda: "--preset tiny" in form.command, what="the preset")
            form.query_one("#run-name", Input).value = "on-slurm"
            form.query_one("#field-epochs", Input).value = "200"  # long enough to stop it while it trains
            form.query_one("#slurm-partition", Input).value = "debug"
            await wait_for(pilot, lambda: form.error is None and "--epochs 200" in form.command
                           and "--slurm-partition debug" in form.command, what=f"the form to validate ({form.error})")
            await pilot.press("ctrl+s")
            await wait_screen(pilot, RunDetailScreen, "#detail-summary")
            await wait_for(pilot, lambda: "on-slurm" in app.runs and app.runs["on-slurm"].slurm, timeout=30,
                           what="the submitted run")
            job = app.runs["on-slurm"].slurm.job_id
            assert read_json(runs_dir / "on-slurm" / "status.json")["slurm_job_id"] == job
            await wait_for(pilot, lambda: app.runs["on-slurm"].state == "running" and app.runs["on-slurm"].step,
                           timeout=120, what="the run training in Slurm")
            view = app.runs["on-slurm"]
            assert (view.slurm.state, view.slurm.partition, view.slurm.nodes) == ("RUNNING", "debug",
                                                                                  socket.gethostname())
            await wait_for(pilot, lambda: f"Slurm job {job} · RUNNING · partition debug" in screen_text(app),
                           what="the job line on the detail screen")
            await pilot.press("escape")
            await cursor_to(pilot, "on-slurm")
            await pilot.press("x")
            await wait_for(pilot, lambda: app.runs["on-slurm"].state == "stopped", timeout=90, what="stopped")
            assert (runs_dir / "on-slurm" / "checkpoints" / "last.pt").exists()
            assert read_json(runs_dir / "on-slurm" / "slurm.json")["stop_requested"]  # never requeued
    finally:
        if job:  # by name too: never another test's job
            subprocess.run(["scancel", "--name", "on-slurm", job], capture_output=True, check=False)


def test_simclr_tui_launcher_slurm_without_sbatch_is_one_line(monkeypatch, capsys, tmp_path):
    from simclr_tui.cli import main

    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["--runs-dir", str(tmp_path), "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("simclr-tui: --launcher slurm: sbatch is not on PATH") and err.count("\n") == 1
