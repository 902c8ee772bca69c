"""Everything a run writes about itself: config.json, meta.json, and through its
``JobLog`` (core.training.joblog) status.json, metrics.jsonl, TensorBoard and stdout.

One object so the training loop reads as training; on ranks other than 0 it is silent.
See docs/RUN_DIRECTORY.md for the files.
"""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import PretrainConfig
from core.runs import atomic_write_json, truncate_metrics_after
from core.training import tbmeta
from core.training.joblog import JobLog

if TYPE_CHECKING:
    from core.training.session import Saved


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def versions() -> dict[str, str]:
    import torch
    import torchvision
    try:
        from importlib.metadata import version
        ours = version("simclr-tui")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        ours = "dev"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "simclr-tui": ours}


def write_meta(path: Path, argv: list[str] | None, precision: dict[str, str] | None = None) -> None:
    """meta.json: versions, device, host, commit and command line of this launch, and the
    precision it computes in (``{"used", "why"}``, core.training.precision); a resume keeps the
    earlier launches under ``previous``."""
    import torch

    from core.simclr import dist
    device = ("cuda:" + torch.cuda.get_device_name()) if torch.cuda.is_available() else "cpu"
    meta = {"versions": versions(), "device": device, "host": socket.gethostname(),
            "git_commit": git_commit(), "argv": argv or sys.argv, "world_size": dist.get_world_size(),
            "cpu_threads": torch.get_num_threads(), "started": time.time()}
    if precision is not None:
        meta["precision"] = precision
    if path.exists():  # a resume: keep the history of launches
        old = json.loads(path.read_text() or "{}")
        meta["previous"] = old.get("previous", []) + [{k: old.get(k) for k in ("argv", "started", "host")}]
    atomic_write_json(path, meta)


class RunLog(JobLog):
    """A pretraining run's job log (rank 0 only), with config.json, meta.json and the loop's
    progress: steps, throughput, epochs, resume."""

    def __init__(self, run_dir: Path, cfg: PretrainConfig, enabled: bool = True,
                 argv: list[str] | None = None, kind: str = "pretrain") -> None:
        self.run_dir, self.cfg = Path(run_dir), cfg
        self.t0 = time.time()
        self._last_print = 0.0
        self._loss_ema: float | None = None
        precision = device = None
        if enabled:
            from core.training.device import pick_device, precision_choice
            device = pick_device(cfg)
            precision = precision_choice(cfg, device)  # what the loop's amp_dtype will use
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.run_dir / "config.json", cfg.to_dict())
            write_meta(self.run_dir / "meta.json", argv, precision.as_dict())
        super().__init__(self.run_dir, kind, self.run_dir / "metrics.jsonl", enabled=enabled,
                         total_epochs=cfg.epochs, dataset=cfg.dataset, backbone=cfg.backbone)
        if precision is not None:
            self.say(f"precision: {precision.used} ({precision.why})")
        if device is not None:  # the data and the model are in memory by now: what is free is the steps'
            from core.simclr.dist import get_world_size
            from core.training.memory import start_line
            if line := start_line(cfg, str(device), get_world_size()):  # never fails the run
                self.say(line)
        self.tell_tensorboard()

    def tell_tensorboard(self, quiet: bool = False) -> None:
        """(Re)write the run's HParams row and Text tab from its files (``core.training.tbmeta``), at
        its start and end. A disk that refuses is said (with ``quiet``, from the stop watcher's
        thread, not even that), never fatal to the run."""
        if not self.enabled:
            return
        try:
            tbmeta.write(self.run_dir)
        except Exception as e:  # noqa: BLE001 - TensorBoard's side file never fails a run
            if not quiet:
                self.say(f"could not write TensorBoard's hparams ({tbmeta.HPARAMS_FILE}): {e}")

    # ------------------------------------------------------------------ events
    def resumed(self, step: int) -> None:
        if self.enabled:
            truncate_metrics_after(self.metrics_path, step)
            self.say(f"resumed from checkpoints/last.pt at step {step}")

    def running(self, prog, steps_per_epoch: int) -> None:
        if not self.enabled:
            return
        self.open()
        self.update(state="running", step=prog.step, epoch=prog.epoch,
                    total_steps=prog.total_steps, total_epochs=-(-prog.total_steps // steps_per_epoch))
        self.say(f"training {self.cfg.backbone} (width {self.cfg.width}) on {self.cfg.dataset}: "
                 f"{prog.total_steps} steps of batch {self.cfg.batch_size}, {steps_per_epoch} steps per epoch")

    def step(self, prog, steps_per_epoch: int, loss: float, lr: float) -> None:
        if not self.enabled:
            return
        epoch = prog.step / steps_per_epoch
        self.metric("train/loss", loss, prog.step, epoch)
        self.metric("train/lr", lr, prog.step, epoch)
        self._loss_ema = loss if self._loss_ema is None else 0.9 * self._loss_ema + 0.1 * loss
        self.update(force=False, step=prog.step, epoch=prog.epoch, total_steps=prog.total_steps,
                    total_epochs=-(-prog.total_steps // steps_per_epoch))
        now = time.time()
        if now - self._last_print >= 30:
            self._last_print = now
            self.say(f"step {prog.step}/{prog.total_steps} epoch {epoch:.2f} loss {self._loss_ema:.4f} lr {lr:.4g}")

    def throughput(self, prog, steps_per_epoch: int, images_per_sec: float) -> None:
        if self.enabled:
            self.metric("train/images_per_sec", images_per_sec, prog.step, prog.step / steps_per_epoch)
            self.update(force=False, images_per_sec=round(images_per_sec, 1))

    def epoch_end(self, prog, steps_per_epoch: int) -> None:
        if not self.enabled:
            return
        elapsed = time.time() - self.t0
        self.update(step=prog.step, epoch=prog.epoch, total_steps=prog.total_steps,
                    total_epochs=-(-prog.total_steps // steps_per_epoch))
        self.flush()
        self.say(f"epoch {prog.epoch} done: step {prog.step}/{prog.total_steps}, loss {self._loss_ema:.4f}, "
                 f"{elapsed / 60:.1f} min elapsed")

    def finish(self, state: str, prog, steps_per_epoch: int | None = None) -> None:
        """The run's last word. One that ended inside an epoch (``--max-steps``, a time budget,
        a stop) says how far into it: ``epoch`` 0.25 of 1, not 0 of 1."""
        epoch = prog.epoch
        if steps_per_epoch and prog.step != prog.epoch * steps_per_epoch:
            epoch = round(prog.step / steps_per_epoch, 3)
        self.end(state, f"{state} at step {prog.step}", step=prog.step, epoch=epoch, total_steps=prog.total_steps)
        self.tell_tensorboard()

    def fail(self, error: str) -> None:
        super().fail(error)
        self.tell_tensorboard()

    def abandoned(self, why: str, saved: Saved | None) -> str | None:
        """The process is ending without finishing its step (core.training.stopping): ``stopped`` at
        the step checkpoints/last.pt holds, with a note (:meth:`JobLog.abandon`), and TensorBoard told."""
        if saved is None:
            note = self.abandon(f"{why}; no checkpoint had been written yet: start the run again", step=0, epoch=0)
        else:
            note = self.abandon(f"{why}; stopped at the last checkpoint, step {saved.step}: "
                                "--resume continues from there", step=saved.step, epoch=saved.epoch)
        self.tell_tensorboard(quiet=True)
        return note
