"""Decoding a folder (or .zip) of small images into one uint8 tensor, on every core.

The first run on a folder of images <= 64 px decodes every file once (``core.training.data``
caches the result): on a machine with many cores that is the wait before the first step,
so the files are decoded by a pool of processes, a chunk of the index each.
"""

from __future__ import annotations

import os
import sys
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

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


def decode_workers() -> int:
    """Processes that decode a folder of small images: this machine's cores, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


CHUNK = 2048  # images a worker decodes per task

_source = None  # the ImageSource a worker decodes from (inherited through fork, never pickled)


def _keep_source(source) -> None:
    global _source
    _source = source


def _decode_chunk(start: int, stop: int, size: int) -> tuple[np.ndarray, list[int]]:
    """Images start..stop-1 of the worker's source at ``size``, and the indices it could not read."""
    out = np.zeros((stop - start, size, size, 3), dtype=np.uint8)
    bad = []
    for i in range(start, stop):
        try:
            out[i - start] = np.asarray(resize_square(_source.open(i), size))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            bad.append(i)
    return out, bad


def decode_all(source, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``source`` (a ``core.training.data.ImageSource``) at ``size`` x ``size``
    as uint8 (N, 3, S, S), and their labels; unreadable ones skipped (a warning names the
    first), none readable a DataError.

    Decoded by ``decode_workers()`` forked processes, ``CHUNK`` images a task, where there
    are several cores and chunks (Linux); in this process otherwise. Threads do not help:
    a 32 px JPEG decodes in microseconds and the rest is Python holding the GIL (10,000 CIFAR
    test images: 0.8 s in one thread, 1.35 s in two). The result and the skipped list are
    in index order whatever the workers' timing."""
    n = len(source)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    keep = np.ones(n, dtype=bool)
    spans = [(start, min(n, start + CHUNK)) for start in range(0, n, CHUNK)]
    workers = min(decode_workers(), len(spans))
    if workers > 1 and "fork" in mp.get_all_start_methods() and sys.platform == "linux":
        ctx = mp.get_context("fork")  # the workers inherit the source, and touch no torch
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_keep_source, initargs=(source,)) as pool:
            parts = list(pool.map(_decode_chunk, *zip(*[(a, b, size) for a, b in spans])))
    else:
        _keep_source(source)
        parts = [_decode_chunk(a, b, size) for a, b in spans]
    for (a, b), (chunk, bad) in zip(spans, parts):
        images[a:b] = chunk
        keep[bad] = False
    if not keep.any():  # the error alone: one line, as every exit-2 error
        raise DataError(f"none of the {n} images under {source.root} could be decoded")
    if not keep.all():
        skipped = np.flatnonzero(~keep)
        print(f"warning: skipped {len(skipped)} unreadable image(s), first: {source.items[skipped[0]][0]}",
              file=sys.stderr)
    labels = np.array([lab for _, lab in source.items], dtype=np.int64)[keep]
    return torch.from_numpy(images[keep]).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)
