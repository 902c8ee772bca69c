"""A stand-in for `python -m core` that writes the run-directory contract without torch.

Used by the fast UI tests: `python fake_runner.py pretrain --run-dir DIR [--preset P]
[--config FILE] [--flag value ...]` (the queue worker starts a queued run with `--config
DIR/config.json`), `pretrain --resume DIR`, and `linear-eval|finetune|knn --run-dir DIR
[--checkpoint C] [--label-fraction F]`; `views`, `neighbours` and `embed` are
fake_pictures.py's. It writes config.json, status.json (heartbeat),
metrics.jsonl, stdout.log lines and checkpoints/last.pt, and on SIGTERM checkpoints and
writes `stopped`. Speed: FAKE_STEP_SECONDS (default 0.02 s per step),
FAKE_STEPS_PER_EPOCH (default 5).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.config import ConfigError, PretrainConfig, preset  # noqa: E402
from core.runs import (  # noqa: E402
    MetricsWriter,
    StatusFile,
    atomic_write_json,
    truncate_metrics_after,
)

STEP_SECONDS = float(os.environ.get("FAKE_STEP_SECONDS", "0.02"))
STEPS_PER_EPOCH = int(os.environ.get("FAKE_STEPS_PER_EPOCH", "5"))
stop_requested = False


def on_term(signum, frame):  # noqa: ARG001
    global stop_requested
    stop_requested = True


def parse_flags(argv: list[str]) -> dict[str, str]:
    out, i = {}, 0
    while i < len(argv):
        if not argv[i].startswith("--") or i + 1 >= len(argv):
            raise ConfigError(f"unexpected argument {argv[i]!r}")
        out[argv[i][2:]] = argv[i + 1]
        i += 2
    return out


def pretrain(flags: dict[str, str]) -> int:
    if "resume" in flags:
        run_dir = Path(flags["resume"])
        cfg = PretrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        ckpt = json.loads((run_dir / "checkpoints" / "last.pt").read_text())
        step, epoch = ckpt["step"], ckpt["epoch"]
        truncate_metrics_after(run_dir / "metrics.jsonl", step)
        print(f"resuming from step {step}", flush=True)
    else:
        run_dir = Path(flags.pop("run-dir"))
        values = preset(flags.pop("preset")) if "preset" in flags else {}
        if "config" in flags:
            values.update(json.loads(Path(flags.pop("config")).read_text()))
        values.update({k.replace("-", "_"): v for k, v in flags.items()})
        try:
            cfg = PretrainConfig.from_dict(values).validate()
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
        step, epoch = 0, 0
    total_steps = cfg.epochs * STEPS_PER_EPOCH
    status = StatusFile(run_dir / "status.json", "pretrain", total_epochs=cfg.epochs, total_steps=total_steps,
                        epoch=epoch, step=step)
    status.update(state="running")
    metrics = MetricsWriter(run_dir / "metrics.jsonl")
    (run_dir / "checkpoints").mkdir(exist_ok=True)

    def checkpoint() -> None:
        atomic_write_json(run_dir / "checkpoints" / "last.pt", {"step": step, "epoch": epoch})

    while epoch < cfg.epochs:
        for _ in range(STEPS_PER_EPOCH):
            if stop_requested:
                checkpoint()
                metrics.flush()
                status.update(state="stopped", epoch=epoch, step=step)
                print("stopped", flush=True)
                return 0
            time.sleep(STEP_SECONDS)
            step += 1
            metrics.log("train/loss", 6.0 * math.exp(-step / 40) + 0.1 * math.sin(step), step, epoch + 0.5)
            metrics.log("train/lr", cfg.lr * min(1.0, step / 5), step, epoch + 0.5)
            status.update(force=False, step=step, images_per_sec=1000.0)
        epoch += 1
        if cfg.knn_every and epoch % cfg.knn_every == 0:
            metrics.log("knn/top1", 0.2 + 0.6 * (1 - math.exp(-step / 30)), step, epoch)
        checkpoint()
        if cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0:
            atomic_write_json(run_dir / "checkpoints" / f"epoch_{epoch:04d}.pt", {"step": step, "epoch": epoch})
        metrics.flush()
        status.update(epoch=epoch, step=step)
        print(f"epoch {epoch}/{cfg.epochs} step {step} loss {6.0 * math.exp(-step / 40):.3f}", flush=True)
    status.update(state="finished")
    print("finished", flush=True)
    return 0


def evaluate(kind: str, flags: dict[str, str]) -> int:
    run_dir = Path(flags["run-dir"])
    ckpt = flags.get("checkpoint", "last")
    if not (run_dir / "checkpoints" / f"{ckpt}.pt").exists():
        print(f"error: no checkpoint {ckpt}", file=sys.stderr)
        return 2
    short = {"linear-eval": "linear", "finetune": "finetune", "knn": "knn"}[kind]
    job = f"finetune-{float(flags['label-fraction'])!r}-{ckpt}" if short == "finetune" else f"{short}-{ckpt}"
    folder = run_dir / "eval" / job
    folder.mkdir(parents=True, exist_ok=True)
    epochs = 1 if short == "knn" else 3
    status = StatusFile(folder / "status.json", kind, parent=run_dir.name, checkpoint=ckpt, total_epochs=epochs)
    status.update(state="running")
    metrics = MetricsWriter(run_dir / "metrics.jsonl", extra={"job": job, "started": round(time.time(), 3)})
    acc = 0.0
    for e in range(1, epochs + 1):
        if stop_requested:
            status.update(state="stopped")
            return 0
        time.sleep(STEP_SECONDS * 5)
        acc = 0.5 + 0.1 * e
        if short == "knn":
            metrics.log("knn/top1", acc, e, e)
        else:
            metrics.log(f"{short}/train_loss", 2.0 / e, e, e)
            metrics.log(f"{short}/test_top1", acc, e, e)
        metrics.flush()
        status.update(epoch=e)
        print(f"{short} epoch {e} top1 {acc:.3f}", flush=True)
    key = "top1" if short == "knn" else "test_top1"
    atomic_write_json(run_dir / "eval" / f"{job}.json", {key: acc, "checkpoint": ckpt})
    status.update(state="finished")
    return 0


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, on_term)
    if not argv:
        print(__doc__)
        return 2
    if argv[0] in ("views", "neighbours", "embed"):
        import fake_pictures  # noqa: PLC0415 (tests/tui, next to this file)

        return fake_pictures.main(argv)
    cmd, flags = argv[0], parse_flags(argv[1:])
    if cmd == "pretrain":
        return pretrain(flags)
    if cmd in ("linear-eval", "finetune", "knn"):
        return evaluate(cmd, flags)
    print(f"unknown command {cmd}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
