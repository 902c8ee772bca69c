"""Fine-tuning: the whole encoder and a linear head, trained on a class-balanced label subset.

Following the SimCLR paper (Appendix B.5): SGD with Nesterov momentum 0.9, learning rate
0.05 x batch/256, no warmup and a cosine decay to 0, no weight decay, and only light
augmentation -- a random resized crop (area ``CROP_SCALE``) and a horizontal flip. The
label subset takes exactly ``round(fraction x n_c)`` images of each class c (at least one),
drawn with the job's seed. BatchNorm trains with the encoder; the test set is scored with
BatchNorm in eval mode and no augmentation, every ``eval_every`` epochs for the live curve
and after the last epoch for the result.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.simclr.augment import AugmentConfig, crop_flip_batch, crop_flip_transform
from core.training.data import TensorData
from core.training.pipeline import augment_config, encode, labelled_split
from core.simclr.schedule import set_lr, warmup_cosine
from core.evaluation.features import FeatureSource, split_classes
from core.evaluation.job import EvalJob
from core.evaluation.metrics import classification_report, topk_accuracy

CROP_SCALE = (0.2, 1.0)


def default_epochs(fraction: float) -> int:
    """The paper's 60 epochs for 1% of the labels and 30 for 10%; 15 with all labels (our choice)."""
    return 60 if fraction <= 0.01 else 30 if fraction <= 0.1 else 15


@dataclass
class FinetuneSettings:
    """How fine-tuning trains; saved with every result."""

    label_fraction: float
    epochs: int
    batch_size: int = 256
    lr: float | None = None          # None: 0.05 * batch_size / 256 (the paper's rule)
    weight_decay: float = 0.0
    eval_every: int = 1
    seed: int = 0

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else 0.05 * self.batch_size / 256

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lr": self.peak_lr, "optimizer": "sgd-nesterov", "momentum": 0.9,
                "schedule": "cosine, no warmup", "crop_scale": list(CROP_SCALE)}


def balanced_subset(labels: Tensor, fraction: float, seed: int = 0) -> Tensor:
    """Indices of exactly ``round(fraction * n_c)`` (at least 1) random images of each class c.

    Shapes: labels (N,) int64 -> indices (M,) sorted. Deterministic in (labels, fraction, seed).
    """
    g = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    picks = []
    for c in labels.unique(sorted=True).tolist():
        members = (labels == c).nonzero().squeeze(1)
        n = max(1, round(fraction * len(members)))
        picks.append(members[torch.randperm(len(members), generator=g)[:n]])
    return torch.cat(picks).sort().values


def crop_flip(images: Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> Tensor:
    """Random resized crop (area CROP_SCALE) and horizontal flip of a uint8 batch, then normalised.

    The augmentation package's crop+flip with fine-tuning's crop area; ``cfg.crop_scale``
    (pre-training's) is not used.

    Shapes: images (B, 3, H, W) uint8 -> (B, 3, S, S) float32, on the images' device.
    """
    return crop_flip_batch(images, replace(cfg, crop_scale=CROP_SCALE), generator)


def split_labels(data) -> Tensor:
    """Labels (N,) of a labelled split, without decoding any image."""
    if isinstance(data, TensorData):
        return data.labels
    return torch.tensor([data.label(i) for i in range(len(data))], dtype=torch.long)


def batches_of(idx: Tensor, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """One epoch: the indices shuffled and cut into ceil(n / batch) near-equal batches.

    Every image is used every epoch and no batch is tiny (BatchNorm trains on each).
    """
    perm = idx[torch.randperm(len(idx), generator=generator)]
    return list(perm.tensor_split(math.ceil(len(idx) / batch_size)))


def finetune(job: EvalJob, source: FeatureSource, s: FinetuneSettings) -> dict[str, Any]:
    """Fine-tune the source's encoder with a linear head on a label subset; score the test set.

    The encoder is the one frozen evaluations use (``source.encoder()``), but it trains here.
    """
    from core.training.device import amp_dtype

    job.progress(force=True, phase="loading")
    cfg, device, workers = source.cfg, source.device, source.workers
    encoder = source.encoder()
    views = augment_config(cfg)
    train_data, test_data = labelled_split(cfg, "train", views=views), labelled_split(cfg, "test", views=views)
    labels = split_labels(train_data)
    subset = balanced_subset(labels, s.label_fraction, s.seed)
    classes = split_classes(train_data) or [str(i) for i in range(int(labels.max()) + 1)]
    num_classes = max(len(classes), int(labels.max()) + 1)
    per_class = torch.bincount(labels[subset], minlength=num_classes).tolist()
    job.say(f"fine-tuning on {len(subset)} labelled images ({s.label_fraction:g} of {len(labels)}; "
            f"per class {min(per_class)}-{max(per_class)}) for {s.epochs} epochs")

    head = nn.Linear(encoder.feature_dim, num_classes).to(device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    model = nn.Sequential(encoder, head)
    optimizer = torch.optim.SGD(model.parameters(), lr=s.peak_lr, momentum=0.9, nesterov=True,
                                weight_decay=s.weight_decay)
    acfg = replace(views, crop_scale=CROP_SCALE)  # crop, flip and normalisation only
    amp = amp_dtype(cfg, device)
    g = torch.Generator().manual_seed(s.seed)
    aug_g = torch.Generator(device=device).manual_seed(s.seed + 1)
    torch.manual_seed(s.seed)  # DataLoader workers draw their augmentation seeds from it
    steps_per_epoch = math.ceil(len(subset) / s.batch_size)
    total_steps = s.epochs * steps_per_epoch
    if isinstance(train_data, TensorData):
        images = train_data.images.to(device)
        ys = train_data.labels.to(device)

        def epoch_batches() -> Iterator[tuple[Tensor, Tensor]]:
            for idx in batches_of(subset, s.batch_size, g):
                idx = idx.to(device)
                yield crop_flip(images[idx], acfg, aug_g), ys[idx]
    else:
        from core.training.data import ImageListDataset
        augmented = ImageListDataset(cfg.dataset, cfg.data_dir, "labelled-train",
                                     crop_flip_transform(acfg))

        def epoch_batches() -> Iterator[tuple[Tensor, Tensor]]:
            sampler = [b.tolist() for b in batches_of(subset, s.batch_size, g)]
            loader = torch.utils.data.DataLoader(augmented, batch_sampler=sampler, num_workers=workers,
                                                 pin_memory=device.type == "cuda")
            for x, y in loader:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def test_logits() -> tuple[Tensor, Tensor]:
        return encode(model, test_data, views, device, workers=workers, amp=amp)   # eval mode, no augmentation; as it trained

    step, t0 = 0, time.perf_counter()
    for epoch in range(1, s.epochs + 1):
        model.train()
        total, seen = torch.zeros((), device=device), 0
        for x, y in epoch_batches():
            set_lr(optimizer, warmup_cosine(step, total_steps, 0, s.peak_lr))
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total += loss.detach() * len(y)
            seen += len(y)
            job.progress(phase=f"epoch {epoch}/{s.epochs}, step {step}/{total_steps}", epoch=epoch - 1,
                         total_epochs=s.epochs, step=step, total_steps=total_steps)
            job.check_stop()
        train_loss = total.item() / seen
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"fine-tuning loss became {train_loss} in epoch {epoch}; lower --lr")
        job.metric("finetune/train_loss", train_loss, epoch)
        msg = f"epoch {epoch}/{s.epochs}: train loss {train_loss:.4f}"
        if epoch % s.eval_every == 0 and epoch < s.epochs:
            job.progress(force=True, phase=f"epoch {epoch}: scoring the test set")
            logits, y_test = test_logits()
            acc = topk_accuracy(logits, y_test)
            job.metric("finetune/test_top1", acc, epoch)
            msg += f", test top-1 {acc:.4f}"
        job.say(msg)
        job.progress(force=True, epoch=epoch, total_epochs=s.epochs, step=step, total_steps=total_steps)
    train_seconds = time.perf_counter() - t0
    job.progress(force=True, phase="scoring the test set")
    logits, y_test = test_logits()
    result = classification_report(logits, y_test, classes)
    job.metric("finetune/test_top1", result["test_top1"], s.epochs)
    return {**result, "protocol": "finetune", "settings": s.to_dict(), "label_fraction": s.label_fraction,
            "labelled_images": len(subset), "labelled_per_class": per_class, "train_size": len(labels),
            "seconds_fit": round(train_seconds, 3), **source.describe()}
