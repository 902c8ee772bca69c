"""`simclr embed`: a trained encoder's features for every image under a folder, as one .npz.

Any layout: ``D/<class>/<image>`` (every image exactly one folder deep) gives each image its
class index; anything else (a flat folder, nested ``photos/2024/a.jpg``, a mix) is unlabelled
(-1). Order is the sorted relative paths, so two runs over the same folder line up row by
row. Images go through the run's evaluation transform (resize the short side, centre crop,
normalise), batched on the run's device in fp32. Unreadable files are skipped and counted.

Arrays: ``features`` (N x d float32), ``paths`` (relative to D), ``labels`` (int64, -1
without classes), ``classes``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

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


def embed(run_dir: str | Path, data_dir: str | Path, out: str | Path, checkpoint: str = "last",
          ema: bool | None = None, batch_size: int = 256, device: str = "auto") -> dict:
    """Write the .npz; every check first, so bad input writes nothing. Returns a summary."""
    from core.evaluation.export import load_encoder, run_config
    from core.training.device import pick_device

    run_dir, root, out = Path(run_dir), Path(data_dir), Path(out)
    if out.suffix != ".npz":
        raise DataError(f"--out {out} must end in .npz (numpy's archive of the arrays)")
    if not out.parent.is_dir():
        raise DataError(f"the folder of --out {out} does not exist; create it or write elsewhere")
    if batch_size < 1:
        raise DataError(f"--batch-size must be at least 1 (got {batch_size})")
    paths, labels, classes = list_images(root)
    cfg = run_config(run_dir).replace(device=device)
    dev = pick_device(cfg)
    encoder, transform = load_encoder(run_dir, checkpoint, ema, dev)
    feats, kept, skipped, t0 = [], [], 0, time.perf_counter()
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
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.npz")  # renamed when whole, like every run file
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"n": len(kept), "skipped": skipped, "dim": arrays["features"].shape[1], "classes": len(classes),
            "seconds": time.perf_counter() - t0}
