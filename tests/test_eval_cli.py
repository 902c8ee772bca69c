"""The evaluation commands end to end: files written, exit codes, baselines, results table, stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.cli import main
from core.simclr.knn import knn_accuracy
from tests.test_eval_checkpoints import make_run


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_linear_eval_writes_the_run_directory_contract(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    assert main(["linear-eval", "--run-dir", str(run), "--protocol", "adam", "--epochs", "3"]) == 0
    res = read(run / "eval" / "linear-last.json")
    assert res["protocol"] == "adam" and res["settings"]["epochs"] == 3
    assert res["test_size"] == 512 and res["train_size"] == 2560
    assert 0 <= res["test_top1"] <= res["test_top5"] <= 1
    assert len(res["confusion_matrix"]) == 10 and sum(map(sum, res["confusion_matrix"])) == 512
    assert set(res["test_per_class"]) == set(res["classes"])
    job = run / "eval" / "linear-last"
    status = read(job / "status.json")
    assert (status["kind"], status["state"], status["parent"], status["checkpoint"]) == \
        ("linear-eval", "finished", "run", "last")
    assert status["epoch"] == status["total_epochs"] == 3
    assert list(job.glob("events.out.tfevents.*")) and "linear classifier (adam)" in (job / "stdout.log").read_text()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["tag"] for r in records} == {"linear/train_loss", "linear/test_top1", "linear/test_top5"}
    assert all(r["job"] == "linear-last" for r in records)
    assert [r["step"] for r in records if r["tag"] == "linear/train_loss"] == [1, 2, 3]
    final = [r for r in records if r["tag"] == "linear/test_top1"][-1]
    assert final["value"] == res["test_top1"]


def test_knn_job_matches_knn_on_the_cached_features(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    assert main(["knn", "--run-dir", str(run), "--k", "15", "--temperature", "0.2"]) == 0
    train = torch.load(run / "features" / "train-last.pt", weights_only=True)
    test = torch.load(run / "features" / "test-last.pt", weights_only=True)
    expected = knn_accuracy(train["features"], train["labels"], test["features"], test["labels"], 10, 15, 0.2)
    res = read(run / "eval" / "knn-last.json")
    assert res["test_top1"] == pytest.approx(expected)
    assert res["settings"] == {"k": 15, "temperature": 0.2}
    assert read(run / "eval" / "knn-last" / "status.json")["kind"] == "knn"


def test_knn_with_k_beyond_the_bank_records_the_k_it_used(tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path / "run")
    assert main(["knn", "--run-dir", str(run), "--k", "100000"]) == 0
    assert read(run / "eval" / "knn-last.json")["settings"]["k"] == 2560  # the tiny run's train split
    assert "every one of them votes (k = 2560)" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["linear-eval", "--checkpoint", "epoch_0007"],
    ["linear-eval", "--checkpoint", "../last"],
    ["linear-eval", "--protocol", "sgd"],
    ["linear-eval", "--epochs", "0"],
    ["linear-eval", "--dataset", "folder"],
    ["knn", "--k", "0"],
    ["knn", "--dataset", "folder", "--data-dir", "/does/not/exist"],
    ["finetune", "--label-fraction", "0"],
    ["finetune", "--label-fraction", "1.5"],
    ["finetune", "--label-fraction", "0.1", "--epochs", "0"],
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, capsys, argv: list[str]) -> None:
    run = make_run(tmp_path / "run")
    before = sorted(p.name for p in run.iterdir())
    assert main(argv[:1] + ["--run-dir", str(run)] + argv[1:]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("simclr: error: ") and "\n" not in err
    assert sorted(p.name for p in run.iterdir()) == before


def test_not_a_run_directory_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["linear-eval", "--run-dir", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("command", [["linear-eval"], ["knn"], ["finetune", "--label-fraction", "0.1"]])
@pytest.mark.parametrize("damage", ["junk", "truncated", "not ours"])
def test_unreadable_checkpoint_is_bad_input(tmp_path: Path, capsys, command: list[str], damage: str) -> None:
    run = make_run(tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    if damage == "junk":
        last.write_bytes(b"not a checkpoint")
    elif damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    else:
        torch.save({"weights": torch.zeros(2)}, last)
    before = sorted(p.name for p in run.iterdir())
    assert main([*command, "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no epoch_NNNN.pt" in err and "train again" in err  # says what to do instead
    shutil.copy(last, run / "checkpoints" / "epoch_0002.pt")
    before = sorted(p.name for p in run.iterdir())
    assert main([*command, "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"simclr: error: {'checkpoint ' if damage != 'not ours' else ''}{last}") and "\n" not in err
    assert "--checkpoint epoch_NNNN (saved: epoch_0002)" in err
    assert sorted(p.name for p in run.iterdir()) == before


def test_failure_while_running_exits_1_and_marks_the_job_failed(tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    torch.save({**ckpt, "model": {"conv1.weight": torch.zeros(1)}}, last)  # whole, but not this model's
    assert main(["linear-eval", "--run-dir", str(run)]) == 1
    status = read(run / "eval" / "linear-last" / "status.json")
    assert status["state"] == "failed" and "RuntimeError" in status["error"]
    assert not (run / "eval" / "linear-last.json").exists()
    assert "simclr: failed: RuntimeError" in capsys.readouterr().err


def test_baselines_and_results_table(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    run = make_run(runs / "simclr")
    fixed = ["--l2", "1e-3"]  # choosing l2 is tested elsewhere; a fixed one keeps this test short
    assert main(["linear-eval", "--run-dir", str(run), *fixed]) == 0
    assert main(["baseline", "raw-pixels", "--run-dir", str(runs / "pixels"), "--like", str(run), *fixed]) == 0
    assert main(["baseline", "random-encoder", "--run-dir", str(runs / "random"), "--like", str(run), *fixed]) == 0
    pixels = read(runs / "pixels" / "eval" / "linear-last.json")
    assert pixels["encoder"] == "pixels" and pixels["feature_dim"] == 3 * 16 * 16
    assert read(runs / "pixels" / "status.json")["kind"] == "baseline"
    assert (runs / "random" / "checkpoints" / "last.pt").is_file()
    # the random encoder works with every command unchanged
    assert main(["knn", "--run-dir", str(runs / "random"), "--k", "5"]) == 0
    capsys.readouterr()

    assert main(["results", "--runs-dir", str(runs)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == ("| Method | Batch Size | Backbone | Projection dim | Epochs | Optimizer | Dataset | "
                        "Accuracy | Run |")
    body = "\n".join(table[2:])
    assert "| Logistic Regression on raw pixels (L-BFGS) | - | - | - | - | - | synthetic |" in body
    assert "Random init + Linear eval. (L-BFGS) | - | ResNet18 (width 4) |" in body
    assert "Random init + kNN (k=5)" in body
    simclr = read(run / "eval" / "linear-last.json")
    assert (f"| SimCLR + Linear eval. (L-BFGS) | 32 | ResNet18 (width 4) | 16 | 1 | Adam | synthetic | "
            f"{simclr['test_top1']:.4f} | simclr |") in body

    assert main(["results", "--runs-dir", str(runs), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Method,Batch Size,Backbone,Projection dim,Epochs,Optimizer,Dataset,Accuracy,Run"
    assert len(lines) == 1 + 4

    # `simclr runs` lists each job under its run, with the job's accuracy and the run's best
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    at = next(i for i, cells in enumerate(lines) if cells[:2] == ["simclr", "pretrain"])
    assert lines[at + 1][:3] == ["└", "linear-last", "linear"]  # the job, right under its run
    assert lines[at][-1] == lines[at + 1][-1] == f"{simclr['test_top1']:.3f}"
    pixels_row = next(cells for cells in lines if cells[:1] == ["pixels"])
    assert pixels_row[1] == "baseline" and pixels_row[-1] == f"{pixels['test_top1']:.3f}"

    # a job whose name has a dot in it (finetune-0.1-last) still finds its result file
    shutil.copytree(run / "eval" / "linear-last", run / "eval" / "finetune-0.1-last")
    result = {**simclr, "kind": "finetune", "job": "finetune-0.1-last", "test_top1": 0.987}
    (run / "eval" / "finetune-0.1-last.json").write_text(json.dumps(result))
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert next(cells for cells in lines if cells[1:2] == ["finetune-0.1-last"])[-1] == "0.987"


def test_sigterm_stops_the_job_cleanly(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-m", "core", "linear-eval", "--run-dir", str(run),
                             "--protocol", "adam", "--epochs", "1000000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).parents[1])
    status_path = run / "eval" / "linear-last" / "status.json"
    deadline = time.time() + 60
    while time.time() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and "linear/train_loss" in metrics.read_text():
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    status = read(status_path)
    assert status["state"] == "stopped" and status["pid"] == proc.pid
    assert not (run / "eval" / "linear-last.json").exists()


def test_missing_torchvision_dataset_is_bad_input(tmp_path: Path, capsys, offline_cifar10) -> None:
    """No CIFAR-10 in --data-dir and no network: one line, exit 2, before anything is written."""
    data = tmp_path / "data"
    pixels = tmp_path / "runs" / "pixels"
    assert main(["baseline", "raw-pixels", "--run-dir", str(pixels), "--dataset", "cifar10",
                 "--data-dir", str(data)]) == 2
    run = make_run(tmp_path / "runs" / "simclr")
    before = sorted(p.name for p in run.iterdir())
    assert main(["linear-eval", "--run-dir", str(run), "--dataset", "cifar10", "--data-dir", str(data)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("simclr: error: cifar10 is not in") for e in errors)
    assert not pixels.exists() and not data.exists()  # the folder the download made is gone
    assert sorted(p.name for p in run.iterdir()) == before


def test_cached_features_need_no_dataset(tmp_path: Path, monkeypatch) -> None:
    """linear-eval and knn of a checkpoint with cached features read no images: no dataset
    check, no download, even when the run's CIFAR-10 folder has gone."""
    import torchvision.datasets as tvd

    run = make_run(tmp_path / "run")
    assert main(["knn", "--run-dir", str(run)]) == 0  # caches the features
    config = read(run / "config.json")
    (run / "config.json").write_text(json.dumps({**config, "dataset": "cifar10", "data_dir": str(tmp_path / "gone")}))
    for split in ("train", "test"):  # the cache is keyed by dataset: re-key it for cifar10
        cached = torch.load(run / "features" / f"{split}-last.pt", weights_only=True)
        key = {**cached["key"], "dataset": "cifar10", "data_dir": str((tmp_path / "gone").resolve()), "seed": None}
        torch.save({**cached, "key": key}, run / "features" / f"{split}-last.pt")

    def no_download(*args, **kwargs):
        raise AssertionError("the dataset was opened")

    monkeypatch.setattr(tvd, "CIFAR10", no_download)
    assert main(["linear-eval", "--run-dir", str(run)]) == 0
    assert main(["knn", "--run-dir", str(run)]) == 0
    assert not (tmp_path / "gone").exists()
