"""A run's embedding in TensorBoard's Projector tab (``simclr embed --tensorboard``).

Written into the run directory, so ``tensorboard --logdir runs`` shows it under the run's own
name (the run stays one TensorBoard run: nothing here writes events, and the projector's
folder holds none)::

    runs/NAME/projector_config.pbtxt          one embedding per name, e.g. test-last
    runs/NAME/projector/<name>/tensors.tsv    N x D features, tab-separated, one row a point
    runs/NAME/projector/<name>/metadata.tsv   a header row "label<TAB>path", then one row a point
    runs/NAME/projector/<name>/sprite.png     the points' thumbnails, row by row, in a square

The config is the plugin's own proto (``projector_config_pb2``) in its text format, and its
paths are relative to it, as the plugin requires (it refuses paths that leave the config's
folder). The tensor is text, not float32 bytes: the plugin tries text first and takes bytes
only on a UnicodeDecodeError, which a binary file of many zeros (ReLU features) can dodge.

The projector's limits: it loads at most 100,000 points (``MAX_POINTS``; more are sampled
down, seeded, stratified by class when there are labels, and one line says so), and its
sprite must be square and at most 8192 px a side, so N points get thumbnails of at most
floor(8192 / ceil(sqrt(N))) px (``thumb_size``). Every file is written whole and renamed;
the config last, under the run folder's lock, so TensorBoard never reads a config that names
files not yet there, and two writers keep each other's embeddings.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
from PIL import Image, ImageOps

from core.runs.files import atomic_write_text, folder_lock

MAX_POINTS = 100_000  # the projector loads no more
SPRITE_MAX = 8192     # px, a side of the sprite (WebGL's texture limit it assumes)
THUMB_MAX = 64        # px, a thumbnail: large enough to recognise, small enough to load fast
CONFIG = "projector_config.pbtxt"
FOLDER = "projector"


def sample_points(labels: np.ndarray, limit: int = MAX_POINTS, seed: int = 0) -> tuple[np.ndarray, str | None]:
    """Row indices (sorted) of at most ``limit`` points, and the line saying so when sampled.

    Stratified: each label (-1 included) keeps its share of ``limit``, rounded by largest
    remainder, so the sample's class proportions are the data's to within one point.
    Deterministic in (labels, limit, seed).
    """
    labels = np.asarray(labels)
    n = len(labels)
    if n <= limit:
        return np.arange(n), None
    rng = np.random.default_rng(seed)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = counts * (limit / n)
    take = np.floor(quota).astype(np.int64)
    extra = np.argsort(-(quota - take), kind="stable")[: limit - int(take.sum())]
    take[extra] += 1
    picks = [rng.choice(np.flatnonzero(inverse == c), size=int(t), replace=False) for c, t in enumerate(take)]
    idx = np.sort(np.concatenate(picks))
    how = "stratified by class" if (labels >= 0).any() and len(counts) > 1 else "uniformly"
    return idx, (f"projector: {n} points are more than TensorBoard's projector loads; "
                 f"showing {len(idx)} of them, sampled {how} (seed {seed})")


def thumb_size(n: int, image_side: int) -> int:
    """A thumbnail's side (px) for ``n`` points: the sprite's ceil(sqrt(n)) columns fit in
    ``SPRITE_MAX``, and no thumbnail is larger than the image or ``THUMB_MAX``."""
    cols = max(1, math.ceil(math.sqrt(max(n, 1))))
    return max(1, min(image_side, THUMB_MAX, SPRITE_MAX // cols))


def make_sprite(images: Callable[[int], Image.Image | None], rows: np.ndarray, side: int) -> Image.Image:
    """The thumbnails of ``rows`` (in that order), left to right and top to bottom, on a
    square of ceil(sqrt(len(rows))) thumbnails a side; an image that cannot be read is grey."""
    cols = max(1, math.ceil(math.sqrt(max(len(rows), 1))))
    sprite = Image.new("RGB", (cols * side, cols * side))
    for k, i in enumerate(rows):
        try:
            img = images(int(i))
        except (OSError, ValueError, SyntaxError):
            img = None
        thumb = (ImageOps.fit(img.convert("RGB"), (side, side), Image.BICUBIC) if img is not None
                 else Image.new("RGB", (side, side), (128, 128, 128)))
        sprite.paste(thumb, ((k % cols) * side, (k // cols) * side))
    return sprite


def _cell(text: str) -> str:
    return re.sub(r"[\t\r\n]", " ", text) or "-"


def metadata_text(labels: np.ndarray, classes: list[str], names: list[str]) -> str:
    """metadata.tsv: a header row (two columns, so the plugin reads it as one) and a row a point."""
    def label(lab: int) -> str:
        return classes[lab] if 0 <= lab < len(classes) else ("unlabelled" if lab < 0 else str(lab))
    rows = [f"{_cell(label(int(lab)))}\t{_cell(name)}" for lab, name in zip(labels, names)]
    return "label\tpath\n" + "".join(r + "\n" for r in rows)


def write_tensor(f: BinaryIO, features: np.ndarray) -> None:
    """tensors.tsv: one row a point, the float32 values to 6 significant digits."""
    np.savetxt(f, np.asarray(features, np.float32), fmt="%.6g", delimiter="\t")


def embedding_name(text: str) -> str:
    """A tensor name that is also a folder name: letters, digits, '.', '_' and '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "embedding"


def _atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write`` into a temp file beside ``path``, fsync, rename: never half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _update_config(run_dir: Path, name: str, n: int, dim: int, side: int) -> None:
    """Add (or replace) embedding ``name`` in the run's projector config, keeping the others."""
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import EmbeddingInfo, ProjectorConfig

    path = run_dir / CONFIG
    with folder_lock(path):
        config = ProjectorConfig()
        try:
            text_format.Parse(path.read_text(), config)
        except (OSError, text_format.ParseError, UnicodeDecodeError):
            config = ProjectorConfig()  # none yet, or unreadable: start afresh
        kept = [e for e in config.embeddings if e.tensor_name != name]
        del config.embeddings[:]
        config.embeddings.extend(kept)
        folder = f"{FOLDER}/{name}"
        info = EmbeddingInfo(tensor_name=name, tensor_path=f"{folder}/tensors.tsv",
                             metadata_path=f"{folder}/metadata.tsv", tensor_shape=[n, dim])
        info.sprite.image_path = f"{folder}/sprite.png"
        info.sprite.single_image_dim.extend([side, side])
        config.embeddings.append(info)
        atomic_write_text(path, text_format.MessageToString(config))


def write_projector(run_dir: str | Path, name: str, features: np.ndarray, labels: np.ndarray,
                    classes: list[str], names: list[str], images: Callable[[int], Image.Image | None],
                    image_side: int, seed: int = 0, say: Callable[[str], None] = print) -> dict:
    """Write embedding ``name`` of ``run_dir`` for TensorBoard's projector (the layout above).

    features: (N, D); labels: (N,) int, -1 unlabelled; names: (N,) the points' paths;
    images(i): point i's image (PIL), or None; image_side: the images' side in px (the
    thumbnails are no larger). Returns the points shown, the thumbnail and the folder.
    """
    run_dir, name = Path(run_dir), embedding_name(name)
    features, labels = np.asarray(features, np.float32), np.asarray(labels, np.int64)
    if features.ndim != 2 or len(features) != len(labels) or len(labels) != len(names) or not len(labels):
        raise ValueError(f"projector: {features.shape} features, {len(labels)} labels, {len(names)} names")
    rows, note = sample_points(labels, MAX_POINTS, seed)
    if note:
        say(note)
    side = thumb_size(len(rows), image_side)
    folder = run_dir / FOLDER / name
    folder.mkdir(parents=True, exist_ok=True)
    meta = metadata_text(labels[rows], classes, [names[i] for i in rows])
    sprite = make_sprite(images, rows, side)
    _atomic(folder / "tensors.tsv", lambda f: write_tensor(f, features[rows]))
    _atomic(folder / "metadata.tsv", lambda f: f.write(meta.encode()))
    _atomic(folder / "sprite.png", lambda f: sprite.save(f, format="PNG"))
    _update_config(run_dir, name, len(rows), features.shape[1], side)
    return {"points": len(rows), "of": len(labels), "thumb": side, "folder": folder, "name": name}
