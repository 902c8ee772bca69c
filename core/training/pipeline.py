"""Where training batches of two views come from, for both data paths.

* small images (<= 64 px): the uint8 tensor lives on the training device and each batch
  is augmented there in one go (``BatchedViews``), no workers;
* large images: DataLoader workers decode and augment per image (``per_image_views``).

Both yield ``(view1, view2)`` float batches on the device and can start mid-epoch
(``start`` batches skipped), which is what makes resume exact.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Iterator

import torch
from torch import Tensor

from core.simclr.augment import (
    AugmentConfig,
    BatchedViews,
    ViewParams,
    eval_transform,
    normalize_batch,
    per_image_views,
)
from core.config import PretrainConfig
from core.training.data import ImageListDataset, TensorData, batches, load_tensor_split, stats_for
from core.simclr.layout import memory_format
from core.simclr.models import inference_copy


def augment_config(cfg: PretrainConfig) -> AugmentConfig:
    """The views a run's config asks for (size, colour jitter, blur, its dataset's mean and std):
    the one place a config becomes an AugmentConfig. The trainer makes it once, at set-up."""
    mean, std = stats_for(cfg.dataset)
    return AugmentConfig(image_size=cfg.image_size, jitter_strength=cfg.jitter_strength,
                         blur=cfg.use_blur, mean=mean, std=std)


class TensorPipeline:
    """Small images: batched augmentation on the device."""

    def __init__(self, data: TensorData, views: AugmentConfig, batch_size: int, seed: int,
                 device: torch.device, rank: int = 0, world: int = 1) -> None:
        self.images = data.images.to(device)
        self.batch_size, self.seed, self.device, self.rank, self.world = batch_size, seed, device, rank, world
        self.augment = BatchedViews(views)
        # the same generator on every rank, on the device (no host sync): every rank draws
        # the parameters of the whole global batch and applies its own share, so the views
        # are the same for any number of processes
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed * 7919)

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        B = self.batch_size
        b = B // self.world
        mine = torch.arange(self.rank * b, (self.rank + 1) * b, device=self.device)
        mine = torch.cat([mine, mine + B])  # rows of view 1 and view 2 in the 2B draws
        _, _, h, w = self.images.shape
        index = batches(len(self.images), B, self.seed, epoch, start, self.rank, self.world)
        # the epoch's indices reach the device in one copy, not one blocking copy per step
        index = torch.cat(list(index)).to(self.device) if len(index) else None
        for s in range(0 if index is None else len(index) // b):
            x = self.images[index[s * b:(s + 1) * b]]
            params = self.augment.sample_params(2 * B, h, w, self.device, self.generator)
            if self.world > 1:
                params = ViewParams(**{f.name: getattr(params, f.name)[mine] for f in fields(params)})
            both = self.augment.apply(torch.cat([x, x]), params)
            yield both[:b], both[b:]

    def close(self) -> None:
        """Nothing to stop: no workers."""

    def rng_state(self) -> Tensor:
        """The generator's state: a CPU byte tensor whose format depends on the device type."""
        return self.generator.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        self.generator.set_state(state)  # a CPU byte tensor, whatever the generator's device

    def reseed(self, salt: int) -> None:
        """A fresh stream, for a state that cannot be restored (saved on another device type)."""
        self.generator.manual_seed(self.seed * 7919 + salt)


class _IndexBatches(torch.utils.data.Sampler):
    """The batches of (image index, view seed) of the epoch being iterated; set per epoch, so
    one DataLoader (and its persistent workers) serves every epoch."""

    def __init__(self) -> None:
        self.index_batches: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.index_batches)

    def __len__(self) -> int:
        return len(self.index_batches)


class _SeededViews(torch.utils.data.Dataset):
    """Item ``(i, seed)``: image i's two views, drawn with torch's RNG seeded by ``seed``
    (forked, so the caller's stream is untouched). The views then depend on the run's seed,
    the epoch and the image, never on which worker made them, how many there are, or where
    a resume started."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        i, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[i]


def view_seeds(n: int, seed: int, epoch: int) -> list[int]:
    """One seed per image for an epoch's views (the per-image path's randomness)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch + 1_000_000_007)
    return torch.randint(0, 2**62, (n,), generator=g).tolist()


class LoaderPipeline:
    """Large images: DataLoader workers decode and augment per image.

    One DataLoader for the run, its workers persistent across epochs (started once, not
    once an epoch); each epoch hands it that epoch's index batches."""

    def __init__(self, dataset: ImageListDataset, batch_size: int, seed: int, workers: int,
                 device: torch.device, rank: int = 0, world: int = 1) -> None:
        self.dataset, self.batch_size, self.seed, self.workers = dataset, batch_size, seed, workers
        self.device, self.rank, self.world = device, rank, world
        self._batches = _IndexBatches()
        self._loader: torch.utils.data.DataLoader | None = None

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        index_batches = batches(len(self.dataset), self.batch_size, self.seed, epoch, start, self.rank, self.world)
        seeds = view_seeds(len(self.dataset), self.seed, epoch)
        self._batches.index_batches = [[(i, seeds[i]) for i in b.tolist()] for b in index_batches]
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                _SeededViews(self.dataset), batch_sampler=self._batches, num_workers=self.workers,
                pin_memory=self.device.type == "cuda", persistent_workers=self.workers > 0,
                generator=torch.Generator().manual_seed(self.seed))  # its worker seeds: not from torch's stream
        for (v1, v2), _ in self._loader:
            yield v1.to(self.device, non_blocking=True), v2.to(self.device, non_blocking=True)

    def close(self) -> None:
        """Stop the persistent workers now, at the run's end. Left to the interpreter's exit,
        their shutdown raced it: 3 of 6 runs of 5 steps with 2 workers aborted there
        ("terminate called without an active exception", exit -6)."""
        loader, self._loader = self._loader, None
        it = getattr(loader, "_iterator", None) if loader is not None else None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    # the views come from (seed, epoch, image) alone (``view_seeds``): torch's stream is kept
    # in the checkpoint as before, but nothing here draws from it
    def rng_state(self) -> Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, state: Tensor) -> None:
        torch.set_rng_state(state)

    def reseed(self, salt: int) -> None:
        torch.manual_seed(self.seed * 7919 + salt)


Pipeline = TensorPipeline | LoaderPipeline


def train_pipeline(cfg: PretrainConfig, views: AugmentConfig, device: torch.device, rank: int = 0,
                   world: int = 1) -> Pipeline:
    """The pipeline a config asks for, with --subset applied, making ``views`` of each image."""
    if cfg.small_images:
        data = load_tensor_split(cfg.dataset, cfg.data_dir, "train", cfg.image_size, cfg.seed)
        return TensorPipeline(data.subset(cfg.subset), views, cfg.batch_size, cfg.seed, device, rank, world)
    ds = ImageListDataset(cfg.dataset, cfg.data_dir, "train", per_image_views(views))
    if cfg.subset is not None and cfg.subset < len(ds):
        ds = torch.utils.data.Subset(ds, range(cfg.subset))  # type: ignore[assignment]
    return LoaderPipeline(ds, cfg.batch_size, cfg.seed, cfg.workers, device, rank, world)


def labelled_split(cfg: PretrainConfig, split: str, max_images: int | None = None, seed: int = 0,
                   views: AugmentConfig | None = None) -> TensorData | ImageListDataset:
    """A labelled split for evaluation: a uint8 TensorData (small) or a per-image dataset.

    ``max_images`` picks a fixed random subset (seeded), so a monitor stays cheap. ``views``
    (default: the config's) gives the per-image path its evaluation transform.
    """
    name = "labelled-train" if split == "train" else split
    if cfg.small_images:
        data = load_tensor_split(cfg.dataset, cfg.data_dir, name, cfg.image_size, cfg.seed)
        if split == "train":
            keep = data.labels >= 0
            data = TensorData(data.images[keep], data.labels[keep], data.classes)
        if max_images is not None and max_images < len(data):
            idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:max_images]
            idx = idx.sort().values
            data = TensorData(data.images[idx], data.labels[idx], data.classes)
        return data
    views = views if views is not None else augment_config(cfg)
    ds = ImageListDataset(cfg.dataset, cfg.data_dir, name, eval_transform(views))
    if max_images is not None and max_images < len(ds):
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:max_images]
        return torch.utils.data.Subset(ds, idx.sort().values.tolist())  # type: ignore[return-value]
    return ds


@torch.inference_mode()
def encode(encoder: torch.nn.Module, data, views: AugmentConfig | PretrainConfig, device: torch.device,
           batch_size: int = 512, workers: int = 0, amp: torch.dtype | None | str = "default",
           ) -> tuple[Tensor, Tensor]:
    """Frozen-encoder features h (N, D) float32 and labels (N,) for a labelled split.

    ``amp``: the autocast dtype (None: fp32); by default bf16 on CUDA and fp32 elsewhere. An
    evaluation passes its run's choice (``core.training.device.amp_dtype``), so a CPU where
    ``--precision auto`` picked bf16 encodes in bf16 too.

    ``views`` normalises the uint8 images (its mean and std; a run's config stands for its
    ``augment_config``).

    The encoder runs in eval mode, with its BatchNorms folded into its convolutions and in
    the layout ``core.simclr.layout`` chooses (``core.simclr.models.inference_copy``); ``encoder`` itself
    is left as it was.
    """
    was_training = encoder.training
    encoder.eval()
    net = inference_copy(encoder)
    layout = memory_format(net, device) if net is not encoder else torch.contiguous_format
    if isinstance(amp, str):
        amp = torch.bfloat16 if device.type == "cuda" else None
    amp = dict(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None)
    feats, labels = [], []
    if isinstance(data, TensorData):
        acfg = views if isinstance(views, AugmentConfig) else augment_config(views)
        for i in range(0, len(data), batch_size):
            x = normalize_batch(data.images[i:i + batch_size].to(device), acfg)
            with torch.autocast(**amp):
                feats.append(net(x.contiguous(memory_format=layout)).float())
        labels_t = data.labels.to(device)
    else:
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=workers)
        for x, y in loader:
            with torch.autocast(**amp):
                feats.append(net(x.to(device).contiguous(memory_format=layout)).float())
            labels.append(y)
        labels_t = torch.cat(labels).to(device)
    encoder.train(was_training)
    return torch.cat(feats), labels_t
