"""Cached features: reused by a second evaluation, invalidated when the checkpoint changes."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import core.evaluation.features as features_mod
from core.training.checkpoint import load_checkpoint, save_checkpoint
from core.cli import main
from tests.test_eval_checkpoints import make_run


def result(run: Path, name: str = "linear-last") -> dict:
    return json.loads((run / "eval" / f"{name}.json").read_text())


def test_second_run_reuses_the_cache_and_a_new_checkpoint_invalidates_it(tmp_path: Path, monkeypatch) -> None:
    run = make_run(tmp_path / "run")
    assert main(["linear-eval", "--run-dir", str(run)]) == 0
    first = result(run)
    assert first["features_cached"] is False
    cache = run / "features" / "train-last.pt"
    stamp = cache.stat().st_mtime_ns
    cached_x = torch.load(cache, weights_only=True)["features"]

    def no_encoding(*args, **kwargs):
        raise AssertionError("features were re-encoded although the cache is valid")

    monkeypatch.setattr(features_mod, "encode", no_encoding)
    assert main(["knn", "--run-dir", str(run), "--k", "10"]) == 0
    assert main(["linear-eval", "--run-dir", str(run)]) == 0
    assert result(run)["features_cached"] is True
    assert result(run, "knn-last")["features_cached"] is True
    assert result(run)["test_top1"] == first["test_top1"]
    assert cache.stat().st_mtime_ns == stamp

    # pretraining went on: same file name, new weights -> the cache must not be trusted
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    ckpt["model"] = {k: (v + 0.05 if v.is_floating_point() else v) for k, v in ckpt["model"].items()}
    ckpt["progress"] = {"step": 16, "epoch": 2}
    save_checkpoint(ckpt, run / "checkpoints" / "last.pt")
    monkeypatch.undo()
    assert main(["linear-eval", "--run-dir", str(run)]) == 0
    third = result(run)
    assert third["features_cached"] is False and third["pretrain_step"] == 16
    assert not torch.allclose(torch.load(cache, weights_only=True)["features"], cached_x)


def test_each_checkpoint_has_its_own_cache(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    (run / "checkpoints" / "epoch_0001.pt").write_bytes((run / "checkpoints" / "last.pt").read_bytes())
    assert main(["knn", "--run-dir", str(run), "--checkpoint", "epoch_0001", "--k", "5"]) == 0
    assert sorted(p.name for p in (run / "features").iterdir()) == ["test-epoch_0001.pt", "train-epoch_0001.pt"]
    assert result(run, "knn-epoch_0001")["checkpoint"] == "epoch_0001"


def test_unreadable_cache_is_rebuilt(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    (run / "features").mkdir()
    (run / "features" / "test-last.pt").write_bytes(b"not a tensor file")
    assert main(["knn", "--run-dir", str(run), "--k", "5"]) == 0
    assert result(run, "knn-last")["features_cached"] is False
    assert torch.load(run / "features" / "test-last.pt", weights_only=True)["features"].shape[0] == 512
