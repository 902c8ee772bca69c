"""One training run's state, in one typed object: what `setup.open_session` builds and `train` runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.config import PretrainConfig
from core.jobs.prune import Pruner
from core.training.model import EMA
from core.training.monitor import KnnMonitor
from core.training.pipeline import Pipeline
from core.training.runlog import RunLog


@dataclass
class Progress:
    """Where training is; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0          # completed epochs
    total_steps: int = 0
    train_seconds: float = 0.0
    budget_fixed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Saved:
    """Where checkpoints/last.pt is: what a resume starts from."""

    step: int
    epoch: int


@dataclass
class Session:
    """Everything a run trains with. ``model`` is wrapped as asked (DDP, DataParallel, compile):
    ``core.simclr.models.unwrap(model)`` is the SimCLRModel."""

    cfg: PretrainConfig
    device: torch.device
    pipe: Pipeline
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: EMA | None
    progress: Progress
    log: RunLog
    monitor: KnnMonitor | None = None   # None: no kNN monitor
    pruner: Pruner | None = None        # None: no sweep prunes this run
    checkpoints: Path | None = None     # where checkpoints go (rank 0 writes); None: nowhere (benchmarks)
    saved: Saved | None = None          # None until last.pt is written or read

    @property
    def steps_per_epoch(self) -> int:
        return len(self.pipe)
