"""Pictures of what the augmentation does: each row an image, then views of it, drawn by the
pipeline that trains (``core.training.pipeline``), never by a copy of it.

* images of 64 px or less (``TensorPipeline``): the row's original is the uint8 base image the
  pipeline holds, decoded at ``image_size`` by ``core.training.data`` (folders: shorter side
  resized bicubic and centre-cropped; torchvision sets: bilinear, antialiased; synthetic: made at
  that size), the very pixels training crops from. The views come as in
  ``TensorPipeline.epoch``: the pipeline's own ``BatchedViews`` draws the parameters of the whole
  batch (``sample_params``) from one seeded generator on the pipeline's device, then ``apply``.
* larger images (``LoaderPipeline``): each image is read as the DataLoader workers read it (the
  pipeline's ``ImageListDataset``) and its views are made by the transform those workers run (the
  dataset's ``PerImageViews``, torchvision per image), under a seeded torch RNG that is put back
  afterwards. The original is shown through the evaluation transform (``eval_transform``: shorter
  side resized to ``image_size``, antialiased, then centre-cropped).

Views come out normalised with the dataset's mean and std; they are un-normalised for display.
The generator is the picture's own, so drawing one never changes a run's view stream.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from core.config import PretrainConfig
from core.errors import DataError, UsageError, one_line
from core.simclr.augment import AugmentConfig, PerImageViews, eval_transform
from core.training.pipeline import LoaderPipeline, Pipeline, TensorPipeline, augment_config, train_pipeline

if TYPE_CHECKING:
    from core.training.runlog import RunLog

MAX_IMAGES = 64   # rows
MAX_VIEWS = 16    # views per row
GAP = 2           # pixels between cells
GAP_VALUE = 255   # the gap is white
TB_TAG = "views/augmented"


def check_counts(n: int, views: int) -> None:
    """``n`` rows and ``views`` views per row are in range, else a UsageError."""
    if not 1 <= n <= MAX_IMAGES:
        raise UsageError(f"--n {n}: give between 1 and {MAX_IMAGES} images (rows)")
    if not 1 <= views <= MAX_VIEWS:
        raise UsageError(f"--views {views}: give between 1 and {MAX_VIEWS} views per image")


def pick(count: int, n: int, seed: int) -> Tensor:
    """The rows' images: the first ``n`` (at most ``count``) of a permutation of ``range(count)``
    seeded by ``seed``, on the CPU. Shape: (min(n, count),) int64."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n]


def to_uint8(x: Tensor, augment: AugmentConfig) -> Tensor:
    """Normalised float views back to displayable uint8: ``x * std + mean``, clamped, rounded.

    Shape: (B, 3, S, S) -> (B, 3, S, S) uint8, on the CPU.
    """
    x = x.detach().float().cpu()
    if augment.mean is not None and augment.std is not None:
        mean = torch.tensor(augment.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(augment.std, dtype=torch.float32).view(1, 3, 1, 1)
        x = x * std + mean
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def cells_from_pipeline(pipe: Pipeline, n: int = 8, views: int = 4, seed: int = 0) -> Tensor:
    """Each picked image and ``views`` of its training views, from a pipeline ``train_pipeline`` made.

    Args:
        pipe: The pipeline (small images: batched on its device; large: per image).
        n: Rows: images picked with :func:`pick` from the pipeline's images (fewer if it has fewer).
        views: Views per image.
        seed: Seeds the pick and the views; the same seed gives the same pixels on the same device.

    Returns:
        uint8 cells, column 0 the original. Shape: (rows, 1 + views, 3, S, S), on the CPU.
    """
    if isinstance(pipe, TensorPipeline):
        return _batched_cells(pipe, n, views, seed)
    if isinstance(pipe, LoaderPipeline):
        return _per_image_cells(pipe, n, views, seed)
    raise TypeError(f"no views for a {type(pipe).__name__}")


def _batched_cells(pipe: TensorPipeline, n: int, views: int, seed: int) -> Tensor:
    x = pipe.images[pick(len(pipe.images), n, seed).to(pipe.device)]  # uint8 (rows, 3, S, S)
    rows, _, h, w = x.shape
    generator = torch.Generator(device=pipe.device)
    generator.manual_seed(seed)
    # as TensorPipeline.epoch: one draw of the parameters for the whole batch, then apply
    params = pipe.augment.sample_params(views * rows, h, w, pipe.device, generator)
    out = pipe.augment.apply(torch.cat([x] * views), params)  # view-major: (views * rows, 3, S, S)
    drawn = to_uint8(out, pipe.augment.cfg).view(views, rows, 3, *out.shape[-2:]).transpose(0, 1)
    return torch.cat([x.cpu()[:, None], drawn], dim=1)


class _AsIs:
    """The identity transform: the dataset's item as decoded (a PIL image)."""

    def __call__(self, image):
        return image


def _per_image_cells(pipe: LoaderPipeline, n: int, views: int, seed: int) -> Tensor:
    base, index = pipe.dataset, None
    if isinstance(base, torch.utils.data.Subset):  # --subset
        base, index = base.dataset, list(base.indices)
    transform = base.transform
    if not isinstance(transform, PerImageViews):
        raise TypeError(f"the per-image pipeline's transform is a {type(transform).__name__}, not PerImageViews")
    augment = transform.cfg
    raw = copy.copy(base)  # the same files, read as the workers read them, without their transform
    raw.transform = _AsIs()
    show = eval_transform(augment)
    rows = []
    with torch.random.fork_rng(devices=[]):  # torchvision draws from torch's global RNG: put it back
        torch.manual_seed(seed)
        for i in pick(len(pipe.dataset), n, seed).tolist():
            image, _ = raw[index[i] if index is not None else i]
            row = [show(image)] + [transform.transform(image) for _ in range(views)]
            rows.append(to_uint8(torch.stack(row), augment))
    return torch.stack(rows)


def grid_image(cells: Tensor, gap: int = GAP) -> Tensor:
    """Cells laid out as a grid with ``gap`` white pixels between them.

    Args:
        cells: uint8. Shape: (rows, columns, 3, S, S).

    Returns:
        uint8 image. Shape: (3, rows * S + (rows - 1) * gap, columns * S + (columns - 1) * gap).
    """
    rows, cols, c, s, _ = cells.shape
    out = torch.full((c, rows * s + (rows - 1) * gap, cols * s + (cols - 1) * gap), GAP_VALUE, dtype=torch.uint8)
    for r in range(rows):
        for k in range(cols):
            out[:, r * (s + gap): r * (s + gap) + s, k * (s + gap): k * (s + gap) + s] = cells[r, k]
    return out


def check_data(cfg: PretrainConfig) -> None:
    """The config's data folder exists (synthetic data needs none), else a DataError."""
    if cfg.dataset != "synthetic" and not Path(cfg.data_dir).exists():
        raise DataError(f"--data-dir {cfg.data_dir} does not exist; point it at the {cfg.dataset} data "
                        f"(a download root, or a folder or .zip of images)")


def views_grid(cfg: PretrainConfig, n: int = 8, views: int = 4, seed: int | None = None,
               device: torch.device | str = "cpu", augment: AugmentConfig | None = None) -> Tensor:
    """The picture ``simclr views`` writes: each row an image of the config's training split
    (``--subset`` applied) and ``views`` of its views, made by the pipeline the config trains with.

    Args:
        cfg: The run's config (dataset, data folder, image size, jitter, blur).
        n, views: Rows and views per row (:func:`check_counts`).
        seed: Seeds the pick and the views (default: ``cfg.seed``).
        device: Where a small-image pipeline draws (random numbers differ between device types).
        augment: The view distribution; default ``augment_config(cfg)``, what the run trains with.

    Returns:
        uint8 image, see :func:`grid_image`. Shape: (3, H, W).
    """
    check_counts(n, views)
    check_data(cfg)
    augment = augment if augment is not None else augment_config(cfg)
    pipe = train_pipeline(cfg, augment, torch.device(device))
    return grid_image(cells_from_pipeline(pipe, n, views, cfg.seed if seed is None else seed))


def write_png(image: Tensor, path: str | Path) -> Path:
    """Write a (3, H, W) uint8 image as PNG atomically (a temporary file, then ``os.replace``).

    Raises UsageError when the folder does not exist.
    """
    from PIL import Image

    path = Path(path)
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: the folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def log_views(log: RunLog, pipe: Pipeline, seed: int, n: int = 8, views: int = 4) -> None:
    """TensorBoard's ``views/augmented`` image (step 0) at the start of a new run: one batch of
    ``n`` images from the run's own pipeline, ``views`` views each. Rank 0 only (a disabled log
    does nothing); a failure is said in one line and never fails the run."""
    if not log.enabled:
        return
    try:
        grid = grid_image(cells_from_pipeline(pipe, n, views, seed))
        log.open()
        log.tb.add_image(TB_TAG, grid, 0, dataformats="CHW")
    except Exception as e:  # noqa: BLE001 - a picture never fails a run
        log.say(f"could not draw the augmented views for TensorBoard: {one_line(e)}")
