"""Scaling a uint8 batch to [0, 1] and normalising it: the two ends of every batched pipeline.

Also the batched evaluation transform :func:`normalize_batch` (no augmentation), the
twin of ``reference.eval_transform``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from core.simclr.augment.config import AugmentConfig


def as_rgb(x: Tensor) -> Tensor:
    """Check a batch of uint8 (or float) images; repeat 1-channel ones to RGB."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (B, 3, H, W) or (B, 1, H, W), got {tuple(x.shape)}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise TypeError(f"expected uint8 images (or float in [0, 1]), got {x.dtype}")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def normalization(cfg: AugmentConfig, device: torch.device) -> tuple[Tensor, Tensor] | None:
    """Per-channel (scale, shift) with ``(x - mean) / std == x * scale + shift``."""
    if cfg.mean is None or cfg.std is None:
        return None
    mean = torch.tensor(cfg.mean, dtype=torch.float64)
    std = torch.tensor(cfg.std, dtype=torch.float64)
    scale = (1.0 / std).to(torch.float32).view(1, 3, 1, 1)
    shift = (-mean / std).to(torch.float32).view(1, 3, 1, 1)
    return scale.to(device), shift.to(device)


def unit_float(x: Tensor) -> Tensor:
    """uint8 to float32 in [0, 1] (one multiply, no copy first); float is kept."""
    return x * (1.0 / 255.0) if x.dtype == torch.uint8 else x.to(torch.float32)


def normalize_batch(x: Tensor, cfg: AugmentConfig) -> Tensor:
    """Batched evaluation transform, for feature extraction without augmentation.

    Matches ``reference.eval_transform``: shorter side resized to ``image_size`` (bilinear,
    antialiased) and centre-cropped when the size differs, then normalised.

    Args:
        x: uint8 images (float in [0, 1] also accepted). Shape: (B, C, H, W), C in {1, 3}.
        cfg: Supplies ``image_size``, ``mean`` and ``std``.

    Returns:
        Float32 images. Shape: (B, 3, S, S).
    """
    x = as_rgb(x)
    x = unit_float(x)
    size = cfg.image_size
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        if h <= w:
            new_h, new_w = size, int(size * w / h)
        else:
            new_h, new_w = int(size * h / w), size
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        top = int(round((new_h - size) / 2.0))
        left = int(round((new_w - size) / 2.0))
        x = x[:, :, top : top + size, left : left + size]
    scale_shift = normalization(cfg, x.device)
    if scale_shift is None:
        # Never hand back the caller's own (or an expanded) tensor.
        return x.clone(memory_format=torch.contiguous_format)
    return torch.addcmul(scale_shift[1], x, scale_shift[0])
