"""The batched SimCLR view planner: per-sample parameters for a whole uint8 batch, on its device.

:class:`BatchedViews` draws every sample's crop box, flip, jitter factors and order,
grayscale and blur from one uniform draw per sample (:meth:`BatchedViews.sample_params`),
then applies them with the kernels of ``resample``, ``color`` and ``blur``, with no
Python loop over samples.

Speed (``bench/bench_augment.py``, 32 px CIFAR-10, s=0.5, batch 512, 2-core machine):
with the machine otherwise idle, BatchedViews made 30,000 pairs of views per second
with torch's default 2 threads, 11.5x the torchvision per-image reference through a
2-worker DataLoader (2,600 pairs/s); on one thread 19,700 (7.5x). While other jobs
loaded the machine (load average 3-5) the reference fell to ~900-1,200 pairs/s and
one thread still made 12,000-14,000, but 2 threads collapsed to ~500-1,100: OpenMP's
threads wait for each other at each of the pipeline's ~100 small ops per chunk. On a
shared CPU, pin the process to one thread (``torch.set_num_threads(1)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from core.simclr.augment.batch import as_rgb, normalization
from core.simclr.augment.blur import blur_with_kernels, gaussian_kernels
from core.simclr.augment.color import jitter_coefficients, jitter_rounds_, rgb_to_grayscale
from core.simclr.augment.config import BLUR_P, BLUR_SIGMA, GRAY_P, HUE, JITTER_P, AugmentConfig
from core.simclr.augment.crop import CROP_FLIP_COLUMNS, sample_crop_flip, uniform
from core.simclr.augment.resample import CropPlan, crop_transposed


@dataclass
class ViewParams:
    """Random parameters of one view per sample; every field has leading size B.

    Attributes:
        top, left, height, width: Crop box in source pixels (int64).
        flip: Horizontal flip (bool).
        jitter: Whether colour jitter is applied at all (bool).
        factors: Brightness, contrast, saturation factors and hue shift. Shape: (B, 4).
        order: Order the four jitter ops run in, a permutation of
            (BRIGHTNESS, CONTRAST, SATURATION, HUE) per row (int64). Shape: (B, 4).
        gray: Grayscale (bool).
        blur: Gaussian blur (bool); all False when the config has no blur.
        sigma: Blur sigma in pixels (float).
    """

    top: Tensor
    left: Tensor
    height: Tensor
    width: Tensor
    flip: Tensor
    jitter: Tensor
    factors: Tensor
    order: Tensor
    gray: Tensor
    blur: Tensor
    sigma: Tensor

    def take(self, index: Tensor | slice) -> ViewParams:
        """The parameters of the samples ``index`` selects, in that order."""
        return ViewParams(**{name: value[index] for name, value in vars(self).items()})


# Columns of the one uniform draw per sample that all parameters come from; the crop
# box and flip come first, laid out as ``crop.sample_crop_flip`` reads them.
_U_CROP_FLIP = slice(0, CROP_FLIP_COLUMNS)
_U_JITTER = CROP_FLIP_COLUMNS
_U_FACTORS = slice(_U_JITTER + 1, _U_JITTER + 5)
_U_ORDER = slice(_U_JITTER + 5, _U_JITTER + 9)
_U_GRAY = _U_JITTER + 9
_U_BLUR = _U_GRAY + 1
_U_SIGMA = _U_GRAY + 2
_U_COLUMNS = _U_SIGMA + 1

# On CPU the pipeline runs chunk by chunk so that a chunk's intermediates stay in
# cache: 128 views of 32 x 32 at a time ran 2-3x faster than 1024 at once on the
# development machine. Elsewhere (CUDA) the whole batch goes in one pass.
CPU_CHUNK_PIXELS = 128 * 32 * 32


class BatchedViews:
    """SimCLR views of a whole batch at once, on the batch's device.

    Every sample gets its own crop box, flip, jitter factors and order, grayscale and
    blur draw, with the same distribution as :func:`per_image_views`. All randomness
    comes from ``generator`` when one is given, so a seeded generator reproduces the
    views bit for bit on the same device.

    On CPU the batch is processed in chunks of about ``CPU_CHUNK_PIXELS`` output
    pixels, with samples grouped by jitter order so that chunks skip the jitter
    rounds none of their samples needs. A sample's view does not depend on the
    chunking beyond float rounding (a few 1e-6).

    Args:
        cfg: The view distribution.
        chunk_size: Views processed per pass; None picks ``CPU_CHUNK_PIXELS`` worth on
            CPU and the whole batch on other devices.

    Example:
        >>> views = BatchedViews(AugmentConfig(image_size=32))
        >>> g = torch.Generator(device=x.device).manual_seed(0)
        >>> v1, v2 = views(x_uint8, generator=g)
    """

    def __init__(self, cfg: AugmentConfig, chunk_size: int | None = None) -> None:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of views or None, got {chunk_size}")
        self.cfg = cfg
        self.chunk_size = chunk_size
        self._constants: dict[torch.device, tuple] = {}

    def constants(self, device: torch.device) -> tuple:
        """The jitter ranges ``(lo, hi)`` and the normalisation's ``(scale, shift)`` (or None)
        on ``device``, made once per device: a tensor built from host numbers costs a blocking
        host-to-device copy on CUDA, which every step would otherwise pay."""
        device = torch.device(device)
        if device not in self._constants:
            b, c, s, hue = self.cfg.jitter_ranges
            lo = torch.tensor([max(0.0, 1.0 - b), max(0.0, 1.0 - c), max(0.0, 1.0 - s), -hue], device=device)
            hi = torch.tensor([1.0 + b, 1.0 + c, 1.0 + s, hue], device=device)
            self._constants[device] = (lo, hi, normalization(self.cfg, device))
        return self._constants[device]

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Two independent views of every image.

        Args:
            x: uint8 images (float in [0, 1] also accepted); 1-channel input is
                repeated to RGB. Shape: (B, C, H, W), C in {1, 3}.
            generator: Source of randomness, ideally on ``x.device``; None uses the
                default generator.

        Returns:
            Two float32 views, normalised as the config says. Shape: (B, 3, S, S) each.
        """
        n = x.shape[0]
        both = self._views(torch.cat([as_rgb(x)] * 2), generator)
        return both[:n], both[n:]

    def view(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One view of every image.

        Args:
            x: uint8 images. Shape: (B, C, H, W), C in {1, 3}.
            generator: Source of randomness; None uses the default generator.

        Returns:
            Float32 view. Shape: (B, 3, S, S).
        """
        return self._views(as_rgb(x), generator)

    def _views(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        params = self.sample_params(x.shape[0], x.shape[-2], x.shape[-1], x.device, generator)
        return self.apply(x, params)

    def sample_params(
        self,
        n: int,
        height: int,
        width: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> ViewParams:
        """Draw the random parameters of ``n`` views of ``height`` x ``width`` images.

        Args:
            n: Number of views B.
            height, width: Source image size.
            device: Where the parameters live.
            generator: Source of randomness; None uses the default generator.

        Returns:
            The parameters, every field with leading size B.
        """
        cfg = self.cfg
        device = torch.device(device)
        u = uniform((n, _U_COLUMNS), device, generator)
        top, left, h, w, flip = sample_crop_flip(u[:, _U_CROP_FLIP], height, width, cfg.crop_scale)
        lo, hi, _ = self.constants(device)
        jitter = u[:, _U_JITTER] < JITTER_P
        if cfg.jitter_strength == 0:
            jitter = torch.zeros_like(jitter)  # ColorJitter(0, 0, 0, 0) is the identity
        return ViewParams(
            top=top,
            left=left,
            height=h,
            width=w,
            flip=flip,
            jitter=jitter,
            factors=lo + (hi - lo) * u[:, _U_FACTORS],
            order=torch.argsort(u[:, _U_ORDER], dim=1),  # a uniform random permutation
            gray=u[:, _U_GRAY] < GRAY_P,
            blur=(u[:, _U_BLUR] < BLUR_P) & cfg.use_blur,
            sigma=BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * u[:, _U_SIGMA],
        )

    def apply(self, x: Tensor, params: ViewParams) -> Tensor:
        """Apply drawn parameters: crop, flip, jitter, grayscale, blur, normalise.

        Args:
            x: uint8 images (or float in [0, 1]). Shape: (B, C, H, W), C in {1, 3}.
            params: Parameters from :meth:`sample_params` for these images.

        Returns:
            Float32 views. Shape: (B, 3, S, S).
        """
        cfg = self.cfg
        x = as_rgb(x)
        n, size = x.shape[0], cfg.image_size
        chunk = self.chunk_size
        if chunk is None:
            chunk = max(1, CPU_CHUNK_PIXELS // (size * size)) if x.device.type == "cpu" else n
        chunk = max(1, min(chunk, n))
        source, keys = None, None
        if cfg.jitter_strength > 0 and chunk < n:
            source, keys = _jitter_groups(params)
            params = params.take(source)

        # Everything derived from the parameters is computed once for the batch.
        p = params
        crop = CropPlan.build(p.top, p.left, p.height, p.width, p.flip, tuple(x.shape), size, source, chunk)
        jitter = jitter_coefficients(p.factors, p.order, p.jitter) if cfg.jitter_strength > 0 else None
        gray = p.gray.to(torch.float32).view(-1, 1, 1, 1)
        kernels = _blur_kernels(p, cfg.blur_kernel_size) if cfg.use_blur else None
        scale_shift = self.constants(x.device)[2]

        # Rows are picked straight from the uint8 batch: converting it all to float
        # first cost more than the rest of the crop (a 4x larger tensor, out of cache).
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        # Chunks are written in the grouped order, one contiguous slice each; one gather
        # at the end puts the views back in the input's order (cheaper on CPU than an
        # index_copy per chunk).
        out = torch.empty((n, 3, size, size), dtype=torch.float32, device=x.device)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            v = crop_transposed(rows, crop, start, stop)  # (n, 3, S, S), transposed
            if jitter is not None:
                skip = _rounds_to_run(keys[start:stop]) if keys is not None else {}
                v = jitter_rounds_(v, jitter[0][:, start:stop], jitter[1][start:stop], **skip)
            v.lerp_(rgb_to_grayscale(v), gray[start:stop])
            if kernels is not None:
                v = blur_with_kernels(v, kernels[start:stop])
            # Back to (rows, columns), normalised on the way.
            dst = out[start:stop]
            if scale_shift is not None:
                torch.mul(v.transpose(2, 3), scale_shift[0], out=dst).add_(scale_shift[1])
            else:
                dst.copy_(v.transpose(2, 3))
        return out if source is None else out.index_select(0, torch.argsort(source))


def _jitter_groups(p: ViewParams) -> tuple[Tensor, list[int]]:
    """Sort samples by how they are jittered, for chunks that can skip rounds.

    The key is 0 for no jitter, else 1 + the number of linear ops before hue. After
    sorting, most chunks hold one or two keys and skip the rounds and the hue pass
    that none of their samples needs.

    Returns:
        The sorting permutation and the sorted keys (on the host).
    """
    hue_pos = (p.order == HUE).to(torch.uint8).argmax(dim=1).long()
    key = torch.where(p.jitter, hue_pos + 1, torch.zeros_like(hue_pos))
    order = torch.argsort(key, stable=True)
    return order, key[order].tolist()


def _rounds_to_run(keys: list[int]) -> dict[str, Any]:
    """``jitter_rounds_`` arguments that skip what no sample with these keys needs.

    Skipped rounds are exact no-ops for these samples; only an unjittered sample
    in a chunk that still runs the hue pass sees a rotation by 0 (float rounding).
    """
    before_hue = [k - 1 for k in keys if k > 0]
    return dict(before=max(before_hue, default=0), after_from=min(before_hue, default=3), hue=bool(before_hue))


def _blur_kernels(p: ViewParams, kernel_size: int) -> Tensor:
    """Each sample's Gaussian kernel, or the identity where it is not blurred. Shape: (B, K)."""
    kernels = gaussian_kernels(p.sigma.to(torch.float32), kernel_size)
    identity = torch.zeros_like(kernels)
    identity[:, kernel_size // 2] = 1.0
    return torch.where(p.blur[:, None], kernels, identity)
