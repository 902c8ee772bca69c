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
    rng = {"torch": torch.get_rng_state(), "pipeline": gather_rng(s.pipe.rng_state()), "device": s.device.type}
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


def read_last(run_dir: Path) -> dict[str, Any]:
    """checkpoints/last.pt of ``run_dir``, or a CheckpointError saying what to do instead.

    Read on the CPU whatever the training device: its RNG states must be CPU byte tensors
    (``torch.set_rng_state`` and a CUDA generator's ``set_state`` take nothing else), and the
    weights reach the device as they are loaded into the model and the optimizer.
    """
    return load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location="cpu", hint=resume_hint(run_dir))


def restore(s: Session, ckpt: dict[str, Any]) -> None:
    """Continue from ``ckpt``: into the bare model (before it is wrapped), its optimizer and the rest."""
    unwrap(s.model).load_state_dict(clean_state_dict(ckpt["model"]))
    s.optimizer.load_state_dict(ckpt["optimizer"])
    s.scaler.load_state_dict(ckpt["scaler"])
    if s.ema is not None and ckpt.get("ema") is not None:
        s.ema.module.load_state_dict(ckpt["ema"])
    s.progress = Progress(**ckpt["progress"])
    s.saved = Saved(s.progress.step, s.progress.epoch)
    note = restore_rng(ckpt["rng"], s.pipe, dist.get_rank(), s.device, s.progress.step)
    s.log.resumed(s.progress.step)
    if note:
        s.log.say(note)


def restore_rng(rng: dict[str, Any], pipe: Pipeline, rank: int, device: torch.device, step: int) -> str | None:
    """Put back torch's CPU stream and this rank's view stream (saved as CPU byte tensors).

    A view stream saved on another device type (a CUDA generator's state is not a CPU one's)
    cannot be restored: the pipeline is reseeded at ``step`` instead, and the returned line
    says so (None when everything carried over).
    """
    torch.set_rng_state(rng["torch"])
    states = rng["pipeline"]
    state = states[rank] if rank < len(states) else states[0]
    saved_on = rng.get("device")  # checkpoints from before it was recorded: their state's size tells
    if saved_on == device.type or (saved_on is None and state.numel() == pipe.rng_state().numel()):
        pipe.set_rng_state(state)
        return None
    pipe.reseed(step)
    return (f"checkpoints/last.pt was saved on {saved_on or 'another device type'} and is resumed on "
            f"{device.type}: its augmentation RNG cannot move between them, so it was reseeded "
            f"(the views from step {step} on differ from an uninterrupted run's)")


def resume_hint(run_dir: Path) -> str:
    """What to do when a run's last.pt cannot be read: an epoch checkpoint, or a new run."""
    saved = epoch_checkpoints(run_dir)
    if saved:
        return f"to resume from an earlier save, copy {saved[-1]} over last.pt; or start a new run"
    return "start a new run with another --run-dir (no earlier epoch_NNNN.pt to fall back on)"
