"""Datasets: torchvision (CIFAR-10/100, STL-10), class folders or a .zip of them (or any folder or
.zip of images, unlabelled), synthetic.

Two shapes of data come out of here:

* ``TensorData`` — images of 64 px or less, decoded once into one ``uint8`` tensor
  (N, 3, S, S) plus labels, cached on disk so the second run starts in seconds. The
  trainer moves it to the training device and augments whole batches there.
* ``ImageListDataset`` — larger images, decoded per item in DataLoader workers and
  augmented per image.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from core.errors import DataError  # defined torch-free, for the command line
from core.training.decode import decode_all

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
SPLIT_NAMES = {"train": ("train",), "test": ("test", "val")}

#: per-dataset normalisation statistics (mean, std); anything else uses ImageNet's
STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "synthetic": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
}
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class TensorData:
    """A labelled split held in memory. images: (N, 3, S, S) uint8; labels: (N,) int64."""

    images: Tensor
    labels: Tensor
    classes: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, n: int | None) -> "TensorData":
        if n is None or n >= len(self):
            return self
        return TensorData(self.images[:n], self.labels[:n], self.classes)


def stats_for(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return STATS.get(dataset, IMAGENET_STATS)


# ---------------------------------------------------------------------- class folders / zips
class ImageSource:
    """Lists ``<split>/<class>/<image>`` entries of a folder or a .zip and opens them; for the
    train split of a folder or zip without that layout, every image in it, unlabelled (-1).

    The zip handle is opened lazily per process, so instances are safe to send to
    DataLoader workers.
    """

    def __init__(self, root: Path, split: str) -> None:
        self.root = root
        self.split = split
        self.zip_path = self._find_zip(root, split)
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid = -1
        entries = self._list()
        self.labelled = bool(entries)
        if not entries and split == "train":  # no train/<class>/: every image under root, unlabelled
            entries = [("", name) for name in self._list_all()]
        if not entries:
            where = self.zip_path or root
            raise DataError(
                f"no images found for split '{split}' in {where}: expected {split}/<class>/<image> "
                f"(or {root}/{split}.zip), or for pretraining any folder of images; point --data-dir there")
        classes = sorted({c for c, _ in entries if c})
        index = {c: i for i, c in enumerate(classes)}
        self.classes = classes
        self.items = [(name, index.get(c, -1)) for c, name in entries]

    def _list_all(self) -> list[str]:
        """Every image under root (or in its .zip), at any depth, sorted: unlabelled data."""
        if self.root.is_file() and self.root.suffix == ".zip":
            try:
                members = zipfile.ZipFile(self.root).namelist()
            except (OSError, zipfile.BadZipFile) as e:
                raise DataError(f"cannot read {self.root} ({e}); is it a complete .zip file?") from None
            self.zip_path = self.root
            return sorted(m for m in members if m.lower().endswith(IMAGE_EXTS))
        if not self.root.is_dir():
            return []
        return sorted(str(f) for f in self.root.rglob("*") if f.suffix.lower() in IMAGE_EXTS and f.is_file())

    @staticmethod
    def _find_zip(root: Path, split: str) -> Path | None:
        if root.is_file() and root.suffix == ".zip":
            return root
        for name in SPLIT_NAMES.get(split, (split,)):
            if (root / name).is_dir():
                return None
            if (root / f"{name}.zip").is_file():
                return root / f"{name}.zip"
        return None

    def _list(self) -> list[tuple[str, str]]:
        """(class, entry) pairs, sorted; entry is a zip member name or a file path."""
        out = []
        names = SPLIT_NAMES.get(self.split, (self.split,))
        if self.zip_path is not None:
            try:
                members = zipfile.ZipFile(self.zip_path).namelist()
            except (OSError, zipfile.BadZipFile) as e:
                raise DataError(f"cannot read {self.zip_path} ({e}); is it a complete .zip file?") from None
            splits = {n for ns in SPLIT_NAMES.values() for n in ns}
            for m in members:
                parts = m.split("/")
                if not m.lower().endswith(IMAGE_EXTS):
                    continue
                # accept split/class/img and class/img (a zip named after the split)
                if len(parts) >= 3 and parts[-3] in names or len(parts) == 2:
                    out.append((parts[-2], m))
                elif not (len(parts) >= 3 and parts[-3] in splits):
                    return []  # an image outside the class layout: the zip is a plain (unlabelled) collection
        else:
            for name in names:
                d = self.root / name
                if d.is_dir():
                    for cls in sorted(p for p in d.iterdir() if p.is_dir()):
                        for f in sorted(cls.iterdir()):
                            if f.suffix.lower() in IMAGE_EXTS and f.is_file():  # a FIFO would block
                                out.append((cls.name, str(f)))
                    break
        return sorted(out)

    def __len__(self) -> int:
        return len(self.items)

    def open(self, i: int) -> Image.Image:
        """Image i as RGB (grayscale, palette and RGBA images are converted)."""
        name, _ = self.items[i]
        if self.zip_path is not None:
            if self._zip is None or self._zip_pid != os.getpid():
                self._zip = zipfile.ZipFile(self.zip_path)
                self._zip_pid = os.getpid()
            img = Image.open(io.BytesIO(self._zip.read(name)))
        else:
            img = Image.open(name)
        return img.convert("RGB")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_zip"] = None
        return state


# ---------------------------------------------------------------------- cache
def cache_dir() -> Path:
    return Path(os.environ.get("SIMCLR_CACHE", Path.home() / ".cache" / "simclr-tui"))


def _cached(key: str, build: Callable[[], TensorData]) -> TensorData:
    """Load a decoded split from the cache, or build it and store it atomically."""
    path = cache_dir() / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
    if path.exists():
        try:
            d = torch.load(path, weights_only=True)
            return TensorData(d["images"], d["labels"], list(d["classes"]))
        except Exception:  # noqa: BLE001 - a bad cache file is rebuilt, never trusted
            path.unlink(missing_ok=True)
    data = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"images": data.images, "labels": data.labels, "classes": data.classes}, tmp)
        os.replace(tmp, path)
    except OSError as e:
        print(f"warning: could not cache decoded images in {path.parent}: {e}", file=sys.stderr)
    return data


def _source_key(root: Path, split: str, size: int) -> str:
    st = root.stat()
    return f"v1|{root.resolve()}|{split}|{size}|{st.st_size}|{st.st_mtime_ns}"


# ---------------------------------------------------------------------- synthetic
def synthetic(n: int, size: int, num_classes: int = 10, seed: int = 0) -> TensorData:
    """Images with class structure: each class a hue and a stripe orientation, plus noise.

    Deterministic in (n, size, num_classes, seed). Shape: (n, 3, size, size) uint8.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=g)]
    k = torch.arange(num_classes, dtype=torch.float32)
    hue = torch.stack([torch.cos(2 * torch.pi * k / num_classes + o) for o in (0.0, 2.1, 4.2)], 1) * 0.35 + 0.5
    angle = torch.pi * k / num_classes
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    a = angle[labels][:, None, None]
    phase = torch.rand(n, 1, 1, generator=g) * 6.28
    freq = 3.0 + torch.rand(n, 1, 1, generator=g) * 2.0
    stripes = torch.sin(freq * torch.pi * (xx * torch.cos(a) + yy * torch.sin(a)) + phase)
    base = hue[labels][:, :, None, None] * (0.75 + 0.25 * stripes[:, None])
    base = base * (0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=g))  # brightness varies
    noise = torch.randn(n, 3, size, size, generator=g) * 0.06
    images = ((base + noise).clamp(0, 1) * 255).round().to(torch.uint8)
    return TensorData(images, labels.long(), [f"class{i}" for i in range(num_classes)])


SYNTHETIC_SIZES = {"train": 2560, "test": 512}


# ---------------------------------------------------------------------- torchvision
def _torchvision_class(name: str):
    import torchvision.datasets as tvd

    return {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "stl10": tvd.STL10}[name]


def _torchvision(name: str, root: Path, split: str):
    cls = _torchvision_class(name)
    if name == "stl10":
        args = {"split": {"train": "train+unlabeled", "labelled-train": "train", "test": "test"}[split]}
    else:
        args = {"train": split != "test"}
    try:
        return cls(str(root), download=False, **args)
    except RuntimeError:
        pass  # not there yet: try to download it
    # What a failed download leaves is removed again: its archive and folder (when they were
    # not there before) and the folders it created; nothing else in root is touched.
    created = _missing_dirs(root)
    ours = [root / cls.filename, root / cls.base_folder]
    fresh = [p for p in ours if not p.exists()]
    try:
        return cls(str(root), download=True, **args)
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        for p in fresh:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        for d in created:  # deepest first, and only while empty
            try:
                d.rmdir()
            except OSError:
                break
        raise DataError(
            f"{name} is not in {root} and could not be downloaded ({type(e).__name__}); "
            f"download it elsewhere and point --data-dir at the folder holding it, "
            f"or use --dataset folder --data-dir <class folders or .zip>") from None


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for p in (path, *path.parents):
        if p.exists():
            break
        missing.append(p)
    return missing


def _tv_tensor(ds, name: str) -> TensorData:
    data = np.asarray(ds.data)
    if data.ndim == 4 and data.shape[-1] == 3:  # CIFAR: N, H, W, C
        data = data.transpose(0, 3, 1, 2)
    labels = np.asarray(ds.targets if hasattr(ds, "targets") else ds.labels, dtype=np.int64)
    classes = list(getattr(ds, "classes", [str(i) for i in range(int(labels.max()) + 1)]))
    return TensorData(torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(labels), classes)


# ---------------------------------------------------------------------- entry points
def load_tensor_split(dataset: str, data_dir: str | Path, split: str, image_size: int,
                      seed: int = 0) -> TensorData:
    """A whole split as a uint8 tensor at ``image_size`` (small-image path).

    split: "train" (all training images; for STL-10 also the unlabeled ones, labelled -1),
    "labelled-train" (training images with labels) or "test".
    """
    root = Path(data_dir)
    if dataset == "synthetic":
        n = SYNTHETIC_SIZES["test" if split == "test" else "train"]
        return synthetic(n, image_size, seed=1000 + seed if split == "test" else seed)
    if dataset == "folder":
        if not root.exists():
            raise DataError(f"--data-dir {root} does not exist; point it at a folder (or .zip) holding train/<class>/<image>")
        src_split = "train" if split == "labelled-train" else split
        source = ImageSource(root, src_split)
        anchor = source.zip_path or root
        return _cached(_source_key(anchor, src_split, image_size) + f"|{len(source)}", lambda: TensorData(*decode_all(source, image_size), source.classes))
    if dataset in ("cifar10", "cifar100", "stl10"):
        data = _tv_tensor(_torchvision(dataset, root, split), dataset)
        if data.images.shape[-1] != image_size:
            import torch.nn.functional as F
            x = F.interpolate(data.images.float(), size=(image_size, image_size), mode="bilinear", antialias=True)
            data = TensorData(x.round().clamp(0, 255).to(torch.uint8), data.labels, data.classes)
        return data
    raise DataError(f"unknown dataset {dataset!r}")


class ImageListDataset(torch.utils.data.Dataset):
    """Large images decoded per item (DataLoader workers), with a per-image transform."""

    def __init__(self, dataset: str, data_dir: str | Path, split: str, transform: Callable) -> None:
        self.transform = transform
        root = Path(data_dir)
        if dataset == "folder":
            if not root.exists():
                raise DataError(f"--data-dir {root} does not exist; point it at a folder (or .zip) holding train/<class>/<image>")
            self.source: ImageSource | None = ImageSource(root, "train" if split == "labelled-train" else split)
            self.tv = None
            self.classes = self.source.classes
        elif dataset in ("cifar10", "cifar100", "stl10"):
            self.source = None
            self.tv = _torchvision(dataset, root, split)
            self.classes = list(getattr(self.tv, "classes", []))
        else:
            raise DataError(f"dataset {dataset!r} has no per-image path; use image size <= 64")

    def __len__(self) -> int:
        return len(self.source) if self.source is not None else len(self.tv)

    def label(self, i: int) -> int:
        if self.source is not None:
            return self.source.items[i][1]
        return int(self.tv[i][1]) if not hasattr(self.tv, "labels") else int(self.tv.labels[i])

    def __getitem__(self, i: int):
        if self.source is not None:
            img, j = self._open_readable(i)
            return self.transform(img), self.source.items[j][1]
        img, label = self.tv[i]
        return self.transform(img.convert("RGB")), int(label)

    def _open_readable(self, i: int) -> tuple[Image.Image, int]:
        """Image i, or (documented handling) the next readable one after it, with its index."""
        n = len(self.source)
        for k in range(n):
            j = (i + k) % n
            try:
                return self.source.open(j), j
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
                continue
        raise DataError(f"none of the {n} images under {self.source.root} could be decoded")


def ensure_downloaded(dataset: str, data_dir: str | Path) -> None:
    """A torchvision dataset's folder is in ``data_dir``, or it is downloaded now.

    For commands that must fail before they write anything (evaluations): without it a
    missing dataset would only show up inside the job. Only the folder's presence is
    checked (torchvision's own check hashes every file, 3 GB for STL-10); loading the
    data later checks the files. Raises DataError.
    """
    if dataset in ("cifar10", "cifar100", "stl10"):
        if not (Path(data_dir) / _torchvision_class(dataset).base_folder).is_dir():
            _torchvision(dataset, Path(data_dir), "test")


def is_labelled(dataset: str, data_dir: str | Path) -> bool:
    """Whether the training images have classes (a folder of images without train/<class>/ has none)."""
    if dataset != "folder":
        return True
    try:
        return ImageSource(Path(data_dir), "train").labelled
    except DataError:
        return False


def has_test_split(dataset: str, data_dir: str | Path) -> bool:
    if dataset != "folder":
        return True
    root = Path(data_dir)
    if root.is_file() and root.suffix == ".zip":  # one zip holding train/ and test/
        try:
            return len(ImageSource(root, "test")) > 0
        except DataError:
            return False
    return any((root / n).is_dir() or (root / f"{n}.zip").is_file() for n in SPLIT_NAMES["test"])


def batches(n: int, batch_size: int, seed: int, epoch: int, start: int = 0,
            rank: int = 0, world: int = 1) -> Sequence[Tensor]:
    """Index batches of one epoch: a permutation seeded by (seed, epoch), full batches only.

    Every rank draws the same permutation and takes its contiguous share of each global
    batch, so the global batch is the same for any number of processes. ``start`` skips
    batches already done (resuming mid-epoch). Shape of each: (batch_size // world,).
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g)
    per_rank = batch_size // world
    steps = n // batch_size
    return [perm[s * batch_size + rank * per_rank: s * batch_size + (rank + 1) * per_rank]
            for s in range(start, steps)]
