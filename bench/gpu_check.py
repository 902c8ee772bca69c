"""One call that checks and times the whole GPU path: run it first on any machine with a GPU.

    python3 bench/gpu_check.py --json $OUT/gpu.json     # one CUDA device, inside one 10-minute command
    python3 bench/gpu_check.py --only step,ddp          # some checks (--skip: all but some)
    python3 bench/gpu_check.py --allow-cpu --quick      # the script itself, on a CPU (tests)

No data set is downloaded: every check trains on synthetic CIFAR-shaped data (32 px, ten
classes), or images it writes itself, unless ``--data-dir`` names real ones. Every check runs
in a child process of its own (a sticky CUDA error ends only that check), and its row is saved
before the next starts. Checks (``--list`` prints them, with what each covers):

* ``step <precision> <layout>``: the real training loop (``core.training.trainer.train``) on the
  ``cifar10-resnet18`` recipe, fp32 and bf16 autocast, channels_last and NCHW: ms per step,
  pairs/s, bf16's first loss against fp32's; labelled ``+ tf32`` where torch lets fp32 math
  use TF32 (cudnn's flag is on by default).
* ``host syncs``: a few steps under ``torch.cuda.set_sync_debug_mode("warn")``: the host
  syncs per step it warned about, and where from.
* ``fp16 + GradScaler``, ``recipe epoch`` (one 50,000-image epoch), ``DataParallel``, ``DDP
  (torchrun)``, ``pretrain + kNN monitor``, ``stop + resume``, ``linear-eval``, ``knn``,
  ``finetune``, ``stop + resume --deterministic`` (bit-identical to an uninterrupted run),
  ``large images`` (image size 96: the per-image DataLoader path),
  ``compile`` (``--compile``, CUDA only), ``micro-batch memory`` (peak memory at batch B and
  ``--micro-batch`` B/4, where core.config has it) and ``real data`` (``--data-dir``).

The time budget (``--budget``) is checked before each check starts, and bounds its time; checks
not run are listed as skipped, with why. A failed check keeps its output's last 4 KB in its row,
and its logs (the check's own output, each command's, the runs' stdout.log / status.json) go
into ``failed_logs.tar.gz`` beside the JSON report: two files to bring back. Prints a markdown
table on stdout. Exit code: 0 no check failed or ran out of budget, 1 some did, 2 no CUDA
device (one line) or an unknown check name.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check_lib import (Check, kill_group, last_line, markdown, read_tail, run_all, run_child,  # noqa: E402
                           run_logs, selection, slug, split_names, write_bundle, write_json_atomic)

class Sizes:
    """What the checks train: the real recipe on a GPU, a toy on a CPU (--allow-cpu)."""

    def __init__(self, quick: bool, on_gpu: bool) -> None:
        small = quick or not on_gpu
        self.width, self.image_size = (8, 16) if small else (64, 32)
        self.batch = 32 if small else 512
        self.timed_steps, self.warmup_steps = (2, 1) if small else (20, 5)
        self.epoch_images = 512 if small else 50_000  # CIFAR-10's training set
        self.cli_width = 8 if small else 64
        self.cli_epochs, self.cli_stop_after = (6, 10) if small else (60, 40)


def recipe_config(sizes: Sizes, precision: str, device: str, **changes: Any):
    from core.config import PretrainConfig, preset
    values = {**preset("cifar10-resnet18"), "dataset": "synthetic", "width": sizes.width,
              "image_size": sizes.image_size, "batch_size": sizes.batch, "precision": precision,
              "device": device, "knn_every": 0, **changes}
    return PretrainConfig(**values)


# ---------------------------------------------------------------------- in-process training
@contextlib.contextmanager
def layout_env(channels_last: bool):
    """core.simclr.layout's override, so the trainer builds (and feeds) the model in this layout."""
    old = os.environ.get("SIMCLR_CHANNELS_LAST")
    os.environ["SIMCLR_CHANNELS_LAST"] = "1" if channels_last else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["SIMCLR_CHANNELS_LAST"]
        else:
            os.environ["SIMCLR_CHANNELS_LAST"] = old


def train_steps(cfg, device, steps: int, root: Path, images: int | None = None, data_parallel: bool = False,
                seed: int = 0, sync_debug: bool = False) -> dict[str, Any]:
    """``steps`` steps of ``core.training.trainer.train`` on synthetic data: per-step seconds and losses.

    ``sync_debug``: under ``torch.cuda.set_sync_debug_mode("warn")``, the host syncs it warned
    about, counted per step, and where they came from."""
    import warnings

    import torch

    from core.training import trainer
    from core.training.data import synthetic
    from core.training.model import build_training_model, make_optimizer, wrap_model
    from core.training.pipeline import TensorPipeline, augment_config
    from core.training.runlog import RunLog
    from core.training.session import Progress, Session
    from core.training.stopping import StopGuard

    class TimedLog(RunLog):
        def running(self, prog, spe):
            super().running(prog, spe)
            self.marks, self.losses = [time.perf_counter()], []

        def step(self, prog, spe, loss, lr):
            super().step(prog, spe, loss, lr)
            self.marks.append(time.perf_counter())
            self.losses.append(loss)
            self.syncs.append(len(caught))

        def say(self, text):  # stdout is the report's
            pass

    torch.manual_seed(seed)
    n = images or max(cfg.batch_size * steps, cfg.batch_size * 2)
    pipe = TensorPipeline(synthetic(n, cfg.image_size, seed=seed), augment_config(cfg), cfg.batch_size, cfg.seed,
                          device)
    model = build_training_model(cfg, device)
    optimizer = make_optimizer(cfg, model)
    if data_parallel:
        model = torch.nn.DataParallel(model)
    else:
        model = wrap_model(cfg, model, device)
    # as core.training.setup makes it: on for fp16 on CUDA
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda")
    run_dir = Path(tempfile.mkdtemp(dir=root, prefix="steps-"))
    log = TimedLog(run_dir, cfg, argv=["gpu_check"])
    log.syncs = []
    prog = Progress(total_steps=min(steps, len(pipe)))
    session = Session(cfg, device, pipe, model, optimizer, scaler, None, prog, log)
    caught: list = []
    debug = sync_debug and device.type == "cuda"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        caught = seen
        if debug:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train(session, StopGuard())  # saves nothing
        finally:
            if debug:
                torch.cuda.set_sync_debug_mode(0)
    log.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = [b - a for a, b in zip(log.marks, log.marks[1:])]
    out = {"seconds": seconds, "losses": log.losses, "steps_per_epoch": len(pipe),
           "scale": scaler.get_scale() if scaler.is_enabled() else None}
    if sync_debug:
        syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
        counts = [b - a for a, b in zip([0, *log.syncs], log.syncs)]
        sources: dict[str, int] = {}
        for w in syncs:
            key = f"{Path(w.filename).name}:{w.lineno}"
            sources[key] = sources.get(key, 0) + 1
        out.update(sync_counts=counts, sync_total=len(syncs),
                   sync_sources=dict(sorted(sources.items(), key=lambda kv: -kv[1])[:8]))
    return out


def tf32_label(precision: str, device) -> str:
    """How the timed matrix work ran: fp32 convolutions and matmuls go through TF32 on CUDA
    when torch allows it (cudnn's flag is on by default)."""
    import torch
    if device.type != "cuda":
        return precision
    on = [k for k, v in (("matmul", torch.backends.cuda.matmul.allow_tf32), ("cudnn", torch.backends.cudnn.allow_tf32))
          if v]
    return f"{precision} + tf32 ({', '.join(on)})" if on else precision


def check_step(precision: str, channels_last: bool, sizes: Sizes, device, root: Path,
               earlier: dict[str, Any]) -> dict[str, Any]:
    """The recipe in one precision and layout, same seed, same batches; bf16's first loss
    against fp32's (from the report's earlier row, same layout)."""
    import torch

    from core.training.device import amp_dtype
    with layout_env(channels_last):
        cfg = recipe_config(sizes, precision, device.type)
        out = train_steps(cfg, device, sizes.warmup_steps + sizes.timed_steps, root)
    timed = out["seconds"][sizes.warmup_steps:]
    step_s = statistics.median(timed)
    result = {"autocast": str(amp_dtype(cfg, device)).replace("torch.", ""), "math": tf32_label(precision, device),
              "ms_per_step": round(step_s * 1e3, 2), "pairs_per_s": round(cfg.batch_size / step_s, 1),
              "first_loss": round(out["losses"][0], 5), "last_loss": round(out["losses"][-1], 5),
              "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None}
    if not all(math.isfinite(v) for v in out["losses"]):
        raise AssertionError(f"non-finite loss: {out['losses']}")
    ref = (earlier.get(f"step fp32 {'channels_last' if channels_last else 'NCHW'}") or {}).get("first_loss")
    if precision == "bf16" and ref:
        rel = abs(out["losses"][0] - ref) / abs(ref)
        result["first_loss_vs_fp32"] = round(rel, 5)
        if rel > 0.02:
            raise AssertionError(f"bf16's first loss {out['losses'][0]:.4f} is {rel:.1%} from fp32's {ref:.4f}")
    return result


def check_host_syncs(sizes: Sizes, device, root: Path) -> dict[str, Any]:
    """A few bf16 steps under torch.cuda.set_sync_debug_mode("warn"): the host syncs per step."""
    cfg = recipe_config(sizes, "auto", device.type)
    out = train_steps(cfg, device, sizes.warmup_steps + sizes.timed_steps, root, sync_debug=True)
    steady = out["sync_counts"][1:] or out["sync_counts"]
    return {"syncs_per_step": out["sync_counts"], "median_syncs_per_step": statistics.median(steady) if steady else None,
            "sync_total": out["sync_total"], "sync_sources": out["sync_sources"],
            "mode": "warn" if device.type == "cuda" else "not available on CPU (counts are 0)"}


def check_fp16(sizes: Sizes, device, root: Path) -> dict[str, Any]:
    """fp16 autocast with the GradScaler core.training.setup turns on for it on CUDA."""
    cfg = recipe_config(sizes, "fp16", device.type)
    out = train_steps(cfg, device, sizes.warmup_steps + sizes.timed_steps, root)
    if not all(math.isfinite(v) for v in out["losses"]):
        raise AssertionError(f"non-finite loss: {out['losses']}")
    step_s = statistics.median(out["seconds"][sizes.warmup_steps:])
    return {"grad_scaler": out["scale"] is not None, "final_scale": out["scale"], "math": tf32_label("fp16", device),
            "ms_per_step": round(step_s * 1e3, 2), "first_loss": round(out["losses"][0], 5),
            "last_loss": round(out["losses"][-1], 5)}


def check_compile(sizes: Sizes, device, root: Path) -> dict[str, Any]:
    """--compile: torch.compile around the model in the real loop; the first step pays the compile."""
    cfg = recipe_config(sizes, "auto", device.type, compile=True)
    out = train_steps(cfg, device, sizes.warmup_steps + sizes.timed_steps, root)
    if not all(math.isfinite(v) for v in out["losses"]):
        raise AssertionError(f"non-finite loss: {out['losses']}")
    step_s = statistics.median(out["seconds"][sizes.warmup_steps:])
    return {"first_step_s": round(out["seconds"][0], 1) if out["seconds"] else None,
            "ms_per_step": round(step_s * 1e3, 2), "math": tf32_label("bf16" if device.type == "cuda" else "fp32", device)}


def has_micro_batch() -> bool:
    from dataclasses import fields

    from core.config import PretrainConfig
    return "micro_batch" in {f.name for f in fields(PretrainConfig)}


def check_micro_batch(sizes: Sizes, device, root: Path) -> dict[str, Any]:
    """Peak allocated CUDA memory of a step at batch B, then with --micro-batch B/4."""
    import torch
    micro = max(2, sizes.batch // 4)
    peaks, losses = {}, {}
    estimates = {}
    for label, changes in (("batch", {}), ("micro_batch", {"micro_batch": micro})):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        cfg = recipe_config(sizes, "auto", device.type, **changes)
        out = train_steps(cfg, device, 2, root)
        peaks[label] = round(torch.cuda.max_memory_allocated() / 2**30, 3) if device.type == "cuda" else None
        losses[label] = round(out["losses"][0], 5)
        with contextlib.suppress(ImportError):  # the TUI's estimate (core.training.memory), against the peak
            from core.training.memory import step_memory
            estimates[label] = round(step_memory(cfg).total / 2**30, 3)
    ratio = {k: round(peaks[k] / estimates[k], 2) for k in estimates if peaks[k] and estimates[k]}
    return {"batch": sizes.batch, "micro_batch": micro, "peak_gib_batch": peaks["batch"],
            "peak_gib_micro_batch": peaks["micro_batch"],
            "estimate_gib": estimates or None, "peak_over_estimate": ratio or None,
            "first_loss": losses}


def check_recipe_epoch(sizes: Sizes, device, root: Path) -> dict[str, Any]:
    """One whole epoch of the cifar10-resnet18 recipe as the runner would train it (auto precision)."""
    cfg = recipe_config(sizes, "auto", device.type)
    spe = sizes.epoch_images // cfg.batch_size
    out = train_steps(cfg, device, spe, root, images=sizes.epoch_images)
    assert out["steps_per_epoch"] == spe, out["steps_per_epoch"]
    epoch_s = sum(out["seconds"])
    steady = statistics.median(out["seconds"][min(5, len(out["seconds"]) - 1):])
    return {"seconds_per_epoch": round(epoch_s, 2), "steps": spe,
            "images_per_s": round(2 * cfg.batch_size * spe / epoch_s, 1),
            "steady_images_per_s": round(2 * cfg.batch_size / steady, 1),
            "precision": "bf16 autocast" if device.type == "cuda" else "fp32"}


def check_data_parallel(sizes: Sizes, device, root: Path) -> dict[str, Any]:
    import torch
    n = torch.cuda.device_count() if device.type == "cuda" else 1
    cfg = recipe_config(sizes, "fp32", device.type)
    steps = 3
    wrapped = train_steps(cfg, device, steps, root, data_parallel=True)
    result = {"gpus": n, "note": "one device: DataParallel calls the module directly (no scatter, replicas or gather)"
              if n == 1 else "", "ms_per_step": round(statistics.median(wrapped["seconds"][1:]) * 1e3, 2),
              "losses": [round(v, 5) for v in wrapped["losses"]]}
    if n == 1:  # DataParallel over one device is the model itself: the same numbers
        bare = train_steps(cfg, device, steps, root)
        diff = max(abs(a - b) for a, b in zip(wrapped["losses"], bare["losses"]))
        result["max_loss_diff_vs_bare"] = diff
        if diff > 1e-3:
            raise AssertionError(f"DataParallel over one GPU moved the loss by {diff}")
    else:
        cli(["pretrain", *cli_flags(sizes, device), "--data-parallel", "true", "--max-steps", "10",
                   "--knn-every", "0", "--run-dir", str(root / "dp")], timeout=240, root=root)
        result["cli_pretrain_data_parallel"] = read_status(root / "dp")["state"]
    return result


# ---------------------------------------------------------------------- the command line
DEADLINE = [float("inf")]  # time.time() by which this check's commands must end (the child's --deadline)


class CommandFailed(AssertionError):
    """A command that failed, with its output's last few KB for the report."""

    def __init__(self, message: str, stderr_tail: str) -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail


def time_left(timeout: float) -> float:
    """A command's timeout: its own, cut to what this check has left."""
    return max(5.0, min(timeout, DEADLINE[0] - time.time()))


def runner_env() -> dict[str, str]:
    """This process's environment, with this checkout first on the path of `python -m core`."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def cli(args: list[str], timeout: float, launcher: list[str] | None = None, root: Path | None = None) -> None:
    """The command line in its own session, its output in ``root/cmd/`` (bundled if the check
    fails); on a timeout its whole process group (torchrun's workers too) gets SIGTERM, then
    SIGKILL, so nothing holds the GPU for the next check."""
    cmd = (launcher or [sys.executable]) + ["-m", "core", *args]
    shown = " ".join(cmd[-len(args) - 2:])
    logs = Path(root or tempfile.gettempdir()) / "cmd"
    logs.mkdir(parents=True, exist_ok=True)
    base = logs / f"{len(list(logs.glob('*.stderr'))):02d}-{args[0]}"
    with open(f"{base}.stdout.log", "wb") as out, open(f"{base}.stderr", "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=runner_env(),
                                start_new_session=True)
    try:
        proc.wait(timeout=time_left(timeout))
    except subprocess.TimeoutExpired:
        kill_group(proc, 15)
        raise CommandFailed(f"`{shown}` did not end within its time", read_tail(Path(f"{base}.stderr"))) from None
    if proc.returncode != 0:
        text = read_tail(Path(f"{base}.stderr")) or read_tail(Path(f"{base}.stdout.log"))
        raise CommandFailed(f"`{shown}` exited {proc.returncode}: {last_line(text)}", text)


def cli_flags(sizes: Sizes, device) -> list[str]:
    size = "32" if device.type == "cuda" else "16"
    return ["--preset", "tiny", "--width", str(sizes.cli_width), "--image-size", size,
            "--device", device.type]


def read_status(run: Path) -> dict[str, Any]:
    return json.loads((run / "status.json").read_text())


def metrics(run: Path, tag: str) -> list[dict[str, Any]]:
    from core.runs import read_metrics  # leaves a line still being written for later
    return [r for r in read_metrics(run / "metrics.jsonl")[0] if r["tag"] == tag and "job" not in r]


def check_ddp(sizes: Sizes, device, root: Path) -> dict[str, Any]:
    import torch
    world = torch.cuda.device_count() if device.type == "cuda" else 2
    run = root / "ddp"
    t0 = time.perf_counter()
    cli(["pretrain", *cli_flags(sizes, device), "--batch-size", str(32 * world), "--subset", str(max(256, 64 * world)),
         "--max-steps", "20",
         "--knn-every", "0", "--run-dir", str(run)], timeout=300, root=root,
        launcher=[sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}"])
    meta, status = json.loads((run / "meta.json").read_text()), read_status(run)
    assert meta["world_size"] == world, meta["world_size"]
    assert status["state"] == "finished" and status["step"] == 20, status
    rates = metrics(run, "train/images_per_sec")
    return {"world_size": world, "backend": "nccl" if device.type == "cuda" else "gloo",
            "note": "world size 1: NCCL, DDP's wrapper and its gradient all-reduce run; the embedding gather "
                    "and SyncBatchNorm's exchange are skipped (not covered)" if world == 1 else "",
            "seconds_with_startup": round(time.perf_counter() - t0, 1),
            "images_per_s": round(rates[-1]["value"], 1) if rates else None}


def check_pretrain_monitor(sizes: Sizes, device, root: Path) -> dict[str, Any]:
    run = root / "run"
    t0 = time.perf_counter()
    cli(["pretrain", *cli_flags(sizes, device), "--epochs", "2", "--knn-every", "1", "--run-dir", str(run)],
        timeout=300, root=root)
    knn = metrics(run, "knn/top1")
    assert [r["epoch"] for r in knn] == [1.0, 2.0], knn
    status = read_status(run)
    assert status["state"] == "finished", status
    return {"seconds_with_startup": round(time.perf_counter() - t0, 1), "knn_top1": [round(r["value"], 4) for r in knn],
            "images_per_s": status.get("images_per_sec")}


def check_stop_resume(sizes: Sizes, device, root: Path, deterministic: bool = False) -> dict[str, Any]:
    """SIGTERM mid-run, --resume, and the end compared with an uninterrupted twin's weights:
    bit for bit with --deterministic (asserted), to float tolerance without (reported)."""
    name = "stop-det" if deterministic else "stop"
    run = root / name
    env = runner_env()
    # width 16 and no epoch checkpoints: last.pt is rewritten every epoch, small (this checks
    # stopping and resuming on the device, not the recipe)
    flags = [*cli_flags(sizes, device), "--width", "16", "--epochs", str(sizes.cli_epochs), "--checkpoint-every", "0",
             "--knn-every", "0", *(["--deterministic"] if deterministic else [])]
    cli(["pretrain", *flags, "--run-dir", str(root / f"{name}-twin")], timeout=300, root=root)
    cmd = [sys.executable, "-m", "core", "pretrain", *flags, "--run-dir", str(run)]
    err = root / f"{name}.stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)
    try:
        end = time.time() + time_left(180)
        while time.time() < end and proc.poll() is None:
            if (run / "metrics.jsonl").exists() and len(metrics(run, "train/loss")) >= sizes.cli_stop_after:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before it could be stopped"
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=time_left(120))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if code != 0:
        raise CommandFailed(f"SIGTERM: exit {code}: {last_line(read_tail(err))}", read_tail(err))
    status = read_status(run)
    assert status["state"] == "stopped", status
    import torch
    saved = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert saved["progress"]["step"] == status["step"], (saved["progress"]["step"], status["step"])
    stopped_at = status["step"]
    cli(["pretrain", "--resume", str(run)], timeout=300, root=root)
    status = read_status(run)  # finished: the steps after the stop, then nothing repeated
    steps = [r["step"] for r in metrics(run, "train/loss")]
    assert status["state"] == "finished" and steps == list(range(1, status["total_steps"] + 1)), (status, steps[-5:])
    mine = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]
    twin = torch.load(root / f"{name}-twin" / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]
    diff = max(((mine[k].double() - twin[k].double()).abs().max().item() for k in mine if mine[k].is_floating_point()),
               default=0.0)
    identical = all(torch.equal(mine[k], twin[k]) for k in mine)
    if deterministic:
        assert identical, f"--deterministic: the resumed run's weights differ from the uninterrupted run's by up to {diff:.3g}"
    return {"stopped_at_step": stopped_at, "resumed_to": status["step"], "checkpoint_device": device.type,
            "bit_identical_to_uninterrupted": identical, "max_abs_weight_diff": diff}


def check_eval(kind: str, sizes: Sizes, device, root: Path) -> dict[str, Any]:
    from core.runs import eval_job_name, job_result_path
    run = root / "run"
    args = {"linear-eval": ["linear-eval"], "knn": ["knn"],
            "finetune": ["finetune", "--label-fraction", "0.1", "--epochs", "2"]}[kind]
    t0 = time.perf_counter()
    cli([*args, "--run-dir", str(run), "--device", device.type], timeout=300, root=root)
    job = eval_job_name({"linear-eval": "linear", "knn": "knn", "finetune": "finetune"}[kind], "last",
                        label_fraction=0.1 if kind == "finetune" else None)
    result = json.loads(job_result_path(run / "eval" / job).read_text())
    top1 = result["test_top1"]
    assert 0.0 <= top1 <= 1.0, top1
    return {"test_top1": round(top1, 4), "seconds_with_startup": round(time.perf_counter() - t0, 1)}


def image_folder(root: Path, size: int, per_class: int = 48, classes: int = 2) -> Path:
    """train/<class>/*.png of random pictures, for the per-image (DataLoader) path."""
    import numpy as np
    from PIL import Image
    folder = root / f"images-{size}"
    rng = np.random.default_rng(0)
    for c in range(classes):
        d = folder / "train" / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return folder


def pretrain_steps(name: str, sizes: Sizes, device, root: Path, flags: list[str], steps: int = 5) -> dict[str, Any]:
    run = root / name
    t0 = time.perf_counter()
    cli(["pretrain", *cli_flags(sizes, device), "--batch-size", "32", "--max-steps", str(steps), "--knn-every", "0",
         "--checkpoint-every", "0", *flags, "--run-dir", str(run)], timeout=300, root=root)
    status = read_status(run)
    assert status["state"] == "finished" and status["step"] == steps, status
    return {"steps": steps, "seconds_with_startup": round(time.perf_counter() - t0, 1),
            "images_per_s": status.get("images_per_sec")}


def check_large_images(sizes: Sizes, device, root: Path) -> dict[str, Any]:
    size = 96 if device.type == "cuda" else 72  # > 64: ImageListDataset in DataLoader workers
    folder = image_folder(root, size)
    out = pretrain_steps("large", sizes, device, root, ["--dataset", "folder", "--data-dir", str(folder),
                                                        "--image-size", str(size), "--workers", "2"])
    return {"image_size": size, "workers": 2, **out}


def check_real_data(sizes: Sizes, device, root: Path, data_dir: str, dataset: str, image_size: int) -> dict[str, Any]:
    out = pretrain_steps("real", sizes, device, root, ["--dataset", dataset, "--data-dir", data_dir, "--image-size",
                                                       str(image_size), "--subset", "1024"], steps=10)
    return {"dataset": dataset, "data_dir": data_dir, "image_size": image_size, **out}


# ---------------------------------------------------------------------- the checks and the report
def environment(device) -> dict[str, Any]:
    import torch
    info = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpus=torch.cuda.device_count(), memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported(),
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32,
                    nccl=".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else None)
    return info


def checks_for(args, sizes: Sizes, device, root: Path, gpus: int) -> list[tuple[Check, Callable[[dict], Any]]]:
    """Every check, in the order they run: (what it is, fn(earlier results by name) -> its numbers)."""
    cuda = device.type == "cuda"
    out: list[tuple[Check, Callable[[dict], Any]]] = []
    for precision in ("fp32", "bf16"):
        for cl in (True, False):
            name = f"step {precision} {'channels_last' if cl else 'NCHW'}"
            out.append((Check(name, 120, "the real loop, one process, synthetic batches on the device"),
                        lambda e, p=precision, cl=cl: check_step(p, cl, sizes, device, root, e)))
    one = gpus <= 1
    table = [
        (Check("host syncs", 120, "set_sync_debug_mode('warn') around the real loop's steps" if cuda
               else "the loop only: sync debug mode is CUDA's (counts 0)"),
         lambda e: check_host_syncs(sizes, device, root)),
        (Check("fp16 + GradScaler", 120, "fp16 autocast and the GradScaler core.training.setup turns on for it",
               None if cuda else "needs CUDA (no GradScaler on a CPU)"), lambda e: check_fp16(sizes, device, root)),
        (Check("recipe epoch (cifar10-resnet18)", 240, "one epoch of the recipe, auto precision"),
         lambda e: check_recipe_epoch(sizes, device, root)),
        (Check("DataParallel", 150, "one device: the wrapper only, never a scatter or gather (not covered)" if one
               else "scatter/gather over every GPU, and simclr pretrain --data-parallel"),
         lambda e: check_data_parallel(sizes, device, root)),
        (Check("DDP (torchrun)", 300, "world size 1: NCCL init, DDP and its all-reduce; not covered: the embedding "
               "gather and SyncBatchNorm's exchange (skipped at world size 1)" if one and cuda
               else "torchrun, a world of several processes"), lambda e: check_ddp(sizes, device, root)),
        (Check("pretrain + kNN monitor", 300, "simclr pretrain, the kNN monitor every epoch"),
         lambda e: check_pretrain_monitor(sizes, device, root)),
        (Check("stop + resume", 360, "SIGTERM mid-run, then --resume; the weights against an uninterrupted run's "
               "(cuDNN autotuning: equal to float tolerance, reported)"), lambda e: check_stop_resume(sizes, device, root)),
        (Check("stop + resume --deterministic", 360, "as stop + resume with --deterministic: bit-identical asserted"),
         lambda e: check_stop_resume(sizes, device, root, deterministic=True)),
        (Check("linear-eval", 200, "on the pretrain + kNN monitor run"),
         lambda e: check_eval("linear-eval", sizes, device, root)),
        (Check("knn", 200, "on the pretrain + kNN monitor run"), lambda e: check_eval("knn", sizes, device, root)),
        (Check("finetune", 200, "on the pretrain + kNN monitor run"), lambda e: check_eval("finetune", sizes, device, root)),
        (Check("large images", 240, "image size > 64: PNG folder decoded per image in DataLoader workers"),
         lambda e: check_large_images(sizes, device, root)),
        (Check("compile", 300, "--compile: torch.compile in the real loop",
               None if cuda else "needs CUDA (checked on the GPU only)"), lambda e: check_compile(sizes, device, root)),
        (Check("micro-batch memory", 180, "peak allocated memory of a step at batch B and at --micro-batch B/4",
               None if has_micro_batch() else "not available: core/config.py has no micro_batch"),
         lambda e: check_micro_batch(sizes, device, root)),
        (Check("real data", 300, f"{args.dataset} from --data-dir", None if args.data_dir else "no --data-dir given"),
         lambda e: check_real_data(sizes, device, root, args.data_dir, args.dataset,
                                   args.image_size or (96 if args.dataset in ("folder", "stl10") else 32))),
    ]
    return out + table


def child(args, checks: list[tuple[Check, Callable[[dict], Any]]]) -> int:
    """One check, in this process: its row into --child-result (the parent adds the rest)."""
    DEADLINE[0] = args.deadline
    fn = dict((c.name, f) for c, f in checks)[args.child]
    earlier = {}
    with contextlib.suppress(OSError, ValueError):
        earlier = {r["check"]: r.get("result") or {} for r in json.loads(args.json.read_text())["checks"]}
    try:
        row = {"ok": True, "result": fn(earlier)}
    except Exception as e:  # noqa: BLE001 - every check is reported, whatever it raised
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        row = {"ok": False, "error": f"{type(e).__name__}: {first}", "traceback": traceback.format_exc()}
        if getattr(e, "stderr_tail", None):
            row["stderr_tail"] = e.stderr_tail
    write_json_atomic(args.child_result, row)
    return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, default=Path("gpu_check.json"),
                   help="the JSON report; failed checks' logs go beside it, in failed_logs.tar.gz "
                        "(default: ./gpu_check.json)")
    p.add_argument("--budget", type=float, default=480.0,
                   help="seconds for all the checks: one is started only with 10 s left, and may take only what is "
                        "left (default: 480, inside one 10-minute device command with time to save)")
    p.add_argument("--only", action="append", metavar="NAME[,NAME]",
                   help="run only these checks (a name or its first words, any case, - for spaces: step-bf16, ddp)")
    p.add_argument("--skip", action="append", metavar="NAME[,NAME]", help="run all checks but these")
    p.add_argument("--list", action="store_true", help="print the checks and what each covers, and exit")
    p.add_argument("--data-dir", help="real data for the 'real data' check (not run without it)")
    p.add_argument("--dataset", default="folder", help="what --data-dir holds: folder, cifar10, ... (default: folder)")
    p.add_argument("--image-size", type=int, help="the real data check's image size (default: 96 folder/stl10, else 32)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a check of this script, not of the GPU's speed")
    p.add_argument("--allow-cpu", action="store_true",
                   help="run every check on the CPU (gloo for DDP, no bf16): for testing this script")
    for name, tp in (("--child", str), ("--child-result", Path), ("--root", Path), ("--deadline", float)):
        p.add_argument(name, type=tp, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    import torch
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); run it on a machine "
              "with a GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda", 0) if torch.cuda.is_available() and not args.allow_cpu else torch.device("cpu")
    if device.type == "cuda" and args.child:
        torch.cuda.set_device(device)
    sizes = Sizes(args.quick, device.type == "cuda")
    gpus = torch.cuda.device_count() if device.type == "cuda" else 1
    root = args.root or Path(tempfile.gettempdir()) / f"gpu_check-{os.getpid()}"
    checks = checks_for(args, sizes, device, root, gpus)
    if args.child:
        return child(args, checks)
    names = [c.name for c, _ in checks]
    if args.list:
        for c, _ in checks:
            print(f"{c.name}: {c.covers}" + (f" [not here: {c.unavailable}]" if c.unavailable else ""))
        return 0
    try:
        left_out = selection(names, split_names(args.only), split_names(args.skip))
    except ValueError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    try:
        env = environment(device)
    except Exception as e:  # noqa: BLE001 - the checks still run and say what fails
        env = {"device": str(device), "torch": torch.__version__, "error": f"{type(e).__name__}: {e}"}
    report: dict[str, Any] = {"environment": env, "quick": args.quick, "budget_s": args.budget, "checks": []}
    bundle = args.json.parent / "failed_logs.tar.gz"
    bundle.unlink(missing_ok=True)
    failed_logs: list[tuple[str, Path]] = []

    def save(rows: list[dict[str, Any]]) -> None:
        report["checks"] = rows
        write_json_atomic(args.json, report)

    def run_one(check: Check, allowed: float) -> dict[str, Any]:
        key, since = slug(check.name), time.time()
        log, result = root / "checks" / f"{key}.log", root / "checks" / f"{key}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", check.name, "--child-result",
               str(result), "--root", str(root), "--deadline", str(time.time() + allowed)]
        row = run_child(cmd, allowed + 30, log, result, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if not row.get("ok"):
            row.setdefault("stderr_tail", read_tail(log))
            failed_logs.append((f"{key}/check.log", log))
            failed_logs.extend((f"{key}/{p.relative_to(root)}", p) for p in run_logs(root, since) if p != log)
            write_bundle(bundle, failed_logs)
            row["logs"] = f"{bundle.name}: {key}/"
        return row

    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    try:
        rows = run_all([c for c, _ in checks], run_one, args.budget, save, left_out)
    finally:
        if args.root is None:
            import shutil
            shutil.rmtree(root, ignore_errors=True)
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    save(rows)
    print(markdown(rows, env))
    failed = [r for r in rows if r["ok"] is False or r.get("skip_kind") == "budget"]
    passed = sum(1 for r in rows if r["ok"])
    skipped = sum(1 for r in rows if r["ok"] is None)
    print(f"\n{passed} of {len(rows)} checks passed, {len(failed)} failed or out of budget, {skipped} skipped in "
          f"{report['total_seconds']:.0f} s; report: {args.json}" + (f", logs: {bundle}" if failed_logs else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
