"""Per-image torchvision pipelines, for DataLoader workers and evaluation.

:class:`PerImageViews` is the reference the batched SimCLR views are tested against;
:func:`crop_flip_transform` and :func:`eval_transform` are the per-image twins of
``crop.crop_flip_batch`` and ``batch.normalize_batch``. Every transform is a plain
object (no closure) so that it pickles into DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from core.simclr.augment.config import BLUR_P, BLUR_SIGMA, CROP_RATIO, FLIP_P, GRAY_P, JITTER_P, AugmentConfig


def _crop_flip(cfg: AugmentConfig) -> list[Any]:
    """To RGB, then the random resized crop and horizontal flip every augmentation starts with."""
    from torchvision.transforms import v2

    return [
        v2.RGB(),
        v2.RandomResizedCrop(cfg.image_size, scale=cfg.crop_scale, ratio=CROP_RATIO, antialias=True),
        v2.RandomHorizontalFlip(FLIP_P),
    ]


def _to_float_and_normalize(cfg: AugmentConfig) -> list[Any]:
    from torchvision.transforms import v2

    ops: list[Any] = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if cfg.mean is not None and cfg.std is not None:
        ops.append(v2.Normalize(mean=list(cfg.mean), std=list(cfg.std)))
    return ops


class PerImageViews:
    """Two SimCLR views of one image with torchvision ``transforms.v2``.

    A plain class (not a closure) so it pickles into DataLoader workers.

    Args:
        cfg: The view distribution.
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        from torchvision.transforms import v2

        self.cfg = cfg
        b, c, s, h = cfg.jitter_ranges
        ops = _crop_flip(cfg)
        if cfg.jitter_strength > 0:
            ops.append(v2.RandomApply([v2.ColorJitter(b, c, s, h)], p=JITTER_P))
        ops.append(v2.RandomGrayscale(GRAY_P))
        if cfg.use_blur:
            ops.append(v2.RandomApply([v2.GaussianBlur(cfg.blur_kernel_size, sigma=BLUR_SIGMA)], p=BLUR_P))
        self.transform = v2.Compose(ops + _to_float_and_normalize(cfg))

    def __call__(self, image: Any) -> tuple[Tensor, Tensor]:
        """Two views of one image.

        Args:
            image: A PIL image or a uint8 tensor. Shape: (C, H, W).

        Returns:
            Two float32 views. Shape: (3, S, S) each.
        """
        return self.transform(image), self.transform(image)


def per_image_views(cfg: AugmentConfig) -> Callable[[Any], tuple[Tensor, Tensor]]:
    """The reference per-image SimCLR pipeline (see :class:`PerImageViews`)."""
    return PerImageViews(cfg)


def crop_flip_transform(cfg: AugmentConfig) -> Callable[[Any], Tensor]:
    """Per-image random resized crop (area ``cfg.crop_scale``) and flip, then normalised.

    The light augmentation of fine-tuning for DataLoader workers; the per-image twin of
    ``crop.crop_flip_batch``, with no colour jitter, grayscale or blur.

    Args:
        cfg: Supplies ``image_size``, ``crop_scale``, ``mean`` and ``std``.

    Returns:
        A picklable callable mapping a PIL image or uint8 tensor (C, H, W) to a float32
        tensor (3, S, S).
    """
    from torchvision.transforms import v2

    return v2.Compose(_crop_flip(cfg) + _to_float_and_normalize(cfg))


def eval_transform(cfg: AugmentConfig) -> Callable[[Any], Tensor]:
    """Per-image evaluation transform: no augmentation.

    Resizes the shorter side to ``image_size`` and centre-crops (both no-ops when the
    image already is S x S), then scales to [0, 1] and normalises.

    Args:
        cfg: Supplies ``image_size``, ``mean`` and ``std``.

    Returns:
        A picklable callable mapping a PIL image or uint8 tensor (C, H, W) to a float32
        tensor (3, S, S).
    """
    from torchvision.transforms import v2

    ops: list[Any] = [
        v2.RGB(),
        v2.Resize(cfg.image_size, antialias=True),
        v2.CenterCrop(cfg.image_size),
    ]
    return v2.Compose(ops + _to_float_and_normalize(cfg))
