"""The kNN monitor: how well the encoder's features separate the classes, while it trains.

A fixed random subset of the labelled train split is the memory bank, one of the test split
the queries; pretraining itself never sees a label.
"""

from __future__ import annotations

import torch
from torch import nn

from core.config import PretrainConfig
from core.simclr.augment import AugmentConfig
from core.simclr.knn import knn_accuracy
from core.training.data import has_test_split, is_labelled
from core.training.device import amp_dtype
from core.training.pipeline import encode, labelled_split

KNN_BANK_IMAGES = 10_000   # a fixed random subset of the labelled train split
KNN_QUERY_IMAGES = 10_000  # ... and of the test split


class KnnMonitor:
    def __init__(self, cfg: PretrainConfig, views: AugmentConfig, device: torch.device) -> None:
        self.bank = labelled_split(cfg, "train", KNN_BANK_IMAGES, cfg.seed, views)
        self.query = labelled_split(cfg, "test", KNN_QUERY_IMAGES, cfg.seed, views)
        self.views, self.device, self.k = views, device, cfg.knn_k
        # as the run computes (bf16 where --precision chose it, on a CPU too), and large images
        # decoded by the run's --workers, not in the training process alone
        self.amp, self.workers = amp_dtype(cfg, device), cfg.workers

    def __call__(self, encoder: nn.Module) -> float:
        """kNN top-1 accuracy (a fraction) of ``encoder``'s features; the encoder is left as it was."""
        fb, lb = encode(encoder, self.bank, self.views, self.device, workers=self.workers, amp=self.amp)
        fq, lq = encode(encoder, self.query, self.views, self.device, workers=self.workers, amp=self.amp)
        return knn_accuracy(fb, lb, fq, lq, num_classes=int(lb.max().item()) + 1, k=self.k)


def can_monitor(cfg: PretrainConfig) -> bool:
    """Whether the data has what the monitor needs: labelled train/<class>/ and test/<class>/ images."""
    return is_labelled(cfg.dataset, cfg.data_dir) and has_test_split(cfg.dataset, cfg.data_dir)
