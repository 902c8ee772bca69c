"""Everything a run writes about itself: status.json, metrics.jsonl, TensorBoard, stdout.

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
from core.runs import MetricsWriter, StatusFile, atomic_write_json, truncate_metrics_after

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


class RunLog:
    """Writes the run directory (rank 0 only)."""

    def __init__(self, run_dir: Path, cfg: PretrainConfig, enabled: bool = True,
                 argv: list[str] | None = None, kind: str = "pretrain") -> None:
        self.run_dir, self.cfg, self.enabled = Path(run_dir), cfg, enabled
        self.t0 = time.time()
        self._last_print = 0.0
        self._loss_ema: float | None = None
        if not enabled:
            return
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run_dir / "config.json", cfg.to_dict())
        import torch

        from core.simclr import dist
        device = ("cuda:" + torch.cuda.get_device_name()) if torch.cuda.is_available() else "cpu"
        meta = {"versions": versions(), "device": device, "host": socket.gethostname(),
                "git_commit": git_commit(), "argv": argv or sys.argv, "world_size": dist.get_world_size(),
                "cpu_threads": torch.get_num_threads(), "started": time.time()}
        meta_path = self.run_dir / "meta.json"
        if meta_path.exists():  # a resume: keep the history of launches
            old = json.loads(meta_path.read_text() or "{}")
            meta["previous"] = old.get("previous", []) + [{k: old.get(k) for k in ("argv", "started", "host")}]
        atomic_write_json(meta_path, meta)
        self.status = StatusFile(self.run_dir / "status.json", kind=kind,
                                 total_epochs=cfg.epochs, dataset=cfg.dataset, backbone=cfg.backbone)
        self.status.update()
        self.metrics: MetricsWriter | None = None
        self.tb = None

    def _open(self) -> None:
        if self.metrics is None:
            self.metrics = MetricsWriter(self.run_dir / "metrics.jsonl")
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(self.run_dir))

    # ------------------------------------------------------------------ events
    def resumed(self, step: int) -> None:
        if self.enabled:
            truncate_metrics_after(self.run_dir / "metrics.jsonl", step)
            self.say(f"resumed from checkpoints/last.pt at step {step}")

    def running(self, prog, steps_per_epoch: int) -> None:
        if not self.enabled:
            return
        self._open()
        self.status.update(state="running", step=prog.step, epoch=prog.epoch,
                           total_steps=prog.total_steps, total_epochs=-(-prog.total_steps // steps_per_epoch))
        self.say(f"training {self.cfg.backbone} (width {self.cfg.width}) on {self.cfg.dataset}: "
                 f"{prog.total_steps} steps of batch {self.cfg.batch_size}, {steps_per_epoch} steps per epoch")

    def metric(self, tag: str, value: float, step: int, epoch: float) -> None:
        if not self.enabled:
            return
        self._open()
        self.metrics.log(tag, value, step, epoch)
        self.tb.add_scalar(tag, value, step)

    def step(self, prog, steps_per_epoch: int, loss: float, lr: float) -> None:
        if not self.enabled:
            return
        epoch = prog.step / steps_per_epoch
        self.metric("train/loss", loss, prog.step, epoch)
        self.metric("train/lr", lr, prog.step, epoch)
        self._loss_ema = loss if self._loss_ema is None else 0.9 * self._loss_ema + 0.1 * loss
        self.status.update(force=False, step=prog.step, epoch=prog.epoch, total_steps=prog.total_steps,
                           total_epochs=-(-prog.total_steps // steps_per_epoch))
        now = time.time()
        if now - self._last_print >= 30:
            self._last_print = now
            self.say(f"step {prog.step}/{prog.total_steps} epoch {epoch:.2f} loss {self._loss_ema:.4f} lr {lr:.4g}")

    def throughput(self, prog, steps_per_epoch: int, images_per_sec: float) -> None:
        if self.enabled:
            self.metric("train/images_per_sec", images_per_sec, prog.step, prog.step / steps_per_epoch)
            self.status.update(force=False, images_per_sec=round(images_per_sec, 1))

    def epoch_end(self, prog, steps_per_epoch: int) -> None:
        if not self.enabled:
            return
        elapsed = time.time() - self.t0
        self.status.update(step=prog.step, epoch=prog.epoch, total_steps=prog.total_steps,
                           total_epochs=-(-prog.total_steps // steps_per_epoch))
        self.metrics.flush()
        self.tb.flush()
        self.say(f"epoch {prog.epoch} done: step {prog.step}/{prog.total_steps}, loss {self._loss_ema:.4f}, "
                 f"{elapsed / 60:.1f} min elapsed")

    def say(self, text: str) -> None:
        if self.enabled:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def finish(self, state: str, prog) -> None:
        if not self.enabled:
            return
        self.status.update(state=state, step=prog.step, epoch=prog.epoch, total_steps=prog.total_steps)
        self.say(f"{state} at step {prog.step}")
        self.close()

    def abandoned(self, why: str, saved: Saved | None) -> str | None:
        """The process is ending without finishing its step (core.training.stopping): ``stopped`` at
        the step checkpoints/last.pt holds, with a note. Called from the stop watcher while
        the main thread is stuck, so it prints nothing (the main thread may hold stdout's
        lock) and returns the note instead."""
        if not self.enabled:
            return None
        if saved is not None:
            note = f"{why}; stopped at the last checkpoint, step {saved.step}: --resume continues from there"
        else:
            note = f"{why}; no checkpoint had been written yet: start the run again"
        step, epoch = (saved.step, saved.epoch) if saved is not None else (0, 0)
        self.status.final(state="stopped", step=step, epoch=epoch, note=note)
        return note

    def fail(self, error: str) -> None:
        if not self.enabled:
            return
        try:
            self.status.update(state="failed", error=error)
        except OSError as e:  # e.g. the disk is still full: say so, readers will see it crashed
            self.say(f"could not record the failure in status.json: {e}")
        self.say(f"failed: {error}")
        try:
            self.close()
        except OSError as e:  # a full disk: the line that could not be written is lost, the rest is there
            self.say(f"could not close metrics.jsonl: {e}")

    def close(self) -> None:
        if getattr(self, "metrics", None) is not None:
            metrics, self.metrics = self.metrics, None
            try:
                metrics.close()  # flushes: raises if the disk is full
            finally:
                self.tb.close()

