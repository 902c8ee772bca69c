"""Checkpoints: written atomically by one process, loaded safely (weights_only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from core.errors import CheckpointError  # defined torch-free, for the command line

VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """torch.save to a temp file beside ``path``, fsync, then rename over it.

    A crash or a full disk mid-write leaves the previous checkpoint untouched; the
    partial temp file is removed and the error propagates. A process killed mid-write
    cannot remove its temp file: the next successful save of ``path`` does.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({**state, "version": VERSION}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _remove_stale_temps(path)


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files of ``path`` left by killed writers (one writer per run at a time)."""
    for stale in path.parent.glob(f".{path.name}.tmp*"):
        stale.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", hint: str | None = None,
                    mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code runs).

    ``hint`` is what the error tells the user to do instead (default: another checkpoint
    of the run, or a new run). ``mmap=True`` maps the tensors instead of reading them: a
    cheap check that the file is whole, before a command writes anything.
    """
    path = Path(path)
    hint = hint or f"use another checkpoint in {path.parent} or start a new run"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; list the run's checkpoints/ folder or train first")
    try:
        try:
            state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except Exception:  # noqa: BLE001 - a file system without mmap: read it instead
            if not mmap:
                raise
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a torn or foreign file fails in many ways
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({type(e).__name__}); {hint}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a simclr-tui checkpoint (no 'model' entry); {hint}")
    return state


def epoch_checkpoints(run_dir: str | Path) -> list[Path]:
    """A run's checkpoints/epoch_NNNN.pt files, oldest epoch first (by number, not name)."""
    def epoch(p: Path) -> int:
        digits = p.stem.removeprefix("epoch_")
        return int(digits) if digits.isdigit() else -1
    return sorted((Path(run_dir) / "checkpoints").glob("epoch_*.pt"), key=epoch)


def checkpoint_path(run_dir: str | Path, name: str = "last") -> Path:
    """runs/NAME/checkpoints/<name>.pt for name 'last', 'epoch_NNNN' (or a path to a .pt)."""
    p = Path(name)
    if p.suffix == ".pt" and p.exists():
        return p
    return Path(run_dir) / "checkpoints" / f"{name.removesuffix('.pt')}.pt"
