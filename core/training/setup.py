"""A run's set-up, in one pass: device -> data -> views -> model -> optimizer -> checkpoint -> log."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from core.config import PretrainConfig
from core.errors import DataError
from core.jobs.prune import Pruner, release
from core.runs import read_status
from core.simclr import dist
from core.training.budget import plan_steps
from core.training.device import choose_kernels, keep_freed_memory, pick_device
from core.training.model import EMA, build_training_model, make_optimizer, wrap_model
from core.training.monitor import KnnMonitor, can_monitor
from core.training.pipeline import TensorPipeline, augment_config, train_pipeline
from core.training.resume import read_last, restore
from core.training.runlog import RunLog
from core.training.session import Progress, Session
from core.training.stopping import StopGuard
from core.training.views_grid import log_views


def open_session(cfg: PretrainConfig, run_dir: Path, stop: StopGuard, resume: bool = False,
                 argv: list[str] | None = None) -> Session:
    """Everything ``train`` needs, restored from checkpoints/last.pt when ``resume``.

    Nothing is written before the checkpoint has been read: a bad one leaves the run as it was.
    From then on a stop that gives up (``core.training.stopping``) records the run as stopped at
    the step last.pt holds.
    """
    device = pick_device(cfg)
    if device.type == "cpu":
        keep_freed_memory()
    kernels = choose_kernels(cfg, device)
    rank, world = dist.get_rank(), dist.get_world_size()
    if cfg.batch_size % world:
        raise DataError(f"--batch-size {cfg.batch_size} must be divisible by the {world} processes")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    views = augment_config(cfg)
    pipe = train_pipeline(cfg, views, device, rank, world)
    if len(pipe) == 0:
        n = len(pipe.images) if isinstance(pipe, TensorPipeline) else len(pipe.dataset)
        raise DataError(f"--batch-size {cfg.batch_size} is larger than the {n} training images; lower it or add images")
    pruner = sweep_pruner(cfg, run_dir, resume)
    if pruner is not None and pruner.spec.metric == "knn_top1" and not can_monitor(cfg):
        raise DataError(f"sweep {pruner.sweep} prunes on the kNN monitor's top-1, which needs labelled train/<class>/ "
                        f"and test/<class>/ images; make the sweep with --prune-metric loss for unlabelled data")
    if cfg.knn_every and not can_monitor(cfg):
        # unlabelled images pretrain; the monitor needs train/<class>/ and test/<class>/ (said once)
        print(f"kNN monitor off: {cfg.data_dir} has no labelled train/<class>/ and test/<class>/ images "
              f"(pretraining needs no labels; evaluate on labelled data with `simclr linear-eval --data-dir ...`)",
              flush=True)
        cfg = cfg.replace(knn_every=0)
    knn_rungs = pruner is not None and pruner.spec.metric == "knn_top1"  # the monitor runs at the rungs too
    monitor = KnnMonitor(cfg, views, device) if cfg.knn_every or knn_rungs else None

    model = build_training_model(cfg, device)
    optimizer = make_optimizer(cfg, model)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda")
    ema = EMA(model.encoder, cfg.ema) if cfg.ema else None

    ckpt = read_last(run_dir) if resume else None
    log = RunLog(run_dir, cfg, enabled=dist.is_main(), argv=argv)
    if device.type == "cuda":
        log.say(kernels)
    if not resume:  # what the augmentation does, once, in TensorBoard (rank 0; never fails the run)
        log_views(log, pipe, cfg.seed)
    s = Session(cfg, device, pipe, model, optimizer, scaler, ema, Progress(total_steps=plan_steps(cfg, len(pipe))),
                log, monitor, pruner, checkpoints=run_dir / "checkpoints")
    if ckpt is not None:
        restore(s, ckpt)
    stop.on_give_up = lambda why: log.abandoned(why, s.saved)
    s.model = wrap_model(cfg, model, device)
    return s


def sweep_pruner(cfg: PretrainConfig, run_dir: Path, resume: bool) -> Pruner | None:
    """The run's pruning, when its sweep prunes (core.jobs.prune). A person resuming a pruned
    run wants it to go on: its pruning is turned off for good (``release``), decided on rank
    0 and followed by every rank."""
    pruner = Pruner.of(run_dir, cfg.epochs)
    status = read_status(run_dir / "status.json") if pruner is not None and resume and dist.is_main() else None
    if dist.any_rank(status is not None and status.state == "pruned"):
        if dist.is_main():
            release(run_dir, "resumed after its sweep pruned it")
            print(f"resuming a run its sweep pruned: it trains to the end (pruning is off for {run_dir.name})",
                  flush=True)
        return None
    return pruner
