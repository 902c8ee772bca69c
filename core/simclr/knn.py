"""The weighted kNN classifier on frozen features (the pretraining monitor and `simclr knn`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def knn_predict(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                num_classes: int, k: int = 200, temperature: float = 0.1,
                chunk: int = 1024) -> Tensor:
    """Class scores by temperature-weighted votes of the k nearest (cosine) neighbours.

    Each of the k neighbours with cosine similarity s votes for its class with weight
    exp(s / T) (Wu et al., 2018, as in the SimCLR/MoCo kNN monitors).

    Shapes: train_features (N, D), train_labels (N,), test_features (M, D)
    -> scores (M, num_classes).
    """
    k = min(k, train_features.shape[0])
    bank = F.normalize(train_features.float(), dim=1)
    labels = train_labels.to(bank.device).long()
    scores = []
    for i in range(0, test_features.shape[0], chunk):
        q = F.normalize(test_features[i:i + chunk].float().to(bank.device), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        votes = torch.zeros(q.shape[0], num_classes, device=bank.device)
        votes.scatter_add_(1, labels[idx], (sim / temperature).exp())
        scores.append(votes)
    return torch.cat(scores) if scores else torch.zeros(0, num_classes)


def knn_accuracy(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                 test_labels: Tensor, num_classes: int, k: int = 200,
                 temperature: float = 0.1) -> float:
    """Top-1 accuracy, as a fraction of all test samples."""
    scores = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return (scores.argmax(1).cpu() == test_labels.cpu()).float().mean().item()
