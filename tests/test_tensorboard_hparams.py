"""TensorBoard's HParams dashboard and Text tab: one row per run (core.training.tbmeta).

Read with TensorBoard's own reader (its plugin event multiplexer and the hparams plugin's
metadata parsing), never our writer read back: what a fresh ``tensorboard --logdir runs``
loads. The first test pins down what TensorBoard does with a session start written more than
once, the fact the design stands on (docs/RUN_DIRECTORY.md, "TensorBoard").
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins.hparams import api_pb2, metadata
from tensorboard.util import tensor_util

from core.config import PretrainConfig, preset
from core.runs import atomic_write_json, process_start_time, read_json, update_status, write_notes
from core.training import tbmeta
from core.training.runlog import RunLog

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--knn-k", "10", "--epochs", "1", "--max-steps", "2"]
COLUMNS = {f.name for f in dataclasses.fields(PretrainConfig)} | {"sweep", "pruned"}


# ---------------------------------------------------------------------- TensorBoard's reader
def load(runs: Path) -> plugin_event_multiplexer.EventMultiplexer:
    m = plugin_event_multiplexer.EventMultiplexer()
    m.AddRunsFromDirectory(str(runs))
    m.Reload()
    return m


def rows(m) -> dict[str, dict]:
    """run -> its hparams, as the hparams plugin parses them (the runs that make a row)."""
    out = {}
    for run, tags in m.PluginRunToTagToContent(metadata.PLUGIN_NAME).items():
        if metadata.SESSION_START_INFO_TAG in tags:
            start = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
            out[run] = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return out


def ended(m, run: str) -> int | None:
    """The session's end status, or None when it has not ended."""
    tags = m.PluginRunToTagToContent(metadata.PLUGIN_NAME)[run]
    if metadata.SESSION_END_INFO_TAG not in tags:
        return None
    return metadata.parse_session_end_info_plugin_data(tags[metadata.SESSION_END_INFO_TAG]).status


def scalars(m, run: str, tag: str) -> list[tuple[int, float]]:
    return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in m.Tensors(run, tag)]


def text(m, run: str, tag: str) -> str:
    return tensor_util.make_ndarray(m.Tensors(run, tag)[-1].tensor_proto).item().decode()


# ---------------------------------------------------------------------- what TensorBoard keeps
def test_tensorboard_keeps_the_first_session_start_it_reads(tmp_path: Path) -> None:
    """Written twice in one file: the first. In two files: the one whose NAME sorts first, even
    when it was written last. Hence our own file, named to sort first and rewritten whole."""
    def snapshot(run: Path, sweep: str) -> bytes:  # the hparams file's bytes with that sweep name
        atomic_write_json(run / "sweep.json", {"sweep": sweep, "index": 0, "swept": {}})
        return tbmeta.write(run).read_bytes()

    logdir = tmp_path / "runs"
    for name in ("twice", "two-files", "ours"):
        (logdir / name).mkdir(parents=True)
        atomic_write_json(logdir / name / "config.json", {})
    once, again = snapshot(logdir / "twice", "first"), snapshot(logdir / "twice", "second")
    (logdir / "twice" / tbmeta.HPARAMS_FILE).unlink()
    (logdir / "twice" / "events.out.tfevents.1700000000.host.1.0").write_bytes(once + again)
    newer, older = snapshot(logdir / "two-files", "written-first"), snapshot(logdir / "two-files", "written-last")
    (logdir / "two-files" / tbmeta.HPARAMS_FILE).unlink()
    (logdir / "two-files" / "events.out.tfevents.1700000100.host.1.0").write_bytes(newer)
    (logdir / "two-files" / "events.out.tfevents.1700000000.host.1.0").write_bytes(older)
    stale = snapshot(logdir / "ours", "stale")  # as if written into the curves' file at the start
    (logdir / "ours" / "events.out.tfevents.1700000000.host.1.0").write_bytes(stale)
    snapshot(logdir / "ours", "final")  # our file, rewritten at the end
    assert {run: row["sweep"] for run, row in rows(load(logdir)).items()} == \
        {"twice": "first", "two-files": "written-last", "ours": "final"}


# ---------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Two tiny runs (2 steps each, the second with another lr), side by side."""
    tmp = tmp_path_factory.mktemp("tb")
    env = {**os.environ, "SIMCLR_CACHE": str(tmp / ".cache"), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "core", "pretrain", *TINY, *extra,
                               "--run-dir", str(tmp / "runs" / name)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, extra in (("a", []), ("b", ["--lr", "0.002"]))]
    for proc in procs:
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out
    return tmp / "runs"


def test_each_run_is_one_row_with_the_same_columns(runs: Path) -> None:
    m = load(runs)
    table = rows(m)
    assert set(table) == {"a", "b"}  # one row per run, no sub-run of its own
    assert set(m.Runs()) - {"a", "b"} <= {"a/eval/knn-last"}  # only an evaluation job's own curves, never a row
    assert set(table["a"]) == set(table["b"]) == COLUMNS
    assert (table["a"]["lr"], table["b"]["lr"]) == (0.001, 0.002)
    assert table["a"]["max_steps"] == "2" and table["a"]["ema"] == "none" and table["a"]["compile"] is False
    assert table["a"]["sweep"] == "" and table["a"]["pruned"] is False
    assert ended(m, "a") == api_pb2.STATUS_SUCCESS
    content = m.PluginRunToTagToContent(metadata.PLUGIN_NAME)["a"][metadata.EXPERIMENT_TAG]
    experiment = metadata.parse_experiment_plugin_data(content)
    assert {h.name for h in experiment.hparam_infos} == COLUMNS
    assert [mi.name.tag for mi in experiment.metric_infos] == list(tbmeta.METRICS)
    for run in ("a", "b"):
        assert scalars(m, run, "knn/top1")[-1][0] == 2
        assert "| lr |" in text(m, run, "config") and "| knn_k | 10 |" in text(m, run, "config")
    assert len(list((runs / "a").glob("*tfevents*hparams"))) == 1 and not list((runs / "a").glob(".tbmeta*"))


def test_an_evaluation_adds_its_number_to_the_run_row(runs: Path, monkeypatch) -> None:
    from core.cli import main

    monkeypatch.setenv("SIMCLR_CACHE", str(runs.parent / ".cache"))
    write_notes(runs / "a", "lr probe, first try", ["probe", "lr"])
    atomic_write_json(runs / "a" / "sweep.json", {"sweep": "temp", "index": 1, "swept": {"lr": 0.001}})
    assert main(["knn", "--run-dir", str(runs / "a")]) == 0
    result = read_json(runs / "a" / "eval" / "knn-last.json")
    m = load(runs)
    assert set(rows(m)) == {"a", "b"}  # still one row each
    assert scalars(m, "a", "eval/knn_top1") == [(2, pytest.approx(result["test_top1"]))]  # at the checkpoint's step
    assert not m.Runs()["b"]["tensors"].count("eval/knn_top1")
    assert rows(m)["a"]["sweep"] == "temp"  # the job's end rewrote the row from the run's files
    notes = text(m, "a", "notes")
    assert "lr probe, first try" in notes and "`lr`, `probe`" in notes and "sweep: `temp` #1 (lr=0.001)" in notes
    assert ended(m, "a") == api_pb2.STATUS_SUCCESS


def test_a_job_on_another_dataset_is_not_the_run_number() -> None:
    assert tbmeta.eval_tag("linear-eval", "linear-last", "last") == "eval/linear_top1"
    assert tbmeta.eval_tag("knn", "knn-epoch_0002", "epoch_0002") == "eval/knn_top1"
    assert tbmeta.eval_tag("finetune", "finetune-0.1-last", "last") == "eval/finetune_top1"
    assert tbmeta.eval_tag("knn", "knn-cifar100-last", "last") is None
    assert tbmeta.add_eval_result(Path("/nonexistent"), "knn", "knn-cifar100-last", "last", {"test_top1": 0.5}) is None


# ---------------------------------------------------------------------- the run's end
@pytest.mark.parametrize("end, pruned, status", [("pruned", True, api_pb2.STATUS_UNKNOWN),
                                                 ("finished", False, api_pb2.STATUS_SUCCESS),
                                                 ("fail", False, api_pb2.STATUS_FAILURE)])
def test_the_run_end_rewrites_its_row(tmp_path: Path, end: str, pruned: bool, status: int) -> None:
    """RunLog writes the row at the start (no end yet) and again at the end: a fresh reader
    shows the end's (``pruned``, the session status), not the start's."""
    run = tmp_path / "runs" / "r"
    log = RunLog(run, PretrainConfig.from_dict(preset("tiny")), argv=["test"])
    m = load(run.parent)
    assert rows(m)["r"]["pruned"] is False and ended(m, "r") is None
    if end == "fail":
        log.fail("boom")
    else:
        log.finish(end, SimpleNamespace(step=3, epoch=0, total_steps=8))
    assert read_json(run / "status.json")["state"] == ("failed" if end == "fail" else end)
    m = load(run.parent)
    assert rows(m)["r"]["pruned"] is pruned and ended(m, "r") == status
    assert set(rows(m)["r"]) == COLUMNS


def test_a_run_without_a_config_gets_no_row_and_odd_values_keep_their_column_type(tmp_path: Path) -> None:
    assert tbmeta.write(tmp_path) is None and not list(tmp_path.iterdir())
    run = tmp_path / "old"
    run.mkdir()
    atomic_write_json(run / "config.json", {"lr": "fast", "ema": 0.99, "retired_key": 1})  # a bad value, an old key
    update_status(run / "status.json", lambda _: {"state": "some-new-state"})
    row = tbmeta.hparams(run)
    assert set(row) == COLUMNS
    assert row["lr"] == PretrainConfig().lr and row["ema"] == "0.99" and row["pruned"] is False
    assert tbmeta.session_status(read_json(run / "status.json")) == api_pb2.STATUS_UNKNOWN  # any state, generically
    gone = {"state": "running", "pid": 2 ** 22 + 1, "start_time": 1, "host": socket.gethostname(),
            "heartbeat": time.time()}
    assert tbmeta.session_status(gone) == api_pb2.STATUS_FAILURE  # crashed
    alive = {**gone, "pid": os.getpid(), "start_time": process_start_time(os.getpid())}
    assert tbmeta.session_status(alive) is None  # live: no end yet
    tbmeta.write(run)
    shutil.copytree(run, tmp_path / "logdir" / "old")
    assert "retired_key" in text(load(tmp_path / "logdir"), "old", "config")
