"""`simclr embed`: a trained encoder's features for every image under a folder, or for the
run's own test (or train) split, as one .npz; with ``--tensorboard`` also in the run's
Projector tab (``core.evaluation.projector``).

Any layout: ``D/<class>/<image>`` (every image exactly one folder deep) gives each image its
class index; anything else (a flat folder, nested ``photos/2024/a.jpg``, a mix) is unlabelled
(-1). Order is the sorted relative paths, so two runs over the same folder line up row by
row. Images go through the run's evaluation transform (resize the short side, centre crop,
normalise), batched on the run's device in fp32. Unreadable files are skipped and counted.

Arrays: ``features`` (N x d float32), ``paths`` (relative to D), ``labels`` (int64, -1
without classes), ``classes``, ``pca_2d`` (N x 2 float32, the first two principal
components: ``core.report.embedding_map.pca_2d``).

Without a folder: the run's labelled split through the evaluations' features cache
(``features/<split>-<checkpoint>.pt``), so after a kNN or linear evaluation it reads no
images; ``paths`` are then the image files of a folder dataset read one by one, else
``<split>/<row>``. The default ``--out`` is ``features/map-<checkpoint>.npz``: the TUI's map.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from core.training.data import IMAGE_EXTS
from core.errors import DataError


def list_images(root: Path) -> tuple[list[str], list[int], list[str]]:
    """Relative paths of every image under ``root`` (sorted), their labels and the classes."""
    if not root.is_dir():
        raise DataError(f"--data-dir {root} is not a folder; give a folder of images (any layout)")
    paths = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                   if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_EXTS)}) under {root}; point --data-dir at a folder of images")
    depth_two = all(len(Path(p).parts) == 2 for p in paths)
    classes = sorted({Path(p).parts[0] for p in paths}) if depth_two else []
    index = {c: i for i, c in enumerate(classes)}
    labels = [index[Path(p).parts[0]] if depth_two else -1 for p in paths]
    return paths, labels, classes


def embed(run_dir: str | Path, data_dir: str | Path | None, out: str | Path | None, checkpoint: str = "last",
          ema: bool | None = None, batch_size: int = 256, device: str = "auto", tensorboard: bool = False,
          split: str = "test", say: Callable[[str], None] = print) -> dict:
    """Write the .npz (and with ``tensorboard`` the run's projector files); every check first,
    so bad input writes nothing. Returns a summary.

    Without ``data_dir``: the run's own labelled ``split`` (its features cache, shared with kNN
    and linear evaluation), written by default to ``features/map-<checkpoint>.npz``
    (``core.report.embedding_map.map_file``).
    """
    from core.report.embedding_map import map_file, pca_2d

    run_dir = Path(run_dir)
    default_out = out is None and data_dir is None  # features/ is made once the checks pass
    if default_out:
        out = map_file(run_dir, checkpoint, split)
    if out is None and not tensorboard:
        raise DataError("give --out F.npz, --tensorboard, or both")
    out = None if out is None else Path(out)
    if out is not None and out.suffix != ".npz":
        raise DataError(f"--out {out} must end in .npz (numpy's archive of the arrays)")
    if out is not None and not default_out and not out.parent.is_dir():
        raise DataError(f"the folder of --out {out} does not exist; create it or write elsewhere")
    if batch_size < 1:
        raise DataError(f"--batch-size must be at least 1 (got {batch_size})")
    t0 = time.perf_counter()
    stamp = _checkpoint_stamp(run_dir, checkpoint)  # before it is read: a newer last.pt makes this map stale
    if data_dir is None:
        arrays, skipped, images, side = _embed_split(run_dir, split, checkpoint, ema, device, tensorboard, say)
        name = f"{split}-{checkpoint}"
    else:
        arrays, skipped, images, side = _embed_folder(run_dir, Path(data_dir), checkpoint, ema, batch_size, device)
        name = f"folder-{Path(data_dir).resolve().name}-{checkpoint}"
    arrays["pca_2d"] = pca_2d(arrays["features"])
    if stamp is not None:
        arrays["checkpoint_stamp"] = np.array(stamp, np.int64)
    if out is not None:
        out.parent.mkdir(exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.npz")  # renamed when whole, like every run file
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    shown = None
    if tensorboard:
        from core.evaluation.projector import write_projector
        shown = write_projector(run_dir, name, arrays["features"], arrays["labels"], list(arrays["classes"]),
                                list(arrays["paths"]), images, side, say=say)
    return {"n": len(arrays["labels"]), "skipped": skipped, "dim": arrays["features"].shape[1],
            "classes": len(arrays["classes"]), "seconds": time.perf_counter() - t0, "out": out,
            "projector": shown}


def _checkpoint_stamp(run_dir: Path, checkpoint: str) -> list[int] | None:
    """The checkpoint file's size and mtime_ns, or None when it cannot be read (checked later)."""
    from core.training.checkpoint import checkpoint_path

    try:
        st = checkpoint_path(run_dir, checkpoint).stat()
    except (OSError, ValueError):
        return None
    return [st.st_size, st.st_mtime_ns]


def _embed_folder(run_dir: Path, root: Path, checkpoint: str, ema: bool | None, batch_size: int, device: str):
    """Features of every image under ``root``: the arrays, the unreadable count, the images."""
    from core.evaluation.export import load_encoder, run_config
    from core.training.device import pick_device

    paths, labels, classes = list_images(root)
    cfg = run_config(run_dir).replace(device=device)
    dev = pick_device(cfg)
    encoder, transform = load_encoder(run_dir, checkpoint, ema, dev)
    feats, kept, skipped = [], [], 0
    for start in range(0, len(paths), batch_size):
        batch = []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                with Image.open(root / paths[i]) as img:
                    batch.append(transform(img.convert("RGB")))
                kept.append(i)
            except (OSError, UnidentifiedImageError, ValueError):
                skipped += 1
        if batch:
            with torch.no_grad():
                feats.append(encoder(torch.stack(batch).to(dev)).float().cpu())
        if sys.stderr.isatty():  # a bar at a terminal; a log gets no carriage returns
            done = min(start + batch_size, len(paths))
            bar = "#" * (30 * done // len(paths))
            print(f"\rembedding [{bar:<30}] {done}/{len(paths)}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if not kept:
        raise DataError(f"none of the {len(paths)} images under {root} could be read")
    arrays = dict(features=torch.cat(feats).numpy().astype(np.float32),
                  paths=np.array([paths[i] for i in kept]), labels=np.array([labels[i] for i in kept], np.int64),
                  classes=np.array(classes, dtype=str))
    return arrays, skipped, (lambda k: Image.open(root / arrays["paths"][k])), cfg.image_size


def _embed_split(run_dir: Path, split: str, checkpoint: str, ema: bool | None, device: str, need_images: bool,
                 say: Callable[[str], None]):
    """Features of the run's own labelled ``split``, through the evaluations' features cache."""
    from core.evaluation.export import run_config
    from core.evaluation.features import FeatureSource
    from core.errors import CheckpointError, ExportError
    from core.runs import check_checkpoint_name
    from core.training.checkpoint import checkpoint_path
    from core.training.data import TensorData, ensure_downloaded, has_test_split
    from core.training.device import pick_device
    from core.training.pipeline import augment_config, labelled_split

    if split not in ("train", "test"):
        raise DataError(f"--split must be train or test (got {split!r})")
    cfg = run_config(run_dir).replace(device=device)
    path = checkpoint_path(run_dir, check_checkpoint_name(checkpoint))
    if not path.is_file():
        saved = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt"))
        raise CheckpointError(f"{path} does not exist; checkpoints of this run: {', '.join(saved) or 'none yet'}")
    if ema and cfg.ema is None:
        raise ExportError(f"{run_dir} kept no EMA encoder (train with --ema); leave out --ema")
    if split == "test" and not has_test_split(cfg.dataset, cfg.data_dir):
        raise DataError(f"{cfg.data_dir} has no test split (test/ or val/): give --data-dir, a folder of images")
    source = FeatureSource(run_dir, checkpoint, cfg, pick_device(cfg), prefer_ema=ema is not False)
    if need_images or not source.cache_file(split).is_file():
        ensure_downloaded(cfg.dataset, cfg.data_dir)
    feats = source.get(split, say)
    n = len(feats.y)
    paths_known = cfg.dataset == "folder" and not cfg.small_images  # read one by one, by path
    data = labelled_split(cfg, split, views=augment_config(cfg)) if need_images or paths_known else None
    source_files = getattr(data, "source", None)
    if source_files is not None and len(source_files.items) == n:  # images read one by one: their paths
        names = [source_files.items[i][0] for i in range(n)]
    else:  # decoded into memory (unreadable files dropped): the row in the split
        names = [f"{split}/{i}" for i in range(n)]

    def image(i: int) -> Image.Image:
        if isinstance(data, TensorData):
            return Image.fromarray(data.images[i].permute(1, 2, 0).numpy())
        return source_files.open(i) if source_files is not None else data.tv[i][0]

    arrays = dict(features=feats.x.cpu().numpy().astype(np.float32), paths=np.array(names),
                  labels=feats.y.cpu().numpy().astype(np.int64), classes=np.array(feats.classes, dtype=str))
    return arrays, 0, image, cfg.image_size
