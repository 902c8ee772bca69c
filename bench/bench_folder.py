"""Pretraining on a folder of your own JPEGs: pairs of views per second at 96 and 224 px.

    python3 bench/bench_folder.py [--data-dir ../shared/data/cifar10] [--n 1024] [--steps 6]

Images above 64 px stream through the per-image pipeline (decode, RandomResizedCrop, flip,
jitter, grey, blur, in DataLoader workers). This writes ``--n`` JPEGs (quality 90) of CIFAR-10
train images upscaled to each size into a flat, unlabelled folder, then measures, in one
process:

* **loader**: pairs of views per second out of the DataLoader alone (``train_pipeline``'s
  own dataset and loader settings), with 0 workers (the reference, 1.0x) and 2 workers;
* **training**: ``simclr pretrain`` on that folder (ResNet-18 width 16, batch 64, ``--steps``
  steps, 2 workers): its ``train/images_per_sec`` (images, i.e. pairs of views, per second): what the whole step sustains.

The ratio of the two says what limits a run: the loader (decode + augment on the CPU) or
the model.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.cli import main as simclr  # noqa: E402
from core.config import PretrainConfig  # noqa: E402
from core.runs import read_metrics  # noqa: E402


def write_folder(src_zip: Path, out: Path, n: int, size: int) -> None:
    """n CIFAR-10 train images upscaled to size x size, as JPEGs in a flat folder."""
    out.mkdir(parents=True)
    with zipfile.ZipFile(src_zip) as z:
        names = [m for m in z.namelist() if m.lower().endswith((".jpg", ".png"))][:n]
        for i, m in enumerate(names):
            img = Image.open(io.BytesIO(z.read(m))).convert("RGB").resize((size, size), Image.BICUBIC)
            img.save(out / f"{i:05d}.jpg", quality=90)


def loader_rate(folder: Path, size: int, workers: int, batches: int = 8) -> float:
    import torch

    from core.training.pipeline import augment_config, train_pipeline

    cfg = PretrainConfig(dataset="folder", data_dir=str(folder), image_size=size, batch_size=64, workers=workers,
                         knn_every=0).validate()
    pipe = train_pipeline(cfg, augment_config(cfg), torch.device("cpu"), 0, 1)
    it = iter(pipe.epoch(0))
    next(it)  # workers started, first batch out
    t0, pairs = time.perf_counter(), 0
    for _ in range(batches):
        v1, _ = next(it)
        pairs += v1.shape[0]
    return pairs / (time.perf_counter() - t0)


def training_rate(folder: Path, size: int, steps: int, run: Path) -> float:
    assert simclr(["pretrain", "--dataset", "folder", "--data-dir", str(folder), "--image-size", str(size),
                   "--width", "16", "--batch-size", "64", "--max-steps", str(steps), "--workers", "2",
                   "--knn-every", "0", "--optimizer", "adam", "--lr", "1e-3", "--run-dir", str(run)]) == 0
    rates = [r["value"] for r in read_metrics(run / "metrics.jsonl")[0] if r["tag"] == "train/images_per_sec"]
    return rates[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "cifar10"))
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--steps", type=int, default=6)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for size in (96, 224):
            folder = Path(tmp) / f"photos{size}"
            write_folder(Path(args.data_dir) / "train.zip", folder, args.n, size)
            base = loader_rate(folder, size, 0)
            two = loader_rate(folder, size, 2)
            train = training_rate(folder, size, args.steps, Path(tmp) / f"run{size}")
            rows.append((size, base, two, train))
        print("| size | loader, 0 workers (pairs/s) | loader, 2 workers | training (pairs/s) | training / loader(2) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for size, base, two, train in rows:
            print(f"| {size} px | {base:.0f} (1.0x) | {two:.0f} ({two / base:.2f}x) | {train:.0f} "
                  f"({train / base:.2f}x) | {train / two:.2f} |")


if __name__ == "__main__":
    main()
