"""SimCLR pretraining: set-up, then one loop you can read in one screen (`train`).

Runs unchanged on CPU, one CUDA device, DataParallel and DDP (torchrun). Only rank 0
writes the run directory. SIGINT/SIGTERM finish the current step, checkpoint and stop.
"""

from __future__ import annotations

import copy
import math
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.simclr import dist, layout
from core.training.checkpoint import epoch_checkpoints, load_checkpoint, save_checkpoint
from core.config import PretrainConfig
from core.errors import one_line
from core.training.data import DataError, has_test_split, is_labelled
from core.training.device import amp_dtype, keep_freed_memory, pick_device
from core.simclr.knn import knn_accuracy
from core.simclr.lars import LARS
from core.simclr.loss import NTXentLoss
from core.simclr.models import build_model, clean_state_dict, unwrap
from core.training.pipeline import encode, labelled_split, train_pipeline
from core.training.runlog import RunLog
from core.simclr.schedule import scale_lr, set_lr, warmup_cosine
from core.training.stopping import StopGuard

KNN_BANK_IMAGES = 10_000   # kNN monitor: a fixed random subset of the labelled train split
KNN_QUERY_IMAGES = 10_000  # ... and of the test split


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, ...); the message says what to do."""


@dataclass
class Progress:
    """Where training is; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0          # completed epochs
    total_steps: int = 0
    train_seconds: float = 0.0
    budget_fixed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- set-up
def build_training_model(cfg: PretrainConfig, device: torch.device) -> nn.Module:
    """The model a run trains, on ``device``, in the memory layout ``core.simclr.layout`` chooses.

    channels_last (NHWC) on CUDA for the tensor cores, and on CPU where oneDNN's kernels are
    safe and faster in it (width 8 and up: 1.1-1.6x a whole step on 2 cores); NCHW on CPU
    below width 8, where an AVX2 kernel corrupts memory (``docs/BENCHMARKS.md``).
    """
    model: nn.Module = build_model(cfg.backbone, cfg.width, cfg.image_size, cfg.projection_dim).to(device)
    if dist.is_dist():
        # global BatchNorm: statistics over the whole batch, as one process would compute
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda" else dist.convert_global_bn(model)
    return layout.to_layout(model, device)


def wrap_model(cfg: PretrainConfig, model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel / DataParallel / torch.compile around the bare model, as asked."""
    if dist.is_dist():
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    elif cfg.data_parallel and torch.cuda.device_count() > 1:
        model = nn.DataParallel(model)
    if cfg.compile:
        model = torch.compile(model)
    return model


def make_optimizer(cfg: PretrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "lars":
        return LARS(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        # The fused kernel updates every tensor in one pass: 3x the per-tensor loop for the
        # cifar10-cpu model (bench/bench_optimizer.py). On CPU it assumes each grad has its
        # parameter's strides, which autograd guarantees (tests/test_runner.py checks it for
        # the channels_last model). CPU support came in torch 2.4: older ones get the loop.
        if all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params):
            try:
                return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
            except RuntimeError:
                pass
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


class EMA:
    """Exponential moving average of the encoder's weights (our reading of AVGSimCLR)."""

    def __init__(self, encoder: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(encoder)
        self.module.load_state_dict(encoder.state_dict())
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, encoder: nn.Module) -> None:
        ema_p = list(self.module.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in encoder.parameters()], 1.0 - self.decay)
        for b_ema, b in zip(self.module.buffers(), encoder.buffers()):
            b_ema.copy_(b)


def plan_steps(cfg: PretrainConfig, steps_per_epoch: int) -> int:
    """Total optimizer steps before any time budget shortens them."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, cfg.epochs) * steps_per_epoch


# ---------------------------------------------------------------------- the run
def pretrain(cfg: PretrainConfig, run_dir: Path, resume: bool = False, argv: list[str] | None = None) -> int:
    """Train, writing ``run_dir`` on rank 0. Returns the process exit code (0 ok/stopped, 1 failed).

    SIGINT/SIGTERM stop it after the current step, with a checkpoint; a step stuck past the
    grace period, or a second signal, ends the process (``core.training.stopping``).
    """
    with StopGuard() as stop:
        return _pretrain(cfg, Path(run_dir), resume, argv, stop)


def _pretrain(cfg: PretrainConfig, run_dir: Path, resume: bool, argv: list[str] | None, stop: StopGuard) -> int:
    device = pick_device(cfg)
    if device.type == "cpu":
        keep_freed_memory()
    rank, world = dist.get_rank(), dist.get_world_size()
    if cfg.batch_size % world:
        raise DataError(f"--batch-size {cfg.batch_size} must be divisible by the {world} processes")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    pipe = train_pipeline(cfg, device, rank, world)
    if len(pipe) == 0:
        n = len(pipe.images) if hasattr(pipe, "images") else len(pipe.dataset)
        raise DataError(f"--batch-size {cfg.batch_size} is larger than the {n} training images; lower it or add images")
    knn_data = None
    if cfg.knn_every and not (is_labelled(cfg.dataset, cfg.data_dir) and has_test_split(cfg.dataset, cfg.data_dir)):
        # unlabelled images pretrain; the monitor needs train/<class>/ and test/<class>/ (said once)
        print(f"kNN monitor off: {cfg.data_dir} has no labelled train/<class>/ and test/<class>/ images "
              f"(pretraining needs no labels; evaluate on labelled data with `simclr linear-eval --data-dir ...`)",
              flush=True)
        cfg = cfg.replace(knn_every=0)
    if cfg.knn_every:
        knn_data = (labelled_split(cfg, "train", KNN_BANK_IMAGES, cfg.seed),
                    labelled_split(cfg, "test", KNN_QUERY_IMAGES, cfg.seed))

    model = build_training_model(cfg, device)
    optimizer = make_optimizer(cfg, model)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda")
    ema = EMA(model.encoder, cfg.ema) if cfg.ema else None
    prog = Progress(total_steps=plan_steps(cfg, len(pipe)))

    # read the checkpoint before writing anything: a bad one must leave the run as it was
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location=device,
                           hint=resume_hint(run_dir)) if resume else None
    log = RunLog(run_dir, cfg, enabled=dist.is_main(), argv=argv)
    if ckpt is not None:
        model.load_state_dict(clean_state_dict(ckpt["model"]))
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.module.load_state_dict(ckpt["ema"])
        prog = Progress(**ckpt["progress"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        pipe.set_rng_state(ckpt["rng"]["pipeline"][rank] if rank < len(ckpt["rng"]["pipeline"]) else ckpt["rng"]["pipeline"][0])
        log.resumed(prog.step)
    saved = {"step": prog.step, "epoch": prog.epoch} if ckpt is not None else {}  # what last.pt holds
    stop.on_give_up = lambda why: log.abandoned(why, saved or None)

    model = wrap_model(cfg, model, device)

    def checkpoint(name: str = "last") -> None:
        rng = {"torch": torch.get_rng_state(), "pipeline": gather_rng(pipe.rng_state())}
        if dist.is_main():
            save_checkpoint({
                "model": clean_state_dict(unwrap(model).state_dict()), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "ema": ema.module.state_dict() if ema else None,
                "progress": vars(prog), "rng": rng, "config": cfg.to_dict()}, run_dir / "checkpoints" / f"{name}.pt")
            if name == "last":
                saved.update(step=prog.step, epoch=prog.epoch)

    def monitor() -> None:
        if knn_data is None:
            return
        enc = ema.module if ema is not None else unwrap(model).encoder
        bank, query = knn_data
        fb, lb = encode(enc, bank, cfg, device)
        fq, lq = encode(enc, query, cfg, device)
        acc = knn_accuracy(fb, lb, fq, lq, num_classes=int(lb.max().item()) + 1, k=cfg.knn_k)
        epoch = prog.step / len(pipe)  # fractional when a run ends mid-epoch, as every other record
        log.metric("knn/top1", acc, prog.step, epoch)
        log.say(f"epoch {epoch:.2f} (step {prog.step}): kNN top-1 {acc:.4f}")

    try:
        state = train(cfg, model, optimizer, scaler, ema, pipe, prog, log, stop, device, checkpoint, monitor)
    except Exception as e:  # noqa: BLE001 - any failure is recorded, then reported in one line
        traceback.print_exc()
        log.fail(one_line(e))
        print(f"simclr: failed: {one_line(e)}", file=sys.stderr, flush=True)
        return 1
    log.finish(state, prog)
    return 0


def gather_rng(state: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's pipeline RNG state (rank order), so each rank resumes its own stream."""
    if not dist.is_dist():
        return [state.cpu()]
    out = [None] * dist.get_world_size()
    torch.distributed.all_gather_object(out, state.cpu())
    return out  # type: ignore[return-value]


def train(cfg, model, optimizer, scaler, ema, pipe, prog: Progress, log: RunLog, stop, device,
          checkpoint, monitor) -> str:
    """The loop: two views -> encoder -> projection -> NT-Xent -> optimizer. Returns the end state."""
    criterion = NTXentLoss(cfg.temperature)
    spe = len(pipe)  # steps per epoch
    peak_lr = scale_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling)
    amp = amp_dtype(cfg, device)
    clock = Clock(prog)
    fmt = layout.memory_format(unwrap(model), device)  # the input's layout is the model's
    saved = prog.step or None  # step of checkpoints/last.pt: a resumed run starts from it
    rated = prog.step  # the step train/images_per_sec was last logged at

    def throughput(window: int) -> None:
        nonlocal rated
        log.throughput(prog, spe, clock.images_per_sec(cfg.batch_size, window=window))
        rated = prog.step
    log.running(prog, spe)
    while prog.step < prog.total_steps and not stop.agreed:
        for v1, v2 in pipe.epoch(prog.epoch, start=prog.step - prog.epoch * spe):
            warmup = min(round(cfg.warmup_epochs * spe), prog.total_steps)
            lr = warmup_cosine(prog.step, prog.total_steps, warmup, peak_lr)
            set_lr(optimizer, lr)
            # interleave the views so any split of the batch (DataParallel) keeps pairs together
            x = torch.stack((v1, v2), 1).flatten(0, 1).contiguous(memory_format=fmt)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                _, z = model(x)
            z = z.unflatten(0, (-1, 2))
            loss = criterion(z[:, 0], z[:, 1])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            # the one host sync per step: the loss is logged every step and checked for NaN
            value = loss.item()
            if math.isfinite(value):
                scaler.step(optimizer)
                scaler.update()
                if ema is not None:
                    ema.update(unwrap(model).encoder)
            elif cfg.nan_policy == "skip":
                log.say(f"step {prog.step}: loss is {value}, step skipped (--nan-policy skip)")
            else:
                raise TrainingError(diverged(value, prog.step, saved))
            prog.step += 1
            clock.step()
            stop.beat()
            log.step(prog, spe, value, lr)
            if prog.step % 20 == 0:
                throughput(20)
            if cfg.time_budget:
                fit_to_budget(cfg, prog, clock, spe)
            if stop_agreed(stop) or prog.step >= prog.total_steps:
                break
        if prog.step == (prog.epoch + 1) * spe:  # a whole epoch is done
            prog.epoch += 1
            throughput(spe)
            with clock.overhead():
                if cfg.knn_every and (prog.epoch % cfg.knn_every == 0 or prog.step >= prog.total_steps):
                    monitor()
                checkpoint()
                saved = prog.step
                if cfg.checkpoint_every and prog.epoch % cfg.checkpoint_every == 0:
                    checkpoint(f"epoch_{prog.epoch:04d}")
            log.epoch_end(prog, spe)
            stop.beat()
    if prog.step > rated and clock.step_seconds:  # a short run or a partial epoch: its steps since the last rate
        throughput(min(prog.step - rated, len(clock.step_seconds)))
    if stop.agreed:
        checkpoint()
        return "stopped"
    if prog.step != prog.epoch * spe:  # ended mid-epoch (--max-steps or --time-budget)
        monitor()
        checkpoint()
    return "finished"


def diverged(value: float, step: int, saved: int | None) -> str:
    """The error of a non-finite loss: where it happened, which checkpoint is good, what to do."""
    good = f"checkpoints/last.pt (step {saved}) is from before it" if saved is not None else \
        "no checkpoint was written before it"
    return f"loss became {value} at step {step}; {good}: lower --lr or raise --temperature and start again"


class Clock:
    """Wall time of training, split into optimizer steps and per-epoch overhead (monitor, saving)."""

    def __init__(self, prog: Progress) -> None:
        self.prog = prog
        self.last = time.perf_counter()
        self.step_seconds: list[float] = []
        self.overhead_seconds: list[float] = []

    def step(self) -> None:
        now = time.perf_counter()
        self.step_seconds.append(now - self.last)
        self.prog.train_seconds += now - self.last
        self.last = now

    def images_per_sec(self, batch_size: int, window: int = 20) -> float:
        recent = self.step_seconds[-window:]
        return len(recent) * batch_size / max(sum(recent), 1e-9)

    def overhead(self):
        clock = self

        class _Block:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                now = time.perf_counter()
                clock.overhead_seconds.append(now - self.t0)
                clock.prog.train_seconds += now - clock.last
                clock.last = now
        return _Block()


def fit_to_budget(cfg: PretrainConfig, prog: Progress, clock: Clock, spe: int) -> None:
    """Fit the schedule into --time-budget minutes, then stop at the deadline regardless.

    The step count is fitted after 10 timed steps and refitted once when the first epoch
    has ended (its monitor and checkpoint cost known); after that the learning-rate curve
    is fixed. A budget already spent ends training at this step.
    """
    budget = cfg.time_budget * 60
    if prog.train_seconds >= budget:
        prog.total_steps = prog.step
        return
    timed = clock.step_seconds[2:]  # the first steps pay one-off start-up costs
    if prog.budget_fixed or len(timed) < 10:
        return
    per_step = sorted(timed)[len(timed) // 2]  # the median resists hiccups
    per_step += (sum(clock.overhead_seconds) / len(clock.overhead_seconds) / spe) if clock.overhead_seconds else 0.0
    fit = prog.step + int((budget - prog.train_seconds) * 0.97 / per_step)
    prog.total_steps = max(prog.step + 1, min(plan_steps(cfg, spe), fit))
    prog.budget_fixed = bool(clock.overhead_seconds) or prog.total_steps <= spe


def stop_agreed(stop: StopGuard) -> bool:
    """A stop asked of any rank stops every rank at the same step (``stop.agreed``).

    A request that arrives during the all-reduce is kept for the next step's.
    """
    if not dist.is_dist():
        stop.agreed = stop.requested
        return stop.agreed
    flag = torch.tensor([1.0 if stop.requested else 0.0],
                        device="cuda" if torch.distributed.get_backend() == "nccl" else "cpu")
    torch.distributed.all_reduce(flag)
    stop.agreed = bool(flag.item())
    return stop.agreed


def resume_hint(run_dir: Path) -> str:
    """What to do when a run's last.pt cannot be read: an epoch checkpoint, or a new run."""
    saved = epoch_checkpoints(run_dir)
    if saved:
        return f"to resume from an earlier save, copy {saved[-1]} over last.pt; or start a new run"
    return "start a new run with another --run-dir (no earlier epoch_NNNN.pt to fall back on)"

