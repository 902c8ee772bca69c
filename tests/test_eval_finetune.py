"""Fine-tuning: exactly round(fraction x n_c) labelled images per class, and nothing else, are trained on."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

import core.evaluation.finetune as finetune_mod
from core.simclr.augment import AugmentConfig
from core.cli import main
from core.training.data import synthetic
from core.evaluation.finetune import balanced_subset, crop_flip
from tests.test_eval_checkpoints import make_run


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 1.0])
def test_balanced_subset_takes_round_fraction_of_each_class(fraction: float) -> None:
    g = torch.Generator().manual_seed(0)
    counts = {0: 1000, 1: 350, 2: 45, 3: 7}  # unbalanced on purpose
    labels = torch.cat([torch.full((n,), c) for c, n in counts.items()])
    labels = labels[torch.randperm(len(labels), generator=g)]
    idx = balanced_subset(labels, fraction, seed=1)
    got = Counter(labels[idx].tolist())
    for c, n in counts.items():
        assert got[c] == max(1, round(fraction * n)), (c, got[c])
    assert len(set(idx.tolist())) == len(idx)  # no image twice
    assert torch.equal(balanced_subset(labels, fraction, seed=1), idx)
    if fraction < 1:
        assert not torch.equal(balanced_subset(labels, fraction, seed=2), idx)


def test_crop_flip_is_seeded_and_normalised() -> None:
    cfg = AugmentConfig(image_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    flat = torch.full((4, 3, 24, 24), 204, dtype=torch.uint8)  # 0.8 everywhere
    out = crop_flip(flat, cfg, torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 16, 16)
    assert torch.allclose(out, torch.full_like(out, (0.8 - 0.5) / 0.25), atol=1e-5)
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    a = crop_flip(x, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(a, crop_flip(x, cfg, torch.Generator().manual_seed(1)))


def test_finetune_trains_on_exactly_the_label_subset(tmp_path: Path, monkeypatch) -> None:
    run = make_run(tmp_path / "run")
    seen: list[torch.Tensor] = []
    real = finetune_mod.batches_of

    def recording(idx, batch_size, generator):
        out = real(idx, batch_size, generator)
        seen.append(torch.cat(out))
        return out

    monkeypatch.setattr(finetune_mod, "batches_of", recording)
    assert main(["finetune", "--run-dir", str(run), "--label-fraction", "0.1", "--epochs", "2",
                 "--batch-size", "64"]) == 0
    labels = synthetic(2560, 16, seed=0).labels  # the run's labelled train split
    expected = {c: round(0.1 * int((labels == c).sum())) for c in range(10)}
    assert len(seen) == 2
    for epoch in seen:
        assert len(set(epoch.tolist())) == len(epoch)
        assert Counter(labels[epoch].tolist()) == expected
    assert torch.equal(seen[0].sort().values, seen[1].sort().values)  # the same images each epoch
    result = json.loads((run / "eval" / "finetune-0.1-last.json").read_text())
    assert result["labelled_per_class"] == [expected[c] for c in range(10)]
    assert result["labelled_images"] == sum(expected.values())
    assert result["test_size"] == 512 and 0 <= result["test_top1"] <= 1
    status = json.loads((run / "eval" / "finetune-0.1-last" / "status.json").read_text())
    assert status["kind"] == "finetune" and status["state"] == "finished" and status["epoch"] == 2
    tags = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {t["tag"] for t in tags} == {"finetune/train_loss", "finetune/test_top1"}
    assert all(t["job"] == "finetune-0.1-last" for t in tags)
