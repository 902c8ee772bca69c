"""Colour kernels: grayscale, brightness, contrast, saturation, hue and ColorJitter, per sample.

Images are float ``(B, 3, H, W)`` in [0, 1]; a factor is a float or a ``(B,)`` tensor
with one value per sample. Each op matches torchvision's functional op of the same
name on the same factor (tests/test_augment.py checks it), for every sample at once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from core.simclr.augment.config import CONTRAST, GRAY_WEIGHTS, HUE, SATURATION

# A note on speed: on CPU, torch.where and arithmetic with bool masks run at about a
# tenth of the speed of plain float arithmetic, so image-sized selections below are
# written as float blends (lerp with a 0/1 weight is exact) and sign() masks.


def _per_sample(factor: float | Tensor, x: Tensor) -> Tensor:
    f = torch.as_tensor(factor, dtype=x.dtype, device=x.device)
    return f.view(-1, 1, 1, 1) if f.ndim == 1 else f


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """Luma with the ITU-R 601 weights (0.299, 0.587, 0.114).

    Args:
        x: RGB images. Shape: (..., 3, H, W).

    Returns:
        Gray images. Shape: (..., 1, H, W).
    """
    r, g, b = x.unbind(-3)
    return (r * GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(-3)


def adjust_brightness(x: Tensor, factor: float | Tensor) -> Tensor:
    """Scale the image by ``factor`` (0 gives black), clamped to [0, 1].

    Args:
        x: Images in [0, 1]. Shape: (B, 3, H, W).
        factor: Non-negative factor, a float or one per sample. Shape: () or (B,).

    Returns:
        Adjusted images. Shape: (B, 3, H, W).
    """
    return (x * _per_sample(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: float | Tensor) -> Tensor:
    """Blend each image with the mean of its own grayscale (0 gives flat gray).

    Args:
        x: Images in [0, 1]. Shape: (B, 3, H, W).
        factor: Non-negative factor, a float or one per sample. Shape: () or (B,).

    Returns:
        Adjusted images. Shape: (B, 3, H, W).
    """
    f = _per_sample(factor, x)
    mean = rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return (x * f + mean * (1.0 - f)).clamp_(0.0, 1.0)


def adjust_saturation(x: Tensor, factor: float | Tensor) -> Tensor:
    """Blend each image with its grayscale version (0 gives grayscale).

    Args:
        x: Images in [0, 1]. Shape: (B, 3, H, W).
        factor: Non-negative factor, a float or one per sample. Shape: () or (B,).

    Returns:
        Adjusted images. Shape: (B, 3, H, W).
    """
    f = _per_sample(factor, x)
    return (x * f + rgb_to_grayscale(x) * (1.0 - f)).clamp_(0.0, 1.0)


def adjust_hue(x: Tensor, shift: float | Tensor) -> Tensor:
    """Rotate the HSV hue by ``shift`` turns, keeping saturation and value.

    The hue is measured in sixths of a turn (``u`` in [0, 6), red at 0, green at 2,
    blue at 4). A channel whose centre is within 1 of ``u`` is the maximum, beyond 2
    the minimum, linear in between: ``c = max - delta * clamp(dist(u, centre) - 1, 0, 1)``.

    Args:
        x: Images in [0, 1]. Shape: (B, 3, H, W).
        shift: Hue shift in [-0.5, 0.5], a float or one per sample. Shape: () or (B,).

    Returns:
        Adjusted images. Shape: (B, 3, H, W).
    """
    # Written with in-place ops: on CPU a fresh output costs as much as the op itself.
    r, g, b = x.unbind(-3)
    maxc = x.amax(dim=-3)
    delta = x.amin(dim=-3).neg_().add_(maxc)
    # 0 where the channel is the maximum, else 1 (maxc - c >= 0).
    r_below = (maxc - r).sign_()
    g_below = (maxc - g).sign_()
    # Hue times delta, from whichever channel is the maximum (red first, then green):
    # red g - b, green 2*delta + b - r, blue 4*delta + r - g. The differences between
    # consecutive formulas are 3b - q and 3r - q with q = r + g + b - 2*delta.
    q = (r + g).add_(b).add_(delta, alpha=-2.0)
    red_to_green = torch.add(q, b, alpha=-3.0)  # minus (green - red)
    green_to_blue = q.add_(r, alpha=-3.0)  # minus (blue - green)
    hue = (g - b).sub_(r_below.mul_(g_below.mul_(green_to_blue).add_(red_to_green)))
    # Gray pixels have hue * delta == 0; any finite hue gives them max - 0.
    hue.div_(delta.clamp(min=1e-12))  # in [-1, 5)
    shift = torch.as_tensor(shift, dtype=x.dtype, device=x.device)
    hue.add_(6.0 * (shift.view(-1, 1, 1) if shift.ndim == 1 else shift))  # in [-4, 8)
    centres = torch.arange(0.0, 6.0, 2.0, dtype=x.dtype, device=x.device).view(3, 1, 1)  # made on the device
    dist = (hue.unsqueeze(-3) - centres).abs_()  # in [0, 8]; the distance to the nearest
    torch.minimum(dist, (dist - 6.0).abs_(), out=dist).clamp_(1.0, 2.0)  # multiple of 6
    return dist.mul_(delta.neg().unsqueeze(-3)).add_(maxc.add_(delta).unsqueeze(-3))


def jitter_coefficients(factors: Tensor, order: Tensor, apply: Tensor) -> tuple[Tensor, Tensor]:
    """Blend coefficients of the six linear rounds of :func:`color_jitter`.

    Hue is the one expensive op (an HSV round trip), so it runs once for the whole
    batch: a sample's order is read as its three linear ops in order with hue inserted
    after the first ``j`` of them. Rounds 0-2 apply the linear ops that come before
    hue (a sample whose op comes after hue sits the round out), then hue, then rounds
    3-5 the ops after it. Every sample thus gets exactly its own order, the same
    distribution as torchvision's ``randperm(4)`` per image, for 6 cheap blends plus
    one hue instead of 4 rounds of all four ops. Measured on CPU for 128 views of
    32 px, a blend costs ~0.18 ms and hue ~0.7 ms: ~1.8 ms against ~1.25 ms for one
    order shared by the whole batch (3 blends + hue), a price worth the right
    distribution; grouping samples by order (see :class:`BatchedViews`) brings the
    average down to ~1.4 ms.

    A round is ``clamp(f * x + (1 - f) * target)`` with
    ``target = g * gray + m * mean(gray)``: brightness (g, m) = (0, 0), saturation
    (1, 0), contrast (0, 1); a sample sitting a round out has f = 1, which leaves it
    exactly unchanged.

    Args:
        factors: Brightness, contrast, saturation factors and hue shift. Shape: (B, 4).
        order: A permutation of (0, 1, 2, 3) per sample. Shape: (B, 4).
        apply: Samples that get jittered at all. Shape: (B,).

    Returns:
        Round coefficients (1 - f, g, m) and the hue shift (0 where not applied).
        Shape: (6, B, 3) and (B,).
    """
    is_hue = order == HUE
    hue_pos = is_hue.to(torch.uint8).argmax(dim=1)  # linear ops that run before hue
    # The linear ops in order: a stable sort moves hue to the end without a host sync.
    linear = order.gather(1, torch.argsort(is_hue.to(torch.uint8), dim=1, stable=True))[:, :3]
    slot = torch.arange(3, device=order.device)
    active = torch.cat([slot < hue_pos[:, None], slot >= hue_pos[:, None]], dim=1) & apply[:, None]  # (B, 6)
    op = linear.repeat(1, 2)
    f = torch.where(active, factors.gather(1, op), torch.ones_like(factors[:, :1]))
    g = (active & (op == SATURATION)).to(factors.dtype)
    m = (active & (op == CONTRAST)).to(factors.dtype)
    hue_shift = torch.where(apply, factors[:, HUE], torch.zeros_like(factors[:, HUE]))
    return torch.stack([1.0 - f, g, m], dim=-1).transpose(0, 1), hue_shift


def jitter_rounds_(
    x: Tensor, coefficients: Tensor, hue_shift: Tensor, before: int = 3, after_from: int = 0, hue: bool = True
) -> Tensor:
    """Run :func:`jitter_coefficients`' rounds on images (B, 3, H, W) in [0, 1], in place.

    ``before``, ``after_from`` and ``hue`` skip rounds in which every sample of ``x``
    sits out: linear rounds ``before..2`` and ``3..3 + after_from - 1``.
    """
    coefficients = coefficients.to(x.dtype)[..., None, None, None]  # (6, B, 3, 1, 1, 1)
    for i in [*range(before), *range(3 + after_from, 6)]:
        if i >= 3 and hue:
            x = adjust_hue(x, hue_shift)
            hue = False
        w, g, m = coefficients[i].unbind(1)  # (B, 1, 1, 1) each
        gray = rgb_to_grayscale(x)
        mean = gray.mean(dim=(1, 2, 3), keepdim=True)
        target = gray.mul_(g).add_(mean.mul_(m))
        x.lerp_(target, w).clamp_(0.0, 1.0)  # x + (1 - f) * (target - x); exact when f = 1
    return adjust_hue(x, hue_shift) if hue else x


def color_jitter(x: Tensor, factors: Tensor, order: Tensor, apply: Tensor) -> Tensor:
    """ColorJitter with per-sample factors and a per-sample op order.

    Args:
        x: Images in [0, 1]. Shape: (B, 3, H, W).
        factors: Brightness, contrast, saturation factors and hue shift. Shape: (B, 4).
        order: A permutation of (0, 1, 2, 3) (BRIGHTNESS, CONTRAST, SATURATION, HUE)
            per sample. Shape: (B, 4).
        apply: Samples that get jittered at all. Shape: (B,).

    Returns:
        Jittered images. Shape: (B, 3, H, W).
    """
    return jitter_rounds_(x.clone(), *jitter_coefficients(factors, order, apply))
