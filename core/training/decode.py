"""Decoding a folder (or .zip) of small images into one uint8 tensor, in threads.

The first run on a folder of images <= 64 px decodes every file once (``core.training.data``
caches the result): on a machine with many cores that is the wait before the first step,
so the files are decoded by a pool of threads. Pillow releases the GIL while it decodes and
resizes, so the threads run in parallel.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from core.errors import DataError


def resize_square(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and center-crop to a square."""
    if img.size == (size, size):
        return img
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def decode_threads() -> int:
    """Threads that decode a folder of small images (Pillow's decoders and resize release the GIL)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def decode_all(source, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``source`` (a ``core.training.data.ImageSource``) at ``size`` x ``size``
    as uint8 (N, 3, S, S), and their labels; unreadable ones skipped (a warning names the
    first), none readable a DataError. Decoded by ``decode_threads()`` threads over chunks of
    the index: the result and the skipped list are in index order whatever the threads' timing."""
    n = len(source)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    keep = np.ones(n, dtype=bool)

    def decode(chunk: range) -> list[str]:
        bad = []
        for i in chunk:
            try:
                images[i] = np.asarray(resize_square(source.open(i), size))
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
                keep[i] = False
                bad.append(source.items[i][0])
        return bad

    chunks = [range(start, min(n, start + 512)) for start in range(0, n, 512)]
    bad = decode(chunks[0]) if chunks else []  # opens the zip once, before any thread shares it
    if len(chunks) > 1:
        with ThreadPoolExecutor(decode_threads()) as pool:
            bad += [name for part in pool.map(decode, chunks[1:]) for name in part]
    if not keep.any():  # the error alone: one line, as every exit-2 error
        raise DataError(f"none of the {n} images under {source.root} could be decoded")
    if bad:
        print(f"warning: skipped {len(bad)} unreadable image(s), first: {bad[0]}", file=sys.stderr)
    labels = np.array([lab for _, lab in source.items], dtype=np.int64)[keep]
    return torch.from_numpy(images[keep]).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)
