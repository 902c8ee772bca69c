"""Subprocesses: argument lists, own session, log redirection, stop escalation, safe names."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from tui_helpers import FAKE_RUNNER

from tests.helpers import wait_for

from core.runs import read_json, read_run
from simclr_tui.launcher import Launcher, LaunchError, display_command, eval_job_name
from simclr_tui.store import RunStore


def view_of(runs_dir: Path, key: str):
    return RunStore(runs_dir).poll().views.get(key)


def state_of(runs_dir: Path, key: str):
    view = view_of(runs_dir, key)
    return view.state if view else None


def test_pretrain_argv_session_and_log(runs_dir, fast_runs):
    launcher = Launcher(runs_dir, FAKE_RUNNER)
    job = launcher.pretrain("a", ["--preset", "tiny"])
    assert list(job.argv) == FAKE_RUNNER + ["pretrain", "--run-dir", str(runs_dir.resolve() / "a"), "--preset", "tiny"]
    assert job.log == runs_dir.resolve() / "a" / "stdout.log"
    wait_for(launcher.reap, timeout=10, what="the launcher to reap its job")
    status = read_json(runs_dir / "a" / "status.json")
    assert status["state"] == "finished"
    assert status["pgid"] == status["pid"] != os.getpgrp()  # its own session and group
    log = job.log.read_text()
    assert log.lstrip().startswith("$ simclr pretrain --run-dir") and "finished" in log


def test_names_cannot_escape_the_runs_dir(runs_dir):
    launcher = Launcher(runs_dir, FAKE_RUNNER)
    for bad in ("../x", "a/b", "..", "", "-rf"):
        with pytest.raises(LaunchError):
            launcher.pretrain(bad, [])
    assert list(runs_dir.iterdir()) == []


def test_stop_sends_sigterm_then_sigkill(runs_dir, slow_runs):
    launcher = Launcher(runs_dir, FAKE_RUNNER)
    launcher.pretrain("a", ["--preset", "tiny", "--epochs", "50"])
    wait_for(lambda: state_of(runs_dir, "a") == "running", timeout=10, what="run a running")
    assert launcher.stop(view_of(runs_dir, "a")) == "SIGTERM"
    wait_for(launcher.reap, timeout=10, what="the launcher to reap its job")
    assert view_of(runs_dir, "a").state == "stopped"
    # resume, then a process that ignores SIGTERM gets SIGKILL on the second stop
    launcher.resume(view_of(runs_dir, "a"))
    wait_for(lambda: state_of(runs_dir, "a") == "running", timeout=10, what="run a running")
    pgid = view_of(runs_dir, "a").status["pgid"]
    os.killpg(pgid, signal.SIGSTOP)  # a stuck process: SIGTERM stays pending
    assert launcher.stop(view_of(runs_dir, "a")) == "SIGTERM"
    assert launcher.stop(view_of(runs_dir, "a")) == "SIGKILL"
    wait_for(launcher.reap, timeout=10, what="the launcher to reap its job")
    assert view_of(runs_dir, "a").state == "crashed"  # it never got to say stopped
    with pytest.raises(LaunchError, match="not running"):
        launcher.stop(view_of(runs_dir, "a"))


def test_eval_job_folder_and_command(runs_dir, fast_runs):
    launcher = Launcher(runs_dir, FAKE_RUNNER)
    launcher.pretrain("a", ["--preset", "tiny"])
    wait_for(launcher.reap, timeout=10, what="the launcher to reap its job")
    view = view_of(runs_dir, "a")
    job = launcher.evaluate(view, "finetune", "last", 0.1)
    assert job.key == "a/eval/finetune-0.1-last"
    assert job.argv[-6:] == ("--run-dir", str(view.path), "--checkpoint", "last", "--label-fraction", "0.1")
    assert (runs_dir / "a" / "eval" / "finetune-0.1-last" / "stdout.log").exists()
    wait_for(launcher.reap, timeout=10, what="the launcher to reap its job")
    assert read_run(runs_dir / "a" / "eval" / "finetune-0.1-last").state == "finished"
    with pytest.raises(LaunchError, match="no checkpoint"):
        launcher.evaluate(view, "linear", "epoch_0099")
    with pytest.raises(LaunchError, match="label fraction"):
        launcher.evaluate(view, "finetune", "last", 1.5)


def test_names_and_display():
    assert eval_job_name("linear", "last") == "linear-last"
    assert eval_job_name("finetune", "epoch_0010", 0.01) == "finetune-0.01-epoch_0010"
    assert display_command(["pretrain", "--run-dir", str(Path.cwd() / "runs" / "x y")]) == \
        "simclr pretrain --run-dir 'runs/x y'"


def test_the_tui_never_imports_torch():
    import subprocess

    code = "import sys, simclr_tui.app, simclr_tui.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2]).returncode == 0


def test_cli_help_and_arguments(capsys):
    from simclr_tui.cli import build_parser, main

    args = build_parser().parse_args(["--runs-dir", "elsewhere", "--demo"])
    assert str(args.runs_dir) == "elsewhere" and args.demo
    assert main(["--poll", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "reattaches" in capsys.readouterr().out


def test_a_runs_dir_that_does_not_exist_is_not_made_silently(tmp_path, capsys, monkeypatch):
    from simclr_tui import cli

    typo = tmp_path / "typo" / "path"
    assert cli.main(["--runs-dir", str(typo)]) == 2  # not a terminal: no question, one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and "--create" in err[0]
    assert not typo.parent.exists()
    (tmp_path / "file").write_text("x")
    assert cli.main(["--runs-dir", str(tmp_path / "file")]) == 2
    assert "is not a folder" in capsys.readouterr().err

    assert cli.ensure_runs_dir(typo, create=True) and typo.is_dir()  # --create

    class Tty:
        def isatty(self):
            return True
    monkeypatch.setattr(cli.sys, "stdin", Tty())
    monkeypatch.setattr(cli.sys, "stdout", Tty())
    for answer, made in (("n", False), ("", False), ("y", True)):
        asked = []
        monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or answer)
        other = tmp_path / f"asked-{answer or 'enter'}"
        assert cli.ensure_runs_dir(other, create=False) is made and other.is_dir() is made
        assert "does not exist. Create it? [y/N]" in asked[0]
