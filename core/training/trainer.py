"""SimCLR pretraining: `pretrain` sets a run up (``core.training.setup``) and trains it with
one loop you can read in one screen (`train`).

Runs unchanged on CPU, one CUDA device, DataParallel and DDP (torchrun). Only rank 0
writes the run directory. SIGINT/SIGTERM finish the current step, checkpoint and stop.
"""

from __future__ import annotations

import math
import sys
import traceback
from pathlib import Path

import torch

from core.config import PretrainConfig
from core.errors import ConfigError, one_line
from core.simclr import dist, layout
from core.simclr.loss import NTXentLoss
from core.simclr.models import unwrap
from core.simclr.schedule import scale_lr, set_lr, warmup_cosine
from core.training.budget import Clock, fit_to_budget
from core.training.device import amp_dtype
from core.training.gradcache import cached_step
from core.training.health import Health
from core.training.resume import save
from core.training.session import Saved, Session
from core.training.setup import open_session
from core.training.stopping import StopGuard


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, ...); the message says what to do."""


def pretrain(cfg: PretrainConfig, run_dir: Path, resume: bool = False, argv: list[str] | None = None) -> int:
    """Train, writing ``run_dir`` on rank 0. Returns the process exit code (0 ok/stopped, 1 failed).

    SIGINT/SIGTERM stop it after the current step, with a checkpoint; a step stuck past the
    grace period, or a second signal, ends the process (``core.training.stopping``).
    """
    with StopGuard() as stop:
        s = open_session(cfg, Path(run_dir), stop, resume, argv)
        try:
            state = train(s, stop)
        except Exception as e:  # noqa: BLE001 - any failure is recorded, then reported in one line
            traceback.print_exc()
            s.log.fail(one_line(e))
            print(f"simclr: failed: {one_line(e)}", file=sys.stderr, flush=True)
            return 1
        finally:
            s.pipe.close()  # the data workers end with the training, not at the interpreter's exit
        s.log.finish(state, s.progress, s.steps_per_epoch)
        return 0


def train(s: Session, stop: StopGuard) -> str:
    """The loop: two views -> encoder -> projection -> NT-Xent -> optimizer. Returns the end state."""
    cfg, prog, log, model, optimizer = s.cfg, s.progress, s.log, s.model, s.optimizer
    criterion = NTXentLoss(cfg.temperature)
    spe = s.steps_per_epoch
    peak_lr = scale_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling)
    amp = amp_dtype(cfg, s.device)
    clock = Clock(prog)
    fmt = layout.memory_format(unwrap(model), s.device)  # the input's layout is the model's
    rated = prog.step  # the step train/images_per_sec was last logged at
    if cfg.micro_batch and cfg.batch_size // dist.get_world_size() % cfg.micro_batch:
        raise ConfigError(f"--micro-batch {cfg.micro_batch} must divide each process's batch "
                          f"({cfg.batch_size // dist.get_world_size()} pairs of {cfg.batch_size} over {dist.get_world_size()})")

    def throughput(window: int) -> None:
        nonlocal rated
        log.throughput(prog, spe, clock.images_per_sec(cfg.batch_size, window=window))
        rated = prog.step
    health = Health(s)  # health/* each epoch and the run's verdict (core.training.health)
    log.running(prog, spe)
    if s.pruner is not None and dist.any_rank(dist.is_main() and s.pruner.earlier(prog.epoch) is not None):
        return "pruned"  # a resume after its sweep pruned it, before the run could say so
    while prog.step < prog.total_steps and not stop.agreed:
        for v1, v2 in s.pipe.epoch(prog.epoch, start=prog.step - prog.epoch * spe):
            warmup = min(round(cfg.warmup_epochs * spe), prog.total_steps)
            lr = warmup_cosine(prog.step, prog.total_steps, warmup, peak_lr)
            set_lr(optimizer, lr)
            # interleave the views so any split of the batch (DataParallel) keeps pairs together
            x = torch.stack((v1, v2), 1).flatten(0, 1).contiguous(memory_format=fmt)
            optimizer.zero_grad(set_to_none=True)
            if cfg.micro_batch:  # the same gradient, one chunk of pairs in memory at a time
                loss, z = cached_step(model, criterion, x, cfg.micro_batch, s.scaler, amp)
            else:
                with torch.autocast(s.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    _, z = model(x)
                z = z.unflatten(0, (-1, 2))
                loss = criterion(z[:, 0], z[:, 1])
                s.scaler.scale(loss).backward()
            # the one host sync per step: the loss (logged every step, checked for NaN) and,
            # under torchrun, whether any rank was asked to stop, in the same all-reduce
            value, asked = dist.loss_and_stop(loss, stop.requested)
            if math.isfinite(value):
                s.scaler.step(optimizer)
                s.scaler.update()
                if s.ema is not None:
                    s.ema.update(unwrap(model).encoder)
            elif cfg.nan_policy == "skip":
                log.say(f"step {prog.step}: loss is {value}, step skipped (--nan-policy skip)")
            else:
                health.diverged(value, prog.step)
                raise TrainingError(diverged(value, prog.step, s.saved))
            health.step(z, value, prog.step)
            prog.step += 1
            clock.step()
            stop.beat()
            log.step(prog, spe, value, lr)
            if prog.step % 20 == 0:
                throughput(20)
            if cfg.time_budget:
                fit_to_budget(cfg, prog, clock, spe)
            if stop_agreed(stop, asked) or prog.step >= prog.total_steps:
                break
        if prog.step == (prog.epoch + 1) * spe:  # a whole epoch is done
            prog.epoch += 1
            throughput(spe)
            if health.epoch_end(prog):  # --on-unhealthy stop: the verdict turned bad; stop as a user stop does
                stop.agreed = True
            with clock.overhead():
                # its sweep judges it now (not at its last epoch: --max-steps or a budget may end it there)
                rung = s.pruner is not None and s.pruner.is_rung(prog.epoch) and prog.step < prog.total_steps
                acc = None
                if rung or cfg.knn_every and (prog.epoch % cfg.knn_every == 0 or prog.step >= prog.total_steps):
                    acc = monitor(s)
                pruned = rung and judged(s, acc)
                save(s)
                if cfg.checkpoint_every and prog.epoch % cfg.checkpoint_every == 0:
                    save(s, f"epoch_{prog.epoch:04d}")
            log.epoch_end(prog, spe)
            stop.beat()
            if pruned:
                return "pruned"
    if prog.step > rated and clock.step_seconds:  # a short run or a partial epoch: its steps since the last rate
        throughput(min(prog.step - rated, len(clock.step_seconds)))
    if stop.agreed:
        save(s)
        return "stopped"
    if prog.step != prog.epoch * spe:  # ended mid-epoch (--max-steps or --time-budget)
        monitor(s)
        save(s)
    return "finished"


def monitor(s: Session) -> float | None:
    """The kNN monitor on the encoder (the EMA's when the run keeps one), logged at this step."""
    if s.monitor is None:
        return None
    acc = s.monitor(s.ema.module if s.ema is not None else unwrap(s.model).encoder)
    epoch = s.progress.step / s.steps_per_epoch  # fractional when a run ends mid-epoch, as every other record
    s.log.metric("knn/top1", acc, s.progress.step, epoch)
    s.log.say(f"epoch {epoch:.2f} (step {s.progress.step}): kNN top-1 {acc:.4f}")
    return acc


def judged(s: Session, acc: float | None) -> bool:
    """At a rung: rank 0 asks the run's sweep (core.jobs.prune), and every rank follows."""
    prune = False
    if dist.is_main():
        s.log.flush()
        d = s.pruner.decide(s.progress.epoch, s.pruner.value(s.progress.step, s.steps_per_epoch, acc))
        prune = d.prune
        s.log.say(f"rung {d.rung} (epoch {d.epoch}): {'pruned' if prune else 'goes on'}: {d.reason}")
        if prune:
            s.log.update(note=f"pruned at epoch {d.epoch} by its sweep ({d.rule}): {d.reason}")
    return dist.any_rank(prune)


def diverged(value: float, step: int, saved: Saved | None) -> str:
    """The error of a non-finite loss: where it happened, which checkpoint is good, what to do."""
    good = f"checkpoints/last.pt (step {saved.step}) is from before it" if saved is not None else \
        "no checkpoint was written before it"
    return f"loss became {value} at step {step}; {good}: lower --lr or raise --temperature and start again"


def stop_agreed(stop: StopGuard, asked: bool) -> bool:
    """A stop asked of any rank stops every rank at the same step (``stop.agreed``): ``asked``
    is what the step's all-reduce (``dist.loss_and_stop``) found on any rank.

    A request that arrives after the all-reduce is kept for the next step's.
    """
    stop.agreed = asked
    return stop.agreed

