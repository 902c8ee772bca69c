"""Crop and resize, per sample: torchvision's antialiased ``resized_crop`` (+ flip) for a batch.

Crop, resize and flip pick whole source rows with per-sample weights (the weights of
torchvision's antialiased resize, so the crops match it to float rounding), one axis,
a transpose, then the other axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from core.simclr.augment.batch import unit_float


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
        picked = unit_float(pairs.index_select(0, plan.numbers.reshape(-1))).view(n, c, size, 2 * width)
        return torch.lerp(picked[..., :width], picked[..., width:], plan.weight[:, None, :, None])
    n, c, size, taps = plan.numbers.shape
    picked = rows.index_select(0, plan.numbers.permute(3, 0, 1, 2).reshape(-1))
    picked = unit_float(picked).view(taps, n, c, size, width)
    return (picked * plan.weight.permute(2, 0, 1)[:, :, None, :, None]).sum(dim=0)


@dataclass
class CropPlan:
    """Rows and weights of a batch's crops, for ``crop_transposed``."""

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
    ) -> CropPlan:
        """Plan crops of images ``shape`` (B, C, H, W) to ``size``.

        Args:
            source: Which image of the batch each crop is cut from (default: its own).
            chunk: Samples per chunk, to number the column rows from each chunk's start.
        """
        c, h, w = shape[-3:]
        sample = torch.arange(top.shape[0], device=top.device)
        rows = _AxisPlan.build(top, height, h, size, None, c, sample if source is None else source)
        cols = _AxisPlan.build(left, width, w, size, flip, c, sample if chunk is None else sample % chunk)
        return CropPlan(rows, cols)


def crop_transposed(rows: Tensor, plan: CropPlan, start: int, stop: int) -> Tensor:
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
    plan = CropPlan.build(top, left, height, width, flip, tuple(x.shape), size)
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    return crop_transposed(rows, plan, 0, x.shape[0]).transpose(2, 3).contiguous()
