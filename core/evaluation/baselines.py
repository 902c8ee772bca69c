"""Baselines for the results table, made into run directories so every command treats them alike.

``simclr baseline raw-pixels|random-encoder --run-dir runs/NAME ...`` writes
``config.json`` (the data and architecture evaluated), ``meta.json`` and a ``status.json``
of kind ``baseline`` (state ``finished``, ``"baseline": "<which>"``), then runs the
linear protocol on it as the job ``eval/linear-last``:

* ``raw-pixels``: logistic regression on the normalised, flattened pixels (the seed's
  "Logistic Regression" row); ``linear-eval`` and ``knn`` on this run use pixels;
* ``random-encoder``: the architecture with its random initialisation (seeded), saved as
  ``checkpoints/last.pt``, so ``linear-eval``, ``knn`` and ``finetune`` work unchanged.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from core.config import PretrainConfig
from core.runs import StatusFile, atomic_write_json, read_json

BASELINES = ("raw-pixels", "random-encoder")


def baseline_of(run_dir: Path) -> str | None:
    """Which baseline a run directory is, or None for a pretraining run."""
    status = read_json(Path(run_dir) / "status.json") or {}
    return status.get("baseline") if status.get("kind") == "baseline" else None


def create_baseline(run_dir: Path, which: str, cfg: PretrainConfig, argv: list[str] | None = None) -> None:
    """Write the baseline's run directory (config, meta, status; the random encoder's checkpoint)."""
    from core.training.runlog import git_commit, versions

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    atomic_write_json(run_dir / "meta.json", {"versions": versions(), "git_commit": git_commit(),
                                             "argv": argv or sys.argv, "started": time.time(),
                                             "baseline": which})
    if which == "random-encoder":
        import torch

        from core.training.checkpoint import save_checkpoint
        from core.simclr.models import build_model

        torch.manual_seed(cfg.seed)
        model = build_model(cfg.backbone, cfg.width, cfg.image_size, cfg.projection_dim)
        save_checkpoint({"model": model.state_dict(), "ema": None, "config": cfg.to_dict(),
                         "progress": {"step": 0, "epoch": 0}}, run_dir / "checkpoints" / "last.pt")
    status = StatusFile(run_dir / "status.json", kind="baseline", baseline=which,
                        dataset=cfg.dataset, backbone=cfg.backbone, total_epochs=0)
    status.update(state="finished")
