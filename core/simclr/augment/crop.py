"""Random resized crop and flip: the boxes torchvision draws, and a crop+flip-only augmentation.

:func:`sample_crop_flip` turns the first ``CROP_FLIP_COLUMNS`` uniform draws of a
sample into its crop box and flip; the SimCLR planner (``views.BatchedViews``) and the
light augmentation of fine-tuning (:func:`crop_flip_batch`) both draw their crops with it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from core.simclr.augment.batch import as_rgb, normalize_batch
from core.simclr.augment.config import CROP_RATIO, CROP_TRIES, FLIP_P, AugmentConfig
from core.simclr.augment.resample import crop_resize

# Uniform draws per sample for a crop box (two per try, then top and left) and a flip.
CROP_FLIP_COLUMNS = 2 * CROP_TRIES + 3


def uniform(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    """Uniform [0, 1) draws of ``shape`` on ``device``, from ``generator`` (or the default one)."""
    if generator is None:
        return torch.rand(shape, device=device)
    # Draw where the generator lives; a generator on x.device avoids the copy.
    return torch.rand(shape, device=generator.device, generator=generator).to(device)


def sample_crop_boxes(
    u: Tensor, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float] = CROP_RATIO
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """torchvision's RandomResizedCrop box sampling, vectorised over samples.

    Every sample makes ``CROP_TRIES`` proposals (area ~ U(scale) * H * W, log-uniform
    aspect ratio) and keeps the first that fits; if none fits it takes the central
    crop clamped to ``ratio``.

    Args:
        u: Uniform [0, 1) draws. Shape: (B, 2 * CROP_TRIES + 2).
        height, width: Source image size.
        scale: Area range as a fraction of the image.
        ratio: Aspect ratio (width / height) range.

    Returns:
        top, left, crop height, crop width, as int64. Shape: (B,) each.
    """
    u = u.to(torch.float64)
    area = float(height * width)
    tries_area = area * (scale[0] + (scale[1] - scale[0]) * u[:, :CROP_TRIES])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, CROP_TRIES : 2 * CROP_TRIES])
    w = torch.round(torch.sqrt(tries_area * aspect))  # round half to even, as Python's round
    h = torch.round(torch.sqrt(tries_area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first True
    any_fit = fits.any(dim=1)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)

    in_ratio = width / height
    if in_ratio < min(ratio):
        fb_w, fb_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fb_w, fb_h = int(round(height * max(ratio))), height
    else:
        fb_w, fb_h = width, height
    w = torch.where(any_fit, w, torch.full_like(w, fb_w))
    h = torch.where(any_fit, h, torch.full_like(h, fb_h))

    u_top, u_left = u[:, 2 * CROP_TRIES], u[:, 2 * CROP_TRIES + 1]
    # Uniform integer in [0, H - h], as torch.randint(0, H - h + 1).
    top = torch.minimum(torch.floor(u_top * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(u_left * (width - w + 1)), width - w)
    top = torch.where(any_fit, top, torch.div(height - h, 2, rounding_mode="floor"))
    left = torch.where(any_fit, left, torch.div(width - w, 2, rounding_mode="floor"))
    return top.long(), left.long(), h.long(), w.long()


def sample_crop_flip(
    u: Tensor, height: int, width: int, scale: tuple[float, float]
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Crop boxes (as :func:`sample_crop_boxes`) and horizontal flips (p = ``FLIP_P``).

    Args:
        u: Uniform [0, 1) draws: the box's, then the flip's. Shape: (B, CROP_FLIP_COLUMNS).
        height, width: Source image size.
        scale: Area range as a fraction of the image.

    Returns:
        top, left, crop height, crop width (int64) and flip (bool). Shape: (B,) each.
    """
    top, left, h, w = sample_crop_boxes(u[:, : CROP_FLIP_COLUMNS - 1], height, width, scale)
    return top, left, h, w, u[:, CROP_FLIP_COLUMNS - 1] < FLIP_P


def crop_flip_batch(x: Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> Tensor:
    """Random resized crop (area ``cfg.crop_scale``) and horizontal flip only, then normalised.

    The light augmentation of fine-tuning, on the batch's device; the per-image twin is
    ``reference.crop_flip_transform``. The boxes and flips are those of the SimCLR views
    (:func:`sample_crop_flip`); there is no colour jitter, grayscale or blur.

    Args:
        x: uint8 images (float in [0, 1] also accepted). Shape: (B, C, H, W), C in {1, 3}.
        cfg: Supplies ``image_size``, ``crop_scale``, ``mean`` and ``std``.
        generator: Source of randomness, ideally on ``x.device``; None uses the default one.

    Returns:
        Float32 views. Shape: (B, 3, S, S).
    """
    x = as_rgb(x)
    n, _, height, width = x.shape
    top, left, h, w, flip = sample_crop_flip(uniform((n, CROP_FLIP_COLUMNS), x.device, generator),
                                             height, width, cfg.crop_scale)
    # One division over the whole batch, before cropping: BatchedViews instead scales the
    # picked uint8 rows by 1/255 (faster, but different in the last bit), and fine-tuning's
    # results were measured with this.
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    return normalize_batch(crop_resize(x, top, left, h, w, cfg.image_size, flip), cfg)
