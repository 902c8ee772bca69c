"""SimCLR views: a batched, device-side pipeline and the per-image torchvision reference.

A SimCLR view is, in this order: random resized crop (scale ``crop_scale``, aspect
ratio 3/4..4/3, bilinear with antialiasing), horizontal flip (p=0.5), colour jitter
(brightness, contrast and saturation ``0.8*s``, hue ``0.2*s``, in a random order,
applied with p=0.8), grayscale (p=0.2), Gaussian blur (p=0.5, sigma ~ U(0.1, 2),
kernel about 10% of the image, only when enabled), then float in [0, 1] and per-channel
normalisation.

Two implementations of the same distribution live here:

* :class:`BatchedViews` augments a whole uint8 batch ``(B, C, H, W)`` on whatever
  device it is on, with independent random parameters per sample and no Python loop
  over samples. Crop, resize and flip pick whole source rows with per-sample weights
  (the same weights as torchvision's antialiased resize, so the crops match it to
  float rounding); each jitter op is a per-sample blend; blur is a per-sample
  separable kernel.
* :func:`per_image_views` is the plain torchvision ``transforms.v2`` pipeline for one
  PIL image at a time, for DataLoader workers. It is the reference the tests compare
  the batched path with.

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

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

CROP_RATIO: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
CROP_TRIES = 10  # as torchvision's RandomResizedCrop
FLIP_P = 0.5
JITTER_P = 0.8
GRAY_P = 0.2
BLUR_P = 0.5
BLUR_SIGMA: tuple[float, float] = (0.1, 2.0)
BLUR_AUTO_MIN_SIZE = 96  # blur is on by default from this image size up
MIN_IMAGE_SIZE = 8
# The hue shift 0.2*s must stay inside [-0.5, 0.5], torchvision's limit.
MAX_JITTER_STRENGTH = 2.5
# ITU-R 601 luma, as Pillow's "L" conversion (torchvision uses 0.2989 for the red one).
GRAY_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

# Jitter op ids, in torchvision ColorJitter's order.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


@dataclass(frozen=True)
class AugmentConfig:
    """What a SimCLR view looks like; shared by the batched and per-image pipelines.

    Attributes:
        image_size: Side S of the square output views, in pixels.
        jitter_strength: Colour jitter strength s: brightness, contrast and saturation
            factors are drawn from [1 - 0.8s, 1 + 0.8s] (floored at 0), the hue shift
            from [-0.2s, 0.2s]. 0.5 is the paper's CIFAR value, 1.0 its ImageNet one.
        blur: Gaussian blur on or off; None means on iff ``image_size >= 96``.
        crop_scale: Range of the crop's area as a fraction of the source image.
        mean: Per-channel mean subtracted after scaling to [0, 1], or None together
            with ``std`` for no normalisation.
        std: Per-channel standard deviation divided by, or None.
    """

    image_size: int
    jitter_strength: float = 0.5
    blur: bool | None = None
    crop_scale: tuple[float, float] = (0.08, 1.0)
    mean: tuple[float, float, float] | None = CIFAR10_MEAN
    std: tuple[float, float, float] | None = CIFAR10_STD

    def __post_init__(self) -> None:
        # Configs come back from YAML/JSON with lists; store tuples so the config
        # stays hashable and compares equal to the one that was saved.
        for name in ("crop_scale", "mean", "std"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                try:
                    object.__setattr__(self, name, tuple(value))
                except TypeError:
                    raise ValueError(f"{name} must be a sequence of numbers, got {value!r}") from None
        self._validate()

    def _validate(self) -> None:
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValueError(f"image_size must be an int number of pixels, got {size!r}")
        if size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} pixels, got {size}")
        s = self.jitter_strength
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise ValueError(f"jitter_strength must be a number, got {s!r}")
        if not 0.0 <= s <= MAX_JITTER_STRENGTH:
            raise ValueError(
                f"jitter_strength must be in [0, {MAX_JITTER_STRENGTH}] (0.5 for CIFAR, 1.0 for "
                f"ImageNet; above {MAX_JITTER_STRENGTH} the hue shift 0.2*s passes half a turn), got {s}"
            )
        if self.blur not in (True, False, None):
            raise ValueError(f"blur must be true, false or null (automatic), got {self.blur!r}")
        scale = self.crop_scale
        if len(scale) != 2 or not all(isinstance(v, (int, float)) for v in scale):
            raise ValueError(f"crop_scale must be two numbers (min, max), got {scale!r}")
        lo, hi = scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(
                f"crop_scale must satisfy 0 < min <= max <= 1 (fractions of the image area, "
                f"the paper uses (0.08, 1.0)), got {scale!r}"
            )
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std must both be given or both be None (no normalisation)")
        if self.mean is not None and self.std is not None:
            for name, values in (("mean", self.mean), ("std", self.std)):
                if len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
                    raise ValueError(f"{name} must be three numbers, one per RGB channel, got {values!r}")
            if not all(v > 0 for v in self.std):
                raise ValueError(f"std must be positive in every channel, got {self.std!r}")

    @property
    def use_blur(self) -> bool:
        """Whether views get the Gaussian blur (``blur``, or automatic by size)."""
        if self.blur is None:
            return self.image_size >= BLUR_AUTO_MIN_SIZE
        return self.blur

    @property
    def blur_kernel_size(self) -> int:
        """Blur kernel side: 10% of ``image_size``, made odd (9 at 96 px, 23 at 224 px)."""
        k = int(0.1 * self.image_size)
        return k if k % 2 == 1 else k + 1

    @property
    def jitter_ranges(self) -> tuple[float, float, float, float]:
        """(brightness, contrast, saturation, hue) arguments of torchvision's ColorJitter."""
        s = float(self.jitter_strength)
        return 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s


# --------------------------------------------------------------------------------------
# Pure per-sample ops. Images are float (B, 3, H, W) in [0, 1]; a factor is a float or a
# (B,) tensor with one value per sample.


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
    centres = torch.tensor((0.0, 2.0, 4.0), dtype=x.dtype, device=x.device).view(3, 1, 1)
    dist = (hue.unsqueeze(-3) - centres).abs_()  # in [0, 8]; the distance to the nearest
    torch.minimum(dist, (dist - 6.0).abs_(), out=dist).clamp_(1.0, 2.0)  # multiple of 6
    return dist.mul_(delta.neg().unsqueeze(-3)).add_(maxc.add_(delta).unsqueeze(-3))


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


def resize_taps(
    start: Tensor, length: Tensor, in_size: int, out_size: int, flip: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Source pixels and weights that crop ``[start, start+length)`` and resize it.

    Output pixel ``d`` is ``sum_t weight[d, t] * source[index[d, t]]``: the bilinear
    filter widened by the downscaling factor and renormalised inside the crop, the
    same weights as ``torch.nn.functional.interpolate(mode="bilinear",
    antialias=True)`` on the cropped image (PIL's resampling). Upscaling is thus plain
    bilinear with edge clamping, downscaling is antialiased. Only the taps a filter
    can reach are kept (2 when no sample is downscaled), not a dense matrix.

    Args:
        start: First pixel of the crop along this axis. Shape: (B,).
        length: Crop length in pixels, >= 1. Shape: (B,).
        in_size: Source length along this axis; bounds the filter width.
        out_size: Output length S.
        flip: Optional mask reversing the output order (a mirror). Shape: (B,).

    Returns:
        index (int64, in [0, in_size)) and weight (float32, rows summing to one).
        Shape: (B, S, T) each.
    """
    device = start.device
    max_support = max(1.0, in_size / out_size)
    taps = 2 if max_support == 1.0 else math.ceil(2 * max_support) + 1
    start = start.to(torch.float32)[:, None, None]
    length = length.to(torch.float32)[:, None, None]
    scale = length / out_size
    support = scale.clamp(min=1.0)
    out_pos = torch.arange(out_size, dtype=torch.float32, device=device)[None, :, None]
    if flip is not None:
        out_pos = torch.where(flip[:, None, None], out_size - 1 - out_pos, out_pos)
    center = start + (out_pos + 0.5) * scale  # (B, S, 1), pixel i spans [i, i + 1)
    # Pixels with |i + 0.5 - center| < support, from the first one up.
    first = torch.floor(center - support - 0.5) + 1.0
    index = first + torch.arange(taps, dtype=torch.float32, device=device)
    weight = (1.0 - (index + 0.5 - center).abs() / support).clamp_(min=0.0)
    weight = weight * ((index >= start) & (index < start + length))
    weight = weight / weight.sum(dim=-1, keepdim=True)
    return index.clamp_(0, in_size - 1).long(), weight


@dataclass
class _AxisPlan:
    """Which source rows to pick, and how to weigh them, for one resampling axis.

    When no sample is downscaled the filter is plain bilinear: two adjacent rows,
    picked as one double-length row from an overlapping view (half the rows to copy)
    and blended with ``lerp``. Otherwise every tap of ``resize_taps`` is picked.
    """

    numbers: Tensor  # flat source row of every output row (and tap). Shape: (B, C, S[, T])
    weight: Tensor  # weight of the second row (B, S), or of every tap (B, S, T)
    paired: bool

    @staticmethod
    def build(
        start: Tensor,
        length: Tensor,
        in_size: int,
        out_size: int,
        flip: Tensor | None,
        channels: int,
        sample: Tensor,
    ) -> _AxisPlan:
        """Plan the crop ``[start, start+length)`` of each sample along this axis.

        Args:
            start, length: Crop along this axis. Shape: (B,).
            in_size: Source rows per channel plane (this axis' length).
            out_size: Output length S.
            flip: Optional mask reversing the output order. Shape: (B,).
            channels: C.
            sample: Where each sample's image sits in the source. Shape: (B,).
        """
        plane = (sample[:, None] * channels + torch.arange(channels, device=start.device)) * in_size
        if in_size > out_size or in_size < 2:
            index, weight = resize_taps(start, length, in_size, out_size, flip)
            return _AxisPlan(plane[:, :, None, None] + index[:, None], weight, False)
        # Bilinear with the source position clamped into the crop: the antialiased
        # filter's weights when nothing is downscaled (support 1).
        start = start.to(torch.float32)[:, None]
        length = length.to(torch.float32)[:, None]
        out_pos = torch.arange(out_size, dtype=torch.float32, device=start.device)
        if flip is not None:
            out_pos = torch.where(flip[:, None], out_size - 1 - out_pos, out_pos)
        pos = start + (out_pos + 0.5) * (length / out_size) - 0.5
        pos = torch.minimum(torch.maximum(pos, start), start + length - 1)
        first = pos.floor().clamp_(max=in_size - 2)  # the pair (first, first + 1) stays in the image
        return _AxisPlan(plane[:, :, None] + first.long()[:, None], pos - first, True)

    def chunk(self, start: int, stop: int) -> _AxisPlan:
        return _AxisPlan(self.numbers[start:stop], self.weight[start:stop], self.paired)


def _select_rows(rows: Tensor, plan: _AxisPlan) -> Tensor:
    """Weighted sums of whole rows: the resampling step along one axis.

    Picking whole rows is a contiguous copy, far cheaper on CPU than a per-element
    gather; the other axis is done by transposing in between.

    Args:
        rows: Contiguous source rows, uint8 (scaled to [0, 1] once picked) or float.
            Shape: (R, W).
        plan: Rows to pick and their weights, for n samples.

    Returns:
        Resampled float32 rows. Shape: (n, C, S, W).
    """
    width = rows.shape[1]
    if plan.paired:
        n, c, size = plan.numbers.shape
        pairs = rows.as_strided((rows.shape[0] - 1, 2 * width), (width, 1))  # row r, then r + 1
        picked = _unit_float(pairs.index_select(0, plan.numbers.reshape(-1))).view(n, c, size, 2 * width)
        return torch.lerp(picked[..., :width], picked[..., width:], plan.weight[:, None, :, None])
    n, c, size, taps = plan.numbers.shape
    picked = rows.index_select(0, plan.numbers.permute(3, 0, 1, 2).reshape(-1))
    picked = _unit_float(picked).view(taps, n, c, size, width)
    return (picked * plan.weight.permute(2, 0, 1)[:, :, None, :, None]).sum(dim=0)


@dataclass
class _CropPlan:
    """Rows and weights of a batch's crops, for ``_crop_transposed``."""

    rows: _AxisPlan  # picks from the whole batch
    cols: _AxisPlan  # picks from one chunk's transposed intermediate

    @staticmethod
    def build(
        top: Tensor,
        left: Tensor,
        height: Tensor,
        width: Tensor,
        flip: Tensor | None,
        shape: tuple[int, ...],
        size: int,
        source: Tensor | None = None,
        chunk: int | None = None,
    ) -> _CropPlan:
        """Plan crops of images ``shape`` (B, C, H, W) to ``size``.

        Args:
            source: Which image of the batch each crop is cut from (default: its own).
            chunk: Samples per chunk, to number the column rows from each chunk's start.
        """
        c, h, w = shape[-3:]
        sample = torch.arange(top.shape[0], device=top.device)
        rows = _AxisPlan.build(top, height, h, size, None, c, sample if source is None else source)
        cols = _AxisPlan.build(left, width, w, size, flip, c, sample if chunk is None else sample % chunk)
        return _CropPlan(rows, cols)


def _crop_transposed(rows: Tensor, plan: _CropPlan, start: int, stop: int) -> Tensor:
    """Crops of samples ``start:stop``, left transposed (columns first).

    Every later step is per pixel or the same along both axes, so the views stay
    transposed until they are written out.

    Args:
        rows: The whole batch as contiguous rows, uint8 or float. Shape: (B * C * H, W).
        plan: The batch's crop plan; its column numbers count from ``start``.
        start, stop: The chunk's samples.

    Returns:
        Crops with the last two axes swapped. Shape: (n, C, S, S).
    """
    picked = _select_rows(rows, plan.rows.chunk(start, stop))  # (n, C, S, W)
    size = picked.shape[2]
    flipped = picked.transpose(2, 3).contiguous().view(-1, size)  # rows are source columns
    return _select_rows(flipped, plan.cols.chunk(start, stop))


def _unit_float(x: Tensor) -> Tensor:
    """uint8 to float32 in [0, 1] (one multiply, no copy first); float is kept."""
    return x * (1.0 / 255.0) if x.dtype == torch.uint8 else x.to(torch.float32)


def crop_resize(
    x: Tensor,
    top: Tensor,
    left: Tensor,
    height: Tensor,
    width: Tensor,
    size: int,
    flip: Tensor | None = None,
) -> Tensor:
    """Crop a per-sample box, resize it to ``size`` x ``size`` and optionally mirror it.

    Same result as torchvision's ``resized_crop(..., antialias=True)`` followed by
    ``horizontal_flip`` where ``flip`` is set, for every sample at once.

    Args:
        x: uint8 images (scaled to [0, 1]) or float images. Shape: (B, C, H, W).
        top, left, height, width: Integer crop boxes. Shape: (B,) each.
        size: Output side S.
        flip: Optional horizontal-flip mask. Shape: (B,).

    Returns:
        Float32 crops. Shape: (B, C, S, S).
    """
    plan = _CropPlan.build(top, left, height, width, flip, tuple(x.shape), size)
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    return _crop_transposed(rows, plan, 0, x.shape[0]).transpose(2, 3).contiguous()


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


# --------------------------------------------------------------------------------------
# The batched pipeline.


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


# Columns of the one uniform draw per sample that all parameters come from.
_U_CROP = slice(0, 2 * CROP_TRIES + 2)
_U_FLIP = 2 * CROP_TRIES + 2
_U_JITTER = _U_FLIP + 1
_U_FACTORS = slice(_U_JITTER + 1, _U_JITTER + 5)
_U_ORDER = slice(_U_JITTER + 5, _U_JITTER + 9)
_U_GRAY = _U_JITTER + 9
_U_BLUR = _U_GRAY + 1
_U_SIGMA = _U_GRAY + 2
_U_COLUMNS = _U_SIGMA + 1


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


def _jitter_rounds_(
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
    return _jitter_rounds_(x.clone(), *jitter_coefficients(factors, order, apply))


def _uniform(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    if generator is None:
        return torch.rand(shape, device=device)
    # Draw where the generator lives; a generator on x.device avoids the copy.
    return torch.rand(shape, device=generator.device, generator=generator).to(device)


def _as_rgb(x: Tensor) -> Tensor:
    """Check a batch of uint8 (or float) images; repeat 1-channel ones to RGB."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (B, 3, H, W) or (B, 1, H, W), got {tuple(x.shape)}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise TypeError(f"expected uint8 images (or float in [0, 1]), got {x.dtype}")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _normalization(cfg: AugmentConfig, device: torch.device) -> tuple[Tensor, Tensor] | None:
    """Per-channel (scale, shift) with ``(x - mean) / std == x * scale + shift``."""
    if cfg.mean is None or cfg.std is None:
        return None
    mean = torch.tensor(cfg.mean, dtype=torch.float64)
    std = torch.tensor(cfg.std, dtype=torch.float64)
    scale = (1.0 / std).to(torch.float32).view(1, 3, 1, 1)
    shift = (-mean / std).to(torch.float32).view(1, 3, 1, 1)
    return scale.to(device), shift.to(device)


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
        both = self._views(torch.cat([_as_rgb(x)] * 2), generator)
        return both[:n], both[n:]

    def view(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One view of every image.

        Args:
            x: uint8 images. Shape: (B, C, H, W), C in {1, 3}.
            generator: Source of randomness; None uses the default generator.

        Returns:
            Float32 view. Shape: (B, 3, S, S).
        """
        return self._views(_as_rgb(x), generator)

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
        u = _uniform((n, _U_COLUMNS), device, generator)
        top, left, h, w = sample_crop_boxes(u[:, _U_CROP], height, width, cfg.crop_scale)
        b, c, s, hue = cfg.jitter_ranges
        lo = torch.tensor([max(0.0, 1.0 - b), max(0.0, 1.0 - c), max(0.0, 1.0 - s), -hue], device=device)
        hi = torch.tensor([1.0 + b, 1.0 + c, 1.0 + s, hue], device=device)
        jitter = u[:, _U_JITTER] < JITTER_P
        if cfg.jitter_strength == 0:
            jitter = torch.zeros_like(jitter)  # ColorJitter(0, 0, 0, 0) is the identity
        return ViewParams(
            top=top,
            left=left,
            height=h,
            width=w,
            flip=u[:, _U_FLIP] < FLIP_P,
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
        x = _as_rgb(x)
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
        crop = _CropPlan.build(p.top, p.left, p.height, p.width, p.flip, tuple(x.shape), size, source, chunk)
        jitter = jitter_coefficients(p.factors, p.order, p.jitter) if cfg.jitter_strength > 0 else None
        gray = p.gray.to(torch.float32).view(-1, 1, 1, 1)
        kernels = _blur_kernels(p, cfg.blur_kernel_size) if cfg.use_blur else None
        normalization = _normalization(cfg, x.device)

        # Rows are picked straight from the uint8 batch: converting it all to float
        # first cost more than the rest of the crop (a 4x larger tensor, out of cache).
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        # Chunks are written in the grouped order, one contiguous slice each; one gather
        # at the end puts the views back in the input's order (cheaper on CPU than an
        # index_copy per chunk).
        out = torch.empty((n, 3, size, size), dtype=torch.float32, device=x.device)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            v = _crop_transposed(rows, crop, start, stop)  # (n, 3, S, S), transposed
            if jitter is not None:
                skip = _rounds_to_run(keys[start:stop]) if keys is not None else {}
                v = _jitter_rounds_(v, jitter[0][:, start:stop], jitter[1][start:stop], **skip)
            v.lerp_(rgb_to_grayscale(v), gray[start:stop])
            if kernels is not None:
                v = blur_with_kernels(v, kernels[start:stop])
            # Back to (rows, columns), normalised on the way.
            dst = out[start:stop]
            if normalization is not None:
                torch.mul(v.transpose(2, 3), normalization[0], out=dst).add_(normalization[1])
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
    """``_jitter_rounds_`` arguments that skip what no sample with these keys needs.

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


# --------------------------------------------------------------------------------------
# Per-image pipelines (torchvision), for DataLoader workers and evaluation.


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
        ops: list[Any] = [
            v2.RGB(),
            v2.RandomResizedCrop(cfg.image_size, scale=cfg.crop_scale, ratio=CROP_RATIO, antialias=True),
            v2.RandomHorizontalFlip(FLIP_P),
        ]
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


def normalize_batch(x: Tensor, cfg: AugmentConfig) -> Tensor:
    """Batched evaluation transform, for feature extraction without augmentation.

    Matches :func:`eval_transform`: shorter side resized to ``image_size`` (bilinear,
    antialiased) and centre-cropped when the size differs, then normalised.

    Args:
        x: uint8 images (float in [0, 1] also accepted). Shape: (B, C, H, W), C in {1, 3}.
        cfg: Supplies ``image_size``, ``mean`` and ``std``.

    Returns:
        Float32 images. Shape: (B, 3, S, S).
    """
    x = _as_rgb(x)
    x = _unit_float(x)
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
    normalization = _normalization(cfg, x.device)
    if normalization is None:
        # Never hand back the caller's own (or an expanded) tensor.
        return x.clone(memory_format=torch.contiguous_format)
    return torch.addcmul(normalization[1], x, normalization[0])
