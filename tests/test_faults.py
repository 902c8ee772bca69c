"""Faults inside the trainer: non-finite loss, a full disk while checkpointing."""

from __future__ import annotations

import errno

import pytest
import torch

from core.training import checkpoint as ckpt_mod
from core import cli
from core.training import trainer
from core.training.checkpoint import load_checkpoint
from core.runs import read_json, read_metrics

ARGS = ["pretrain", "--preset", "tiny", "--epochs", "2", "--knn-every", "0"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLR_CACHE", str(tmp_path / ".cache"))


def nan_at(call: int):
    """An NT-Xent that returns NaN on its `call`-th use (1-based)."""
    class NaNAt(trainer.NTXentLoss):
        calls = 0

        def forward(self, z_i, z_j):
            NaNAt.calls += 1
            loss = super().forward(z_i, z_j)
            return loss * float("nan") if NaNAt.calls == call else loss
    return NaNAt


def test_nan_loss_stops_within_one_step_keeping_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(trainer, "NTXentLoss", nan_at(11))
    run = tmp_path / "r"
    assert cli.main([*ARGS, "--run-dir", str(run)]) == 1
    status = read_json(run / "status.json")
    assert status["state"] == "failed" and "loss became nan at step 10" in status["error"]
    # the checkpoint is the one from the end of epoch 1, before the divergence
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["progress"]["step"] == 8
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    losses = [r for r in read_metrics(run / "metrics.jsonl")[0] if r["tag"] == "train/loss"]
    assert len(losses) == 10  # detected at the step it happened: nothing after it was logged
    assert "simclr: failed: TrainingError: loss became nan" in capsys.readouterr().err


def test_nan_loss_skipped_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "NTXentLoss", nan_at(3))
    run = tmp_path / "r"
    assert cli.main([*ARGS, "--nan-policy", "skip", "--run-dir", str(run)]) == 0
    status = read_json(run / "status.json")
    assert status["state"] == "finished" and status["step"] == 16
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert "step skipped" in (run / "stdout.log").read_text()


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] >= 3:  # last.pt + epoch_0001.pt of epoch 1 succeed; epoch 2 runs out of space
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ckpt_mod.torch, "save", save)
    run = tmp_path / "r"
    assert cli.main([*ARGS, "--checkpoint-every", "1", "--run-dir", str(run)]) == 1
    status = read_json(run / "status.json")
    assert status["state"] == "failed" and "No space left on device" in status["error"]
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["progress"]["step"] == 8
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_0001.pt", "last.pt"]
