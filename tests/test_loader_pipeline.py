"""The per-image pipeline (images > 64 px): one DataLoader per run with persistent workers,
and views that depend on (seed, epoch, image) alone: not on the number of workers, on
which worker made them, or on where a resume started."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.config import PretrainConfig
from core.training.pipeline import LoaderPipeline, augment_config, train_pipeline, view_seeds


def noisy_folder(root: Path, per_class: int = 6, size: int = 80) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        d = root / "train" / c
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i:03d}.png")
    return root


def pipe_for(data: Path, workers: int) -> LoaderPipeline:
    cfg = PretrainConfig(dataset="folder", data_dir=str(data), image_size=72, batch_size=4, workers=workers, seed=3)
    pipe = train_pipeline(cfg, augment_config(cfg), torch.device("cpu"))
    assert isinstance(pipe, LoaderPipeline)
    return pipe


def views(pipe: LoaderPipeline, epoch: int, start: int = 0) -> list[torch.Tensor]:
    return [torch.cat([v1, v2]) for v1, v2 in pipe.epoch(epoch, start)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return noisy_folder(tmp_path_factory.mktemp("large"))


def test_views_do_not_depend_on_workers_or_on_where_an_epoch_starts(data):
    alone = views(pipe_for(data, 0), epoch=1)
    assert len(alone) == 3  # 12 images, batch 4
    pooled = pipe_for(data, 2)
    assert all(torch.equal(a, b) for a, b in zip(alone, views(pooled, epoch=1), strict=True))
    # a resume two batches into the epoch gets the uninterrupted epoch's last batch
    assert torch.equal(views(pipe_for(data, 0), epoch=1, start=2)[0], alone[2])


def test_one_loader_serves_every_epoch_and_each_epoch_draws_new_views(data):
    pipe = pipe_for(data, 2)
    first = views(pipe, epoch=0)
    loader = pipe._loader
    second = views(pipe, epoch=1)
    assert pipe._loader is loader and loader.persistent_workers  # the workers were started once
    assert not torch.equal(torch.cat(first), torch.cat(second))
    # an epoch left early (a stop, a time budget) does not disturb the next one
    next(iter(pipe.epoch(2)))
    assert all(torch.equal(a, b) for a, b in zip(views(pipe, epoch=1), second, strict=True))


def test_making_views_leaves_the_callers_random_stream_alone(data):
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    views(pipe_for(data, 0), epoch=0)  # workers=0: the views are made in this process
    assert torch.equal(torch.rand(3), expected)


def test_view_seeds_are_per_run_seed_and_epoch():
    assert view_seeds(5, 0, 0) == view_seeds(5, 0, 0)
    assert view_seeds(5, 0, 0) != view_seeds(5, 0, 1) != view_seeds(5, 1, 1)


def test_close_stops_the_workers_before_the_interpreter_exits(data):
    """Left to the interpreter's exit, 3 of 6 runs with 2 workers aborted there; the trainer
    closes its pipeline when training ends."""
    pipe = pipe_for(data, 2)
    views(pipe, epoch=0)
    workers = list(pipe._loader._iterator._workers)
    assert workers and all(w.is_alive() for w in workers)
    pipe.close()
    assert pipe._loader is None and not any(w.is_alive() for w in workers)
    pipe.close()  # twice is harmless
