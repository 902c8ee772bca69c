"""Classification metrics, always counted over every test sample (never averaged over batches)."""

from __future__ import annotations

import torch
from torch import Tensor


def topk_accuracy(scores: Tensor, labels: Tensor, k: int = 1) -> float:
    """Fraction of samples whose label is among the k highest scores.

    Shapes: scores (N, C), labels (N,). ``k`` larger than C counts every sample as a hit.
    """
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return (top == labels.to(top.device)[:, None]).any(dim=1).float().mean().item()


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Counts (C, C) int64: row = true class, column = predicted class."""
    flat = labels.long().cpu() * num_classes + pred.long().cpu()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def classification_report(scores: Tensor, labels: Tensor, classes: list[str]) -> dict:
    """Top-1, top-5, per-class accuracy and the confusion matrix, as plain JSON values.

    A class with no test samples gets a per-class accuracy of null.
    """
    labels = labels.cpu()
    scores = scores.float().cpu()
    cm = confusion_matrix(scores.argmax(1), labels, len(classes))
    support = cm.sum(1)
    per_class = {c: (cm[i, i].item() / support[i].item() if support[i] else None) for i, c in enumerate(classes)}
    return {
        "test_top1": topk_accuracy(scores, labels, 1),
        "test_top5": topk_accuracy(scores, labels, 5),
        "test_size": len(labels),
        "test_per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }
