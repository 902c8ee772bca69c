"""Gaussian blur with one sigma per sample, as a separable sum of shifted copies."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian kernels, one per sample.

    Args:
        sigma: Standard deviations in pixels. Shape: (B,).
        kernel_size: Odd number of taps K.

    Returns:
        Kernels summing to one. Shape: (B, K).
    """
    r = kernel_size // 2
    taps = torch.arange(-r, r + 1, dtype=sigma.dtype, device=sigma.device)
    k = torch.exp(-0.5 * (taps / sigma[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def blur_with_kernels(x: Tensor, kernels: Tensor) -> Tensor:
    """Separable blur with one 1-D kernel per sample and reflect padding.

    A sum of K shifted copies per axis: on CPU, for 96 px chunks, about twice as fast
    as a grouped ``conv2d`` with one group per (sample, channel).

    Args:
        x: Images. Shape: (B, C, H, W).
        kernels: Odd-length kernels used along both axes. Shape: (B, K).

    Returns:
        Blurred images. Shape: (B, C, H, W).
    """
    h, w = x.shape[-2:]
    k = kernels.shape[1]
    r = k // 2
    weight = kernels.to(x.dtype).view(-1, k, 1, 1, 1)
    padded = F.pad(x, (r, r, r, r), mode="reflect")
    rows = padded[:, :, 0:h] * weight[:, 0]
    for t in range(1, k):
        rows.addcmul_(padded[:, :, t : t + h], weight[:, t])
    out = rows[..., 0:w] * weight[:, 0]
    for t in range(1, k):
        out.addcmul_(rows[..., t : t + w], weight[:, t])
    return out


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Gaussian blur with a per-sample sigma, as torchvision's ``gaussian_blur``.

    Args:
        x: Images. Shape: (B, C, H, W).
        sigma: Standard deviations in pixels. Shape: (B,).
        kernel_size: Odd kernel side; must be below 2*min(H, W) for reflect padding.

    Returns:
        Blurred images. Shape: (B, C, H, W).
    """
    return blur_with_kernels(x, gaussian_kernels(sigma.to(x.dtype), kernel_size))
