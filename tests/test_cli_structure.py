"""The command line's shape (issue 21): what a bug, a user error and a missing torch do.

- A bug (any exception that is not a ``core.errors.UserError``) keeps its traceback and the
  run directory, marked ``failed`` with the error; a user error stays one line, exit 2, with
  nothing left behind.
- Listing (``simclr runs``, ``simclr queue``) and queueing (``pretrain --queue --no-start``,
  ``sweep --no-start``) run with torch unimportable, and the torch-free packages import so.
- ``simclr pretrain --help`` names each flag's default once.
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

from core import cli
from core.config import PretrainConfig
from core.runs import StatusFile, atomic_write_json, read_json

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--epochs", "1", "--knn-every", "0"]

#: run before the command: every import of torch (or torchvision) fails, as on a login node without it
NO_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
"""


def without_torch(code: str, tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SIMCLR_CACHE": str(tmp_path / ".cache")}
    return subprocess.run([sys.executable, "-c", NO_TORCH + code], capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path, env=env)


def simclr_without_torch(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    return without_torch(f"from core.cli import main; sys.exit(main({list(argv)!r}))", tmp_path)


# ---------------------------------------------------------------------- a bug is not a usage error
def broken_set_up(error: Exception, writes_status: bool):
    """A stand-in for the trainer whose set-up raises ``error``, after writing its status.json
    (as the runner does once its data and model are built) or before writing anything."""
    def pretrain(cfg, run_dir, resume=False, argv=None):
        if writes_status:
            StatusFile(Path(run_dir) / "status.json", total_epochs=cfg.epochs).update(epoch=0)
        raise error
    return pretrain


@pytest.mark.parametrize("writes_status", [False, True], ids=["before-status", "after-status"])
def test_a_bug_in_set_up_keeps_its_traceback_and_the_run_marked_failed(tmp_path, monkeypatch, writes_status):
    from core.training import trainer

    monkeypatch.setenv("SIMCLR_CACHE", str(tmp_path / ".cache"))
    monkeypatch.setattr(trainer, "pretrain", broken_set_up(ValueError("a bug in set-up"), writes_status))
    with pytest.raises(ValueError, match="a bug in set-up"):  # not exit 2: the traceback stays
        cli.main(["pretrain", *TINY, "--runs-dir", str(tmp_path / "runs")])
    (run,) = (tmp_path / "runs").iterdir()
    status = read_json(run / "status.json")
    assert status is not None, "the run directory was removed"
    assert status["state"] == "failed" and status["error"] == "ValueError: a bug in set-up"
    assert read_json(run / "status.json")["kind"] == "pretrain"


def test_a_bug_in_set_up_is_a_traceback_and_exit_1_from_the_command(tmp_path):
    code = ("import sys\nfrom core.training import trainer\n"
            "def broken(*a, **k): raise ValueError('a bug in set-up')\n"
            "trainer.pretrain = broken\n"
            "from core.cli import main\n"
            f"sys.exit(main(['pretrain', *{TINY!r}, '--runs-dir', 'runs']))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SIMCLR_CACHE": str(tmp_path / ".cache")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=env)
    assert res.returncode == 1, res.stderr
    assert "Traceback (most recent call last)" in res.stderr and "simclr: error:" not in res.stderr
    assert res.stderr.rstrip().endswith("ValueError: a bug in set-up")
    (run,) = (tmp_path / "runs").iterdir()
    assert read_json(run / "status.json")["state"] == "failed"


@pytest.mark.parametrize("writes_status", [False, True], ids=["before-status", "after-status"])
def test_a_user_error_in_set_up_still_leaves_nothing_behind(tmp_path, monkeypatch, capsys, writes_status):
    from core.errors import DataError
    from core.training import trainer

    monkeypatch.setenv("SIMCLR_CACHE", str(tmp_path / ".cache"))
    monkeypatch.setattr(trainer, "pretrain", broken_set_up(DataError("no images under the data folder"),
                                                           writes_status))
    assert cli.main(["pretrain", *TINY, "--runs-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.strip() == "simclr: error: no images under the data folder"
    assert list((tmp_path / "runs").iterdir()) == []  # no config.json yet: the directory goes


# ---------------------------------------------------------------------- torch-free
def test_the_torch_free_packages_import_without_torch(tmp_path):
    jobs = sorted(p.stem for p in (ROOT / "core" / "jobs").glob("*.py") if p.stem != "__init__")
    report = sorted(p.stem for p in (ROOT / "core" / "report").glob("*.py") if p.stem != "__init__")
    cli_modules = sorted(p.stem for p in (ROOT / "core" / "cli").glob("*.py") if p.stem != "__init__")
    names = ["core.runs", "core.jobs", *[f"core.jobs.{m}" for m in jobs], "core.report",
             *[f"core.report.{m}" for m in report], "core.cli", *[f"core.cli.{m}" for m in cli_modules],
             "core.evaluation.results"]
    res = without_torch(f"import importlib\nfor n in {names!r}: importlib.import_module(n)\n"
                        f"assert 'torch' not in sys.modules\nprint('imported', len({names!r}))", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "core.jobs.queue" in names and "core.cli.pretrain" in names and "core.report.tables" in names


def test_listing_and_queueing_never_import_torch(tmp_path):
    runs = str(tmp_path / "runs")
    res = simclr_without_torch(tmp_path, "pretrain", "--preset", "tiny", "--queue", "--no-start", "--runs-dir", runs)
    assert res.returncode == 0, res.stderr
    assert "queued" in res.stdout and "not started (--no-start)" in res.stdout
    res = simclr_without_torch(tmp_path, "sweep", "s", "--runs-dir", runs, "--grid", "temperature=0.1,0.2",
                               "--no-start", "--then", "knn", "--", "--preset", "tiny")
    assert res.returncode == 0, res.stderr
    assert "sweep s: 2 runs queued" in res.stdout
    res = simclr_without_torch(tmp_path, "queue", "--runs-dir", runs)
    assert res.returncode == 0, res.stderr
    assert "3 queued" in res.stdout
    res = simclr_without_torch(tmp_path, "queue", "--runs-dir", runs, "--format", "json")
    assert res.returncode == 0, res.stderr
    assert [q["position"] for q in json.loads(res.stdout)["queued"]] == [1, 2, 3]
    for fmt in ("table", "json"):
        res = simclr_without_torch(tmp_path, "runs", "--runs-dir", runs, "--format", fmt)
        assert res.returncode == 0, res.stderr
    assert sorted(r["state"] for r in json.loads(res.stdout)) == ["queued"] * 3


def fifty_runs(root: Path) -> list[str]:
    """50 run directories written by core's own writers: config.json and a status.json each."""
    names = []
    for i in range(50):
        run = root / f"run-{i:02d}"
        run.mkdir(parents=True)
        atomic_write_json(run / "config.json", PretrainConfig(seed=i).to_dict())
        status = StatusFile(run / "status.json", total_epochs=10, dataset="synthetic", backbone="resnet18")
        status.update(state=("finished", "stopped", "failed")[i % 3], epoch=i % 10, step=10 * i)
        names.append(run.name)
    return names


def test_runs_lists_fifty_runs_without_torch(tmp_path):
    names = fifty_runs(tmp_path / "runs")
    started = time.perf_counter()
    res = simclr_without_torch(tmp_path, "runs", "--runs-dir", str(tmp_path / "runs"), "--format", "json")
    seconds = time.perf_counter() - started
    assert res.returncode == 0, res.stderr
    records = json.loads(res.stdout)
    assert [r["name"] for r in records] == names
    assert {r["state"] for r in records} == {"finished", "stopped", "failed"}
    print(f"\nsimclr runs --format json over 50 runs: {seconds:.2f} s (a fresh interpreter included)")


# ---------------------------------------------------------------------- help
def test_pretrain_help_names_each_default_once():
    pretrain = cli.build_parser()._subparsers._group_actions[0].choices["pretrain"]
    formatter = pretrain._get_formatter()
    helps = {a.option_strings[-1]: formatter._expand_help(a) for a in pretrain._actions if a.help and a.option_strings}
    ours = helps  # the --slurm-* flags' help too (core.jobs.launch.add_launcher_flags)
    assert len(ours) >= 50
    for flag, text in ours.items():
        assert text.count("(default:") <= 1, (flag, text)
    assert ours["--temperature"] == "NT-Xent temperature (default: 0.5)"
    assert ours["--runs-dir"] == "where generated run directories go (default: runs)"
    assert ours["--queue"].endswith("(see `simclr queue`)")
    assert ours["--slurm-partition"].endswith("partition (default: the cluster's default)")
    flat = " ".join(pretrain.format_help().split())  # and so the page reads
    assert "NT-Xent temperature (default: 0.5) --" in flat


# ---------------------------------------------------------------------- layout
def test_the_command_line_is_one_module_per_command_group():
    from core.cli import evaluate, studies

    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "core" / "cli").glob("*.py")}
    assert {"flags.py", "pretrain.py", "studies.py", "runs.py", "encoders.py", "evaluate.py"} <= set(sizes)
    assert max(sizes.values()) <= 450, sizes
    assert sizes["__init__.py"] <= 120, sizes  # build_parser() and main() only
    assert not (ROOT / "core" / "evaluation" / "cli.py").exists()
    assert callable(evaluate.add_commands) and callable(studies.add_commands)


def test_showing_a_sweep_and_the_tui_never_need_optuna(tmp_path):
    """Optuna makes a TPE sweep's settings; nothing that shows one imports it."""
    runs = str(tmp_path / "runs")
    block = NO_TORCH.replace('("torch", "torchvision")', '("torch", "torchvision", "optuna")')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    make = subprocess.run([sys.executable, "-m", "core", "sweep", "s", "--runs-dir", runs, "--grid", "lr=0.1,0.2",
                           "--prune", "asha", "--no-start", "--", "--preset", "tiny"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert make.returncode == 0, make.stderr
    code = (f"from core.cli import main\nassert main(['sweep', 'show', 's', '--runs-dir', {runs!r}]) == 0\n"
            f"assert main(['runs', '--runs-dir', {runs!r}, '--format', 'json']) == 0\n"
            "import simclr_tui.app, simclr_tui.sweep_files, simclr_tui.screens.sweep\n"
            "assert 'optuna' not in sys.modules and 'torch' not in sys.modules\n")
    res = subprocess.run([sys.executable, "-c", block + code], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    assert "prune asha on knn_top1" in res.stdout
