"""Neighbours: what the encoder thinks is similar (``simclr neighbours``, and a TensorBoard image
after each kNN job).

For a few query images, their k nearest training images by cosine similarity of the frozen
features h (the evaluation transform, BatchNorm in eval mode: the features kNN and linear
evaluation use, from the same cache, ``core.evaluation.features``). The picture has one row
per query: the query first (white border, its class under it), then its k neighbours, most
similar first, each with its similarity under it and a border that is green for the query's
class, red for another class and grey where either has no label.

Where the queries and the bank (the training images searched) come from:

* by default the run's test split (queries) and its labelled train split (bank), both
  features from the run's cache ``RUN/features/`` (computed and cached once if absent);
* ``data_dir`` holding ``train/`` (or ``train.zip``): a dataset in the run's folder layout,
  exactly as ``simclr knn --dataset folder --data-dir D`` reads it: its train split is the
  bank, its test split (``test/`` or ``val/``) the queries, cached under D's tag;
* ``data_dir`` any other folder of images (any layout, as ``simclr embed``): its images are
  the queries (only the picked ones are encoded, not cached) and the run's own train split
  stays the bank. Class folders ``D/<class>/<image>`` named like the run's classes give marks.

``seed`` picks the queries: the first ``queries`` of a permutation seeded by it (the same
seed, the same queries). The PNG is written whole (temp file, rename).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError
from torch import Tensor

from core.errors import CheckpointError, DataError, UsageError
from core.evaluation.features import Features, FeatureSource
from core.training.data import TensorData, has_test_split
from core.training.decode import resize_square
from core.training.pipeline import augment_config, encode, labelled_split

#: the grid's geometry in pixels: each image a TILE square in a BORDER frame, CAPTION below, GAP around
TILE, BORDER, CAPTION, GAP = 64, 3, 14, 4
BACKGROUND, TEXT = (24, 24, 24), (235, 235, 235)
COLOURS = {"query": (255, 255, 255), "same": (0, 190, 0), "other": (220, 0, 0), "unknown": (128, 128, 128)}


@dataclass
class Grid:
    """The picture as numbers. ``index`` are rows of the bank; shapes (Q,) and (Q, k)."""

    query_labels: Tensor  # (Q,) int64, -1 where the query has no label
    index: Tensor  # (Q, k) int64, nearest first
    similarity: Tensor  # (Q, k) float32, descending along each row
    bank_labels: Tensor  # (Q, k) int64
    classes: list[str]
    names: list[str]  # what each query is: "test 17" or a path under the folder

    def marks(self) -> list[list[str]]:
        """Per neighbour: ``same`` or ``other`` class than its query, ``unknown`` without labels."""
        return [["unknown" if q < 0 or int(b) < 0 else "same" if int(b) == q else "other" for b in row]
                for q, row in zip(self.query_labels.tolist(), self.bank_labels)]


# ---------------------------------------------------------------------- the numbers
def pick(n: int, count: int, seed: int) -> Tensor:
    """``count`` of ``n`` rows (all when fewer), chosen by ``seed``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count]


def nearest(bank: Tensor, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Cosine similarities (Q, k), descending, and the bank rows (Q, k) they belong to.

    bank: (N, D); queries: (Q, D), on one device."""
    sim = F.normalize(queries.float(), dim=1) @ F.normalize(bank.float(), dim=1).T
    return sim.topk(k, dim=1)


def grid_of(bank: Features, queries: Tensor, query_labels: Tensor, k: int, names: list[str]) -> Grid:
    sim, idx = nearest(bank.x, queries.to(bank.x.device), k)
    idx = idx.cpu()
    return Grid(query_labels.cpu().long(), idx, sim.cpu(), bank.y.cpu()[idx], bank.classes, names)


# ---------------------------------------------------------------------- the picture
def cell_origin(row: int, col: int, tile: int = TILE) -> tuple[int, int]:
    """Top-left pixel of the frame of cell (row, col); the image starts BORDER inside it."""
    return GAP + col * (tile + 2 * BORDER + GAP), GAP + row * (tile + 2 * BORDER + CAPTION + GAP)


def grid_size(rows: int, cols: int, tile: int = TILE) -> tuple[int, int]:
    """(width, height) of a grid of rows x cols cells."""
    return cell_origin(rows, cols, tile)


def image_at(data, i: int) -> Image.Image:
    """Image ``i`` of a labelled split as RGB (TensorData, ImageListDataset, or a Subset of one)."""
    if isinstance(data, TensorData):
        return Image.fromarray(data.images[i].permute(1, 2, 0).numpy())
    if isinstance(data, torch.utils.data.Subset):
        return image_at(data.dataset, data.indices[i])
    if data.source is not None:
        return data.source.open(i)
    return data.tv[i][0].convert("RGB")


def draw(grid: Grid, query_images: list[Image.Image], bank_image: Callable[[int], Image.Image],
         tile: int = TILE) -> Image.Image:
    """Rows = queries; column 0 the query, columns 1..k its neighbours with marks and similarities."""
    rows, k = grid.index.shape
    canvas = Image.new("RGB", grid_size(rows, k + 1, tile), BACKGROUND)
    pen = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    marks = grid.marks()

    def cell(r: int, c: int, img: Image.Image, colour: str, caption: str) -> None:
        x, y = cell_origin(r, c, tile)
        side = tile + 2 * BORDER
        pen.rectangle([x, y, x + side - 1, y + side - 1], fill=COLOURS[colour])
        small = max(img.size) <= tile  # upscaled pixels stay pixels; larger images are smoothed down
        canvas.paste(ImageOps.fit(img.convert("RGB"), (tile, tile), Image.NEAREST if small else Image.BICUBIC),
                     (x + BORDER, y + BORDER))
        pen.text((x, y + side + 1), caption, fill=TEXT, font=font)

    for r in range(rows):
        q = int(grid.query_labels[r])
        name = grid.classes[q] if 0 <= q < len(grid.classes) else "query"
        cell(r, 0, query_images[r], "query", name[: max(4, tile // 6)])
        for c in range(k):
            cell(r, c + 1, bank_image(int(grid.index[r, c])), marks[r][c], f"{float(grid.similarity[r, c]):.3f}")
    return canvas


def write_png(img: Image.Image, out: Path) -> None:
    """Write ``img`` to ``out`` whole: a temp file beside it, then a rename."""
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def picture(bank: Features, bank_data, queries: Features, query_data, count: int, k: int, seed: int,
            tile: int = TILE) -> tuple[Grid, Image.Image]:
    """The grid of ``count`` queries (picked by ``seed``) of a labelled split against the bank,
    both already features; ``*_data`` are their images (``labelled_split``), row for row."""
    rows = pick(len(queries.y), count, seed)
    qx, qy = queries.x[rows.to(queries.x.device)], queries.y.cpu()[rows]
    grid = grid_of(bank, qx, qy, min(k, len(bank.y)), [f"test {int(i)}" for i in rows])
    return grid, draw(grid, [image_at(query_data, int(i)) for i in rows], lambda i: image_at(bank_data, i), tile)


def add_to_tensorboard(run_dir: Path, job: str, source: FeatureSource, train: Features, test: Features,
                       step: int | None, queries: int = 8, k: int = 8) -> None:
    """A finished kNN job's neighbours (seed 0) as the image ``neighbours/<job>`` in the run's own
    TensorBoard folder, at the evaluated checkpoint's pretraining step, from that job's features."""
    from torch.utils.tensorboard import SummaryWriter

    bank_data, query_data = labelled_split(source.cfg, "train"), labelled_split(source.cfg, "test")
    _, img = picture(train, bank_data, test, query_data, queries, k, seed=0)
    with SummaryWriter(str(run_dir)) as tb:
        tb.add_image(f"neighbours/{job}", np.asarray(img), step if isinstance(step, int) else 0, dataformats="HWC")


# ---------------------------------------------------------------------- simclr neighbours
def has_train_split(data_dir: Path) -> bool:
    return (data_dir / "train").is_dir() or (data_dir / "train.zip").is_file()


def open_source(run_dir: Path, checkpoint: str = "last", data_dir: str | Path | None = None,
                device: str = "auto", prefer_ema: bool = True) -> FeatureSource:
    """The checked feature source of the bank (and, without a plain query folder, the queries).
    Raises a UserError (one line, exit 2) for a run without that checkpoint or bad data."""
    from core.evaluation.export import run_config
    from core.runs import check_checkpoint_name, eval_dataset_tag
    from core.training.checkpoint import checkpoint_path, load_checkpoint
    from core.training.device import pick_device

    own = run_config(run_dir)
    check_checkpoint_name(checkpoint)
    path = checkpoint_path(run_dir, checkpoint)
    if not path.is_file():
        saved = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt"))
        raise CheckpointError(f"{path} does not exist: {run_dir} has no checkpoint {checkpoint} "
                              f"(saved: {', '.join(saved) or 'none'}); train first or pick another --checkpoint")
    load_checkpoint(path, mmap=True)  # whole and ours, before anything is written
    cfg, tag = own, None
    if data_dir is not None and has_train_split(Path(data_dir)):
        cfg = own.replace(dataset="folder", data_dir=str(data_dir))
        tag = eval_dataset_tag(own.dataset, own.data_dir, "folder", str(data_dir))
        if not has_test_split("folder", data_dir):
            raise DataError(f"{data_dir} has train/ but no test/ or val/ to take queries from; give a folder of "
                            f"query images instead (any layout), whose neighbours come from the run's training set")
    elif data_dir is None and not has_test_split(cfg.dataset, cfg.data_dir):
        raise DataError(f"{cfg.data_dir} has no test split (test/ or val/) to take queries from; "
                        f"give --data-dir a folder of query images")
    cfg = cfg.replace(device=device).validate()
    return FeatureSource(run_dir, checkpoint, cfg, pick_device(cfg), prefer_ema=prefer_ema, dataset_tag=tag)


def folder_queries(source: FeatureSource, root: Path, count: int, seed: int, classes: list[str],
                   say: Callable[[str], None]) -> tuple[Tensor, Tensor, list[Image.Image], list[str]]:
    """Features (Q, D), labels (Q,) in the bank's classes, images and paths of ``count`` images
    under ``root`` (picked by ``seed``), through the same decoding and transform as the bank's."""
    from core.evaluation.embed import list_images
    from core.simclr.augment import eval_transform

    paths, labels, folder_classes = list_images(root)
    index = {c: i for i, c in enumerate(classes)}
    images, names, ys = [], [], []
    for i in pick(len(paths), len(paths), seed).tolist():
        try:
            with Image.open(root / paths[i]) as img:
                images.append(img.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError):
            say(f"skipped {paths[i]}: not a readable image")
            continue
        names.append(paths[i])
        ys.append(index.get(folder_classes[labels[i]], -1) if labels[i] >= 0 else -1)
        if len(images) == count:
            break
    if not images:
        raise DataError(f"none of the {len(paths)} images under {root} could be read")
    views, size, y = augment_config(source.cfg), source.cfg.image_size, torch.tensor(ys, dtype=torch.long)
    if source.cfg.small_images:  # decoded as the bank's images are (core.training.data), then normalised
        arr = np.stack([np.asarray(resize_square(img, size)) for img in images])
        data = TensorData(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), y, classes)
    else:
        transform = eval_transform(views)
        data = [(transform(img), int(label)) for img, label in zip(images, ys)]
    x, _ = encode(source.encoder(), data, views, source.device, amp=source.amp())  # as the bank was encoded
    return x, y, images, names


def neighbours(run_dir: str | Path, out: str | Path, checkpoint: str = "last", data_dir: str | Path | None = None,
               queries: int = 8, k: int = 8, seed: int = 0, device: str = "auto", prefer_ema: bool = True,
               tile: int = TILE, say: Callable[[str], None] = print) -> Grid:
    """``simclr neighbours``: check, find and draw, then write ``out`` (a .png) atomically.

    ``data_dir``: a dataset folder with train/, or any folder of query images (the module's
    docstring). Every check that can fail on bad input (a UserError: one line, exit 2) comes
    before anything is written; the feature cache is written only after them."""
    run_dir, out = Path(run_dir), Path(out)
    if queries < 1:
        raise UsageError(f"--queries must be at least 1 (got {queries})")
    if k < 1:
        raise UsageError(f"--k must be at least 1 (got {k})")
    if out.suffix.lower() != ".png" or out.is_dir():
        raise UsageError(f"--out {out} must be a .png file to write (not a folder)")
    if not out.parent.is_dir():
        raise UsageError(f"the folder of --out {out} does not exist; create it or write elsewhere")
    query_dir = None
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise DataError(f"--data-dir {data_dir} is not a folder; give a folder of images (any layout) "
                            f"or of train/ and test/ class folders")
        if not has_train_split(Path(data_dir)):
            from core.evaluation.embed import list_images
            list_images(Path(data_dir))  # a folder without images fails here, before any encoding
            query_dir = Path(data_dir)
    source = open_source(run_dir, checkpoint, None if query_dir else data_dir, device, prefer_ema)
    bank_data = labelled_split(source.cfg, "train")
    if len(bank_data) == 0:
        raise DataError(f"the train split of {source.cfg.dataset} has no labelled images to search")
    if k > len(bank_data):
        raise UsageError(f"--k {k} is more than the {len(bank_data)} training images; use --k {len(bank_data)} or less")
    bank = source.get("train", say)
    if query_dir is None:
        test = source.get("test", say)
        if bank.classes and test.classes and bank.classes != test.classes:  # labels index different lists
            raise DataError(f"the train and test splits have different classes ({len(bank.classes)} vs "
                            f"{len(test.classes)}); every class folder must exist in both")
        grid, img = picture(bank, bank_data, test, labelled_split(source.cfg, "test"), queries, k, seed, tile)
    else:
        qx, qy, images, names = folder_queries(source, query_dir, queries, seed, bank.classes, say)
        grid = grid_of(bank, qx, qy, k, names)
        img = draw(grid, images, lambda i: image_at(bank_data, i), tile)
    write_png(img, out)
    return grid
