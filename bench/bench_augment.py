"""Pairs of SimCLR views per second: batched (core.simclr.augment.BatchedViews) vs per-image.

    python3 bench/bench_augment.py [--data-dir ../shared/data/cifar10] [--n 5120] [--repeats 3]

Pipelines, all making two 32 x 32 views of every image with jitter strength s:

* ``BatchedViews``: the images already sit in memory as one uint8 tensor; each batch
  of 512 (in a fresh random order every pass) becomes two float views in one call.
* ``torchvision (reference)``: RandomResizedCrop(32), RandomHorizontalFlip,
  RandomApply([ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)], p=0.8), RandomGrayscale(0.2),
  ToTensor on PIL images, twice per image, through a DataLoader with
  ``os.cpu_count()`` persistent workers and batch 512 (one warm-up pass first, so
  worker start-up is not counted).
* ``per_image_views (v2)``: our torchvision.transforms.v2 pipeline through the same
  DataLoader (``--no-v2`` skips it).

Neither side normalises (the reference ends at ToTensor). Repeats are interleaved in
one process; the table gives the median and range of pairs per second over repeats.

Measured on the 2-core development machine (torch 2.14.1, n=5120, s=0.5, 5 repeats),
first with the machine otherwise idle (load average 0.5 at start):

| pipeline | pairs/s (median) | range | vs reference |
| --- | ---: | ---: | ---: |
| BatchedViews, 2 threads | 30,269 | 12,905-31,412 | 11.5x |
| BatchedViews, 1 thread | 19,660 | 19,059-20,984 | 7.5x |
| torchvision (reference) | 2,637 | 2,550-2,673 | 1.0x |
| per_image_views (v2) | 2,188 | 2,014-2,288 | 0.8x |

and while other jobs ran (load average 1.2 rising to 4.4):

| pipeline | pairs/s (median) | range | vs reference |
| --- | ---: | ---: | ---: |
| BatchedViews, 2 threads | 1,146 | 732-2,698 | 1.3x |
| BatchedViews, 1 thread | 14,072 | 10,384-17,679 | 15.9x |
| torchvision (reference) | 886 | 677-1,226 | 1.0x |
| per_image_views (v2) | 817 | 618-972 | 0.9x |

With other processes on the cores, OpenMP's two threads wait for each other at every
one of the batched pipeline's small ops; one thread degrades gracefully.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.simclr.augment import AugmentConfig, BatchedViews, per_image_views  # noqa: E402


def load_images(data_dir: Path, n: int, seed: int = 0) -> list[Image.Image]:
    """The first ``n`` training JPEGs of ``data_dir/train.zip``, or random images."""
    archive = data_dir / "train.zip"
    if archive.is_file():
        with zipfile.ZipFile(archive) as zf:
            names = sorted(name for name in zf.namelist() if name.lower().endswith(".jpg"))[:n]
            images = [Image.open(io.BytesIO(zf.read(name))).convert("RGB") for name in names]
        print(f"source: {len(images)} images from {archive}")
        return images
    rng = np.random.default_rng(seed)
    print(f"source: {n} random 32x32 images ({archive} not found)")
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


class TwoViews(Dataset):
    """Two views of each in-memory PIL image with a given per-image transform."""

    def __init__(self, images: list[Image.Image], transform) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = self.images[i]
        return self.transform(image), self.transform(image)


class PairDataset(Dataset):
    """Each in-memory PIL image through a transform that returns two views."""

    def __init__(self, images: list[Image.Image], pair_transform) -> None:
        self.images = images
        self.pair_transform = pair_transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.pair_transform(self.images[i])


def reference_transform(strength: float):
    from torchvision import transforms as T

    s = strength
    return T.Compose(
        [
            T.RandomResizedCrop(32),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.ToTensor(),
        ]
    )


def time_loader(loader: DataLoader) -> float:
    start = time.perf_counter()
    for v1, _ in loader:
        assert v1.shape[1:] == (3, 32, 32)
    return time.perf_counter() - start


def time_batched(views: BatchedViews, x: torch.Tensor, batch: int, generator: torch.Generator) -> float:
    start = time.perf_counter()
    order = torch.randperm(x.shape[0], generator=generator)
    for i in range(0, x.shape[0], batch):
        v1, v2 = views(x[order[i : i + batch]], generator=generator)
        assert v1.shape[1:] == (3, 32, 32)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=REPO.parent / "shared" / "data" / "cifar10",
        help="folder with train.zip (CIFAR-10 JPEGs); random images if absent",
    )
    parser.add_argument("--n", type=int, default=5120, help="number of source images")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per pipeline, interleaved")
    parser.add_argument("--batch", type=int, default=512, help="batch size of every pipeline")
    parser.add_argument("--strength", type=float, default=0.5, help="colour jitter strength s")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers of the per-image pipelines"
    )
    parser.add_argument("--no-v2", action="store_true", help="skip the per_image_views (v2) pipeline")
    parser.add_argument(
        "--threads",
        default=None,
        help="comma-separated torch thread counts to run BatchedViews with (default: torch's default, and 1)",
    )
    args = parser.parse_args()

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    images = load_images(args.data_dir, args.n)
    x = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).contiguous()

    cfg = AugmentConfig(image_size=32, jitter_strength=args.strength, mean=None, std=None)
    views = BatchedViews(cfg)
    generator = torch.Generator().manual_seed(0)

    def loader(dataset: Dataset) -> DataLoader:
        return DataLoader(
            dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers, persistent_workers=args.workers > 0
        )

    default_threads = torch.get_num_threads()
    thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else [default_threads, 1]

    def batched(threads: int):
        def run() -> float:
            torch.set_num_threads(threads)
            try:
                return time_batched(views, x, args.batch, generator)
            finally:
                torch.set_num_threads(default_threads)

        return run

    pipelines = {f"BatchedViews, {t} thread{'s' if t > 1 else ''}": batched(t) for t in dict.fromkeys(thread_counts)}
    ref_loader = loader(TwoViews(images, reference_transform(args.strength)))
    pipelines["torchvision (reference)"] = lambda: time_loader(ref_loader)
    if not args.no_v2:
        v2_loader = loader(PairDataset(images, per_image_views(AugmentConfig(32, args.strength, mean=None, std=None))))
        pipelines["per_image_views (v2)"] = lambda: time_loader(v2_loader)

    for run in pipelines.values():  # warm-up: starts the workers, fills caches
        run()
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(args.repeats):
        for name, run in pipelines.items():
            rates[name].append(args.n / run())

    ref = statistics.median(rates["torchvision (reference)"])
    print(
        f"\nload average at end {os.getloadavg()[0]:.2f}; n={args.n}, batch={args.batch}, s={args.strength}, "
        f"{args.workers} workers, {args.repeats} repeats\n"
    )
    print("| pipeline | pairs/s (median) | range | vs reference |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"| {name} | {med:,.0f} | {min(values):,.0f}-{max(values):,.0f} | {med / ref:.1f}x |")


if __name__ == "__main__":
    main()
