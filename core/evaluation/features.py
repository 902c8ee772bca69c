"""Frozen features for evaluation, extracted once per checkpoint and cached in the run directory.

``runs/NAME/features/<split>-<checkpoint>.pt`` (``<dataset>-<split>-<checkpoint>.pt`` when
evaluating on another dataset than the run's) holds ``{"key", "features" (N, D) float32,
"labels" (N,) int64, "classes"}``. Features are the encoder's output h (before the
projection head), BatchNorm in eval mode, no augmentation (``core.training.pipeline.encode``).

The key names the checkpoint file by size and modification time, so a checkpoint that was
rewritten (pretraining went on, a resume, a copy of another run) invalidates the cache; it
also names the encoder weights (EMA or online) and the data (dataset, data dir, image size,
split). A cache whose key differs is re-encoded and overwritten, atomically.

Raw pixels (the logistic-regression baseline) go through the same path with a flattening
"encoder" and are not cached: the decoded images already are (``core.training.data``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from core.training.checkpoint import checkpoint_path, load_checkpoint
from core.config import PretrainConfig
from core.training.data import DataError
from core.training.pipeline import augment_config, encode, labelled_split

CACHE_VERSION = 1


@dataclass
class Features:
    """A labelled split as features. x: (N, D) float32; y: (N,) int64."""

    x: Tensor
    y: Tensor
    classes: list[str]
    cached: bool = False
    seconds: float = 0.0

    @property
    def num_classes(self) -> int:
        return max(len(self.classes), int(self.y.max().item()) + 1 if len(self.y) else 0)


def split_classes(data) -> list[str]:
    """Class names of a labelled split (TensorData, ImageListDataset or a Subset of one)."""
    data = getattr(data, "dataset", data)
    return list(getattr(data, "classes", []) or [])


@dataclass
class FeatureSource:
    """Where an evaluation's features come from: a checkpoint's encoder, or raw pixels.

    Fine-tuning takes its starting encoder from here too (``encoder()``, ``describe()``).

    ``cfg`` describes the data to encode: the run's own config, or a copy with another
    ``dataset``/``data_dir`` (then ``dataset_tag`` names the cache files apart).
    """

    run_dir: Path
    checkpoint: str
    cfg: PretrainConfig
    device: torch.device
    prefer_ema: bool = True
    pixels: bool = False
    dataset_tag: str | None = None
    workers: int = 0
    _loaded: tuple[nn.Module, dict[str, Any]] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ the checkpoint
    @property
    def checkpoint_file(self) -> Path:
        return checkpoint_path(self.run_dir, self.checkpoint)

    @property
    def encoder_name(self) -> str:
        """pixels, ema (the run kept an EMA of its encoder and we use it) or online."""
        if self.pixels:
            return "pixels"
        return "ema" if self.prefer_ema and self.cfg.ema is not None else "online"

    def encoder(self) -> nn.Module:
        """The frozen encoder (loaded once)."""
        if self.pixels:
            return nn.Flatten()
        if self._loaded is None:
            from core.evaluation.export import trained_encoder
            enc, _, ckpt = trained_encoder(self.run_dir, self.checkpoint, self.prefer_ema, self.device)
            self._loaded = (enc, ckpt)
        return self._loaded[0]

    def describe(self) -> dict[str, Any]:
        """What was evaluated, for the result file: checkpoint, encoder and pretraining progress."""
        out: dict[str, Any] = {"checkpoint": self.checkpoint, "encoder": self.encoder_name,
                               "dataset": self.cfg.dataset, "data_dir": self.cfg.data_dir,
                               "image_size": self.cfg.image_size}
        if not self.pixels:
            ckpt = self._loaded[1] if self._loaded else load_checkpoint(self.checkpoint_file)
            prog = ckpt.get("progress") or {}
            out["pretrain_step"] = prog.get("step")
            out["pretrain_epoch"] = prog.get("epoch")
        return out

    # ------------------------------------------------------------------ features
    def amp(self) -> torch.dtype | None:
        """The autocast dtype of encoding: on a CPU the run's ``--precision`` choice
        (``core.training.precision``), on CUDA bf16 as always; raw pixels fp32."""
        if self.pixels:
            return None
        if self.device.type == "cuda":
            return torch.bfloat16
        from core.training.device import amp_dtype
        return amp_dtype(self.cfg, self.device)

    def cache_file(self, split: str) -> Path:
        prefix = f"{self.dataset_tag}-" if self.dataset_tag else ""
        return self.run_dir / "features" / f"{prefix}{split}-{self.checkpoint}.pt"

    def cache_key(self, split: str) -> dict[str, Any]:
        st = self.checkpoint_file.stat()
        cfg = self.cfg
        return {
            "version": CACHE_VERSION, "checkpoint": self.checkpoint_file.name,
            "checkpoint_size": st.st_size, "checkpoint_mtime_ns": st.st_mtime_ns,
            "encoder": self.encoder_name, "dataset": cfg.dataset, "split": split,
            "data_dir": None if cfg.dataset == "synthetic" else str(Path(cfg.data_dir).resolve()),
            "seed": cfg.seed if cfg.dataset == "synthetic" else None,  # synthetic data depends on it
            "image_size": cfg.image_size,
        }

    def get(self, split: str, say: Callable[[str], None] = print) -> Features:
        """Features of the labelled ``split`` ("train" or "test"), from the cache when valid."""
        if self.pixels:
            return self.extract(split, say)
        path, key = self.cache_file(split), self.cache_key(split)
        feats = load_cached(path, key)
        if feats is not None:
            say(f"{split} features: {tuple(feats.x.shape)} from the cache ({path.name})")
            feats.x, feats.y = feats.x.to(self.device), feats.y.to(self.device)
            return feats
        feats = self.extract(split, say)
        save_cached(path, key, feats)
        return feats

    def extract(self, split: str, say: Callable[[str], None]) -> Features:
        t0 = time.perf_counter()
        views = augment_config(self.cfg)  # no augmentation: its size, mean and std
        data = labelled_split(self.cfg, split, views=views)
        if len(data) == 0:
            raise DataError(f"the {split} split of {self.cfg.dataset} has no labelled images")
        say(f"encoding {len(data)} {split} images ({self.encoder_name})")
        x, y = encode(self.encoder(), data, views, self.device, workers=self.workers, amp=self.amp())
        seconds = time.perf_counter() - t0
        say(f"{split} features: {tuple(x.shape)} in {seconds:.1f} s")
        return Features(x.float(), y.long(), split_classes(data), cached=False, seconds=seconds)


def load_cached(path: Path, key: dict[str, Any]) -> Features | None:
    """The cached features at ``path`` if their key equals ``key``, else None."""
    if not path.is_file():
        return None
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable cache is rebuilt, never trusted
        return None
    if not isinstance(d, dict) or d.get("key") != key:
        return None
    return Features(d["features"], d["labels"], list(d["classes"]), cached=True)


def save_cached(path: Path, key: dict[str, Any], feats: Features) -> None:
    """Write the cache atomically (temp file + rename): readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save({"key": key, "features": feats.x.cpu(), "labels": feats.y.cpu(),
                    "classes": feats.classes}, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
