"""What a run's checkpoint holds, and resuming from it: weights, optimizer, scaler, EMA,
progress, every rank's RNG streams and the config (files: ``core.training.checkpoint``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.simclr import dist
from core.simclr.models import clean_state_dict, unwrap
from core.training.checkpoint import epoch_checkpoints, load_checkpoint, save_checkpoint
from core.training.pipeline import Pipeline
from core.training.session import Progress, Saved, Session


def save(s: Session, name: str = "last") -> None:
    """checkpoints/<name>.pt. Every rank calls it (the RNG states are gathered); rank 0 writes."""
    rng = {"torch": torch.get_rng_state(), "pipeline": gather_rng(s.pipe.rng_state())}
    if s.checkpoints is None:
        return
    if dist.is_main():
        save_checkpoint({
            "model": clean_state_dict(unwrap(s.model).state_dict()), "optimizer": s.optimizer.state_dict(),
            "scaler": s.scaler.state_dict(), "ema": s.ema.module.state_dict() if s.ema else None,
            "progress": vars(s.progress), "rng": rng, "config": s.cfg.to_dict()}, s.checkpoints / f"{name}.pt")
    if name == "last":
        s.saved = Saved(s.progress.step, s.progress.epoch)


def gather_rng(state: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's pipeline RNG state (rank order), so each rank resumes its own stream."""
    if not dist.is_dist():
        return [state.cpu()]
    out = [None] * dist.get_world_size()
    torch.distributed.all_gather_object(out, state.cpu())
    return out  # type: ignore[return-value]


def read_last(run_dir: Path, device: torch.device) -> dict[str, Any]:
    """checkpoints/last.pt of ``run_dir``, or a CheckpointError saying what to do instead."""
    return load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location=device, hint=resume_hint(run_dir))


def restore(s: Session, ckpt: dict[str, Any]) -> None:
    """Continue from ``ckpt``: into the bare model (before it is wrapped), its optimizer and the rest."""
    unwrap(s.model).load_state_dict(clean_state_dict(ckpt["model"]))
    s.optimizer.load_state_dict(ckpt["optimizer"])
    s.scaler.load_state_dict(ckpt["scaler"])
    if s.ema is not None and ckpt.get("ema") is not None:
        s.ema.module.load_state_dict(ckpt["ema"])
    s.progress = Progress(**ckpt["progress"])
    s.saved = Saved(s.progress.step, s.progress.epoch)
    restore_rng(ckpt["rng"], s.pipe, dist.get_rank())
    s.log.resumed(s.progress.step)


def restore_rng(rng: dict[str, Any], pipe: Pipeline, rank: int) -> None:
    torch.set_rng_state(rng["torch"])
    states = rng["pipeline"]
    pipe.set_rng_state(states[rank] if rank < len(states) else states[0])


def resume_hint(run_dir: Path) -> str:
    """What to do when a run's last.pt cannot be read: an epoch checkpoint, or a new run."""
    saved = epoch_checkpoints(run_dir)
    if saved:
        return f"to resume from an earlier save, copy {saved[-1]} over last.pt; or start a new run"
    return "start a new run with another --run-dir (no earlier epoch_NNNN.pt to fall back on)"
