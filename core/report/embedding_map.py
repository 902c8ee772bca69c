"""A run's embedding as a 2-D map, torch-free (numpy only): what the TUI draws.

``simclr embed --run-dir runs/NAME`` writes ``runs/NAME/features/map-<checkpoint>.npz``
(``map_file``): the arrays of ``simclr embed`` (``features``, ``labels``, ``classes``,
``paths``) and ``pca_2d`` (N, 2) float32, the features' first two principal components, so a
reader needs neither torch nor an SVD. ``read_map`` returns the points of either kind of
.npz (it projects ``features`` itself when ``pca_2d`` is absent, as in files from before it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def map_file(run_dir: str | Path, checkpoint: str = "last", split: str = "test") -> Path:
    """Where ``simclr embed --run-dir R [--split S] [--checkpoint C]`` writes the map."""
    name = f"map-{checkpoint}.npz" if split == "test" else f"map-{split}-{checkpoint}.npz"
    return Path(run_dir) / "features" / name


def pca_2d(features: np.ndarray) -> np.ndarray:
    """The rows of ``features`` projected on their first two principal components.

    Shape: (N, D) -> (N, 2) float32, centred; the first column has the largest variance.
    The sign of each component is fixed so that its loading of largest magnitude is positive
    (ties: the first such), so the same features always give the same picture. Fewer than two
    components (D < 2 or N < 2) leave the missing columns zero.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    out = np.zeros((x.shape[0], 2), dtype=np.float64)
    if x.shape[0] == 0 or x.shape[1] == 0:
        return out.astype(np.float32)
    x = x - x.mean(axis=0)
    # eigenvectors of the D x D scatter matrix: cheap for N >> D (100,000 x 512 in well under a second)
    values, vectors = np.linalg.eigh(x.T @ x)
    order = np.argsort(values)[::-1][:2]
    for col, k in enumerate(order):
        if values[k] <= values.max() * 1e-12 or values[k] <= 0:
            continue  # no spread along it: leave the column zero
        v = vectors[:, k]
        v = v if v[np.argmax(np.abs(v))] > 0 else -v
        out[:, col] = x @ v
    return out.astype(np.float32)


@dataclass(frozen=True)
class EmbeddingMap:
    """Points of a map. xy: (N, 2) float32; labels: (N,) int64, -1 unlabelled."""

    xy: np.ndarray
    labels: np.ndarray
    classes: list[str]
    paths: list[str]

    def label_name(self, i: int) -> str:
        lab = int(self.labels[i])
        return self.classes[lab] if 0 <= lab < len(self.classes) else "unlabelled"


def read_map(path: str | Path) -> EmbeddingMap:
    """The map in an .npz of ``simclr embed``. Raises OSError / ValueError / KeyError on a file
    that is missing, damaged or not one of ours."""
    with np.load(Path(path), allow_pickle=False) as f:
        labels = np.asarray(f["labels"], dtype=np.int64)
        xy = np.asarray(f["pca_2d"], dtype=np.float32) if "pca_2d" in f.files else pca_2d(f["features"])
        classes = [str(c) for c in f["classes"]] if "classes" in f.files else []
        paths = [str(p) for p in f["paths"]] if "paths" in f.files else []
    if xy.shape != (len(labels), 2):
        raise ValueError(f"{path}: {xy.shape[0]} points but {len(labels)} labels")
    return EmbeddingMap(xy, labels, classes, paths)
