"""How a pretraining step's cost grows with the batch, and what precision and layout buy on a GPU.

    python3 bench/bench_scaling.py                        # CPU: ~4 min on 2 cores
    python3 bench/bench_scaling.py --device cuda          # the same, plus the GPU-only rows

Three parts, each a markdown table:

1. ``step vs batch``: our whole step (``core.training.trainer.train``, as ``bench_train_step.py``
   times it) for batch sizes ``--batches`` at ResNet-18 width ``--width``; seconds per step and
   the cost per pair relative to the smallest batch. Batch sizes alternate within each
   repeat.
2. ``NT-Xent vs N``: the loss alone, forward + backward, on random (N, 128) projections:
   ours (``core.simclr.loss.NTXentLoss``: one (2N, 2N) matmul, log-sum-exp) against the reference's
   (``bench_train_step.RefNTXent``: cosine similarity by broadcasting a (2N, 2N, D) tensor,
   a boolean mask) up to ``--ref-max-n``. Both are O(N^2); the reference's memory is also x D.
3. CUDA only (skipped on CPU with a note; ``--gpu-rows-anyway`` runs them on any device, for
   checking the script, not for numbers): the step at the CIFAR-10 recipe's batch (512, width
   64) in fp32 vs bf16 autocast, each in NCHW and channels_last (a step written out like the
   trainer's loop, since the trainer always uses channels_last), then the recipe's time per
   CIFAR-10 epoch (97 steps of 512, monitor and checkpoints off) through ``core.training.trainer.train``.

Everything runs unchanged on CPU and CUDA; all timings sync the device (``loss.item()``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_train_step import DEFAULT_DATA, Ours, RefNTXent, load_avg, load_data, sync

from core.config import PretrainConfig
from core.simclr.loss import NTXentLoss
from core.simclr.models import build_model
from core.training.device import amp_dtype, keep_freed_memory
from core.training.model import make_optimizer
from core.training.pipeline import TensorPipeline, augment_config


def base_cfg(args, device: torch.device, **changes) -> PretrainConfig:
    cfg = PretrainConfig(dataset="folder", data_dir=str(args.data_dir), backbone="resnet18", width=args.width,
                         image_size=32, batch_size=256, optimizer="lars", lr=1.0, lr_scaling="linear",
                         weight_decay=1e-6, temperature=0.5, warmup_epochs=0, jitter_strength=0.5,
                         knn_every=0, checkpoint_every=0, device=str(device), max_steps=10**9)
    return cfg.replace(**changes).validate()


def fmt_range(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    return f"{min(values) * scale:.{digits}f}-{max(values) * scale:.{digits}f}"


# ---------------------------------------------------------------------- 1. step vs batch
def step_vs_batch(args, device: torch.device, data, root: Path) -> None:
    sides = {}
    for b in args.batches:
        ours = Ours(base_cfg(args, device, batch_size=b), data, device, root)
        ours.run(1)  # warm-up
        sides[b] = ours
    secs: dict[int, list[float]] = {b: [] for b in sides}
    loads = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for b, ours in sides.items():
            s = ours.run(args.steps)
            secs[b].append(sum(s) / len(s))
        loads.append(os.getloadavg()[0])
    print(f"\n### 1. Our whole step vs batch size (ResNet-18 width {args.width}, {args.steps} steps x "
          f"{args.repeats} repeats, load {min(loads):.2f}-{max(loads):.2f})\n")
    print("| batch (pairs) | s/step (median) | range | pairs/s | cost per pair vs batch "
          f"{args.batches[0]} |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    first = statistics.median(secs[args.batches[0]]) / args.batches[0]
    for b, v in secs.items():
        med = statistics.median(v)
        print(f"| {b} | {med:.3f} | {fmt_range(v)} | {b / med:,.0f} | {med / b / first:.2f}x |")


# ---------------------------------------------------------------------- 2. the loss alone
def loss_vs_n(args, device: torch.device) -> None:
    ours = NTXentLoss(0.5)
    rows: dict[int, dict[str, list[float]]] = {}
    loads = [os.getloadavg()[0]]
    for n in args.loss_ns:
        g = torch.Generator(device=device).manual_seed(n)
        z1 = torch.randn(n, 128, device=device, generator=g).requires_grad_()
        z2 = torch.randn(n, 128, device=device, generator=g).requires_grad_()
        fns = {"ours": ours}
        if n <= args.ref_max_n:
            ref = RefNTXent(n, 0.5)
            ref.mask = ref.mask.to(device)
            fns["reference"] = ref
        rows[n] = {name: [] for name in fns}
        for fn in fns.values():  # warm-up
            fn(z1, z2).backward()
        for _ in range(args.repeats):
            for name, fn in fns.items():
                sync(device)
                t0 = time.perf_counter()
                fn(z1, z2).backward()
                sync(device)
                rows[n][name].append(time.perf_counter() - t0)
        loads.append(os.getloadavg()[0])
    print(f"\n### 2. NT-Xent alone, forward + backward, D = 128 ({args.repeats} repeats, "
          f"load {min(loads):.2f}-{max(loads):.2f})\n")
    print("| N (pairs) | ours ms (median) | range | reference ms (median) | range | reference / ours |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, r in rows.items():
        o = statistics.median(r["ours"])
        line = f"| {n} | {o * 1e3:.1f} | {fmt_range(r['ours'], 1e3, 1)} | "
        if "reference" in r:
            ref = statistics.median(r["reference"])
            line += f"{ref * 1e3:.1f} | {fmt_range(r['reference'], 1e3, 1)} | {ref / o:.0f}x |"
        else:
            line += f"- | - | (reference skipped above N = {args.ref_max_n}) |"
        print(line)


# ---------------------------------------------------------------------- 3. GPU: precision and layout
class Variant:
    """The trainer's step with a chosen precision and memory layout (the trainer always uses channels_last)."""

    def __init__(self, cfg: PretrainConfig, data, device: torch.device, amp: torch.dtype | None,
                 layout: torch.memory_format) -> None:
        self.device, self.amp, self.layout = device, amp, layout
        self.pipe = TensorPipeline(data, augment_config(cfg), cfg.batch_size, cfg.seed, device)
        self.model = build_model(cfg.backbone, cfg.width, cfg.image_size, cfg.projection_dim).to(device)
        self.model = self.model.to(memory_format=layout)
        self.optimizer = make_optimizer(cfg, self.model)
        self.criterion = NTXentLoss(cfg.temperature)
        self.epoch = 0
        self.batches = iter(())

    def next_views(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = self.pipe.epoch(self.epoch)
            self.epoch += 1
            return next(self.batches)

    def run(self, steps: int) -> list[float]:
        out = []
        for _ in range(steps):
            t0 = time.perf_counter()
            v1, v2 = self.next_views()
            x = torch.stack((v1, v2), 1).flatten(0, 1).contiguous(memory_format=self.layout)
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                _, z = self.model(x)
            z = z.unflatten(0, (-1, 2))
            loss = self.criterion(z[:, 0], z[:, 1])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            loss.item()
            self.optimizer.step()
            sync(self.device)
            out.append(time.perf_counter() - t0)
        return out


def gpu_rows(args, device: torch.device, data, root: Path) -> None:
    cfg = base_cfg(args, device, batch_size=args.recipe_batch, width=args.recipe_width)
    variants = {
        "fp32, NCHW": (None, torch.contiguous_format),
        "fp32, channels_last": (None, torch.channels_last),
        "bf16 autocast, NCHW": (torch.bfloat16, torch.contiguous_format),
        "bf16 autocast + channels_last (ours)": (torch.bfloat16, torch.channels_last),
    }
    sides = {}
    for name, (amp, layout) in variants.items():
        sides[name] = Variant(cfg, data, device, amp, layout)
        sides[name].run(3)  # warm-up (cuDNN autotuning, allocator)
    secs: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, side in sides.items():
            s = side.run(args.gpu_steps)
            secs[name].append(sum(s) / len(s))
    print(f"\n### 3a. Precision and layout (batch {cfg.batch_size}, width {cfg.width}, {args.gpu_steps} steps x "
          f"{args.repeats} repeats, {device})\n")
    print("| variant | pairs/s (median) | range | vs fp32 NCHW |")
    print("| --- | ---: | ---: | ---: |")
    base = statistics.median(cfg.batch_size / s for s in secs["fp32, NCHW"])
    for name, v in secs.items():
        rates = [cfg.batch_size / s for s in v]
        med = statistics.median(rates)
        print(f"| {name} | {med:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} | {med / base:.2f}x |")
    del sides

    # the recipe's epoch through the real loop (precision auto: bf16 autocast on CUDA)
    ours = Ours(cfg.replace(precision="auto"), data, device, root)
    ours.run(3)  # warm-up
    steps = len(ours.pipe) if not args.epoch_steps else min(args.epoch_steps, len(ours.pipe))
    epochs = []
    for _ in range(args.epoch_repeats):
        s = ours.run(steps)
        epochs.append(sum(s) / steps * len(ours.pipe))
    print(f"\n### 3b. CIFAR-10 recipe (cifar10-resnet18: ResNet-18, batch {cfg.batch_size}, "
          f"{amp_dtype(cfg, device) or 'fp32'}), core.training.trainer.train, monitor and checkpoints off\n")
    print("| time per epoch (s, median) | range | epochs | steps timed per epoch | pairs/s |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    med = statistics.median(epochs)
    print(f"| {med:.1f} | {fmt_range(epochs, 1, 1)} | {len(epochs)} | {steps} of {len(ours.pipe)} | "
          f"{len(ours.pipe) * cfg.batch_size / med:,.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="CIFAR-10 folder with train.zip")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda when visible, else cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--width", type=int, default=16, help="ResNet-18 width for part 1")
    p.add_argument("--batches", default="64,128,256,512,1024", help="part 1 batch sizes (pairs)")
    p.add_argument("--steps", type=int, default=2, help="part 1: timed steps per batch size per repeat")
    p.add_argument("--repeats", type=int, default=3, help="repeats (interleaved) of every part")
    p.add_argument("--loss-ns", default="64,128,256,512,1024,2048,4096", help="part 2: pairs N")
    p.add_argument("--ref-max-n", type=int, default=512, help="part 2: largest N for the reference loss")
    p.add_argument("--parts", default="1,2,3", help="which parts to run")
    p.add_argument("--recipe-batch", type=int, default=512, help="part 3: batch (the cifar10-resnet18 preset's)")
    p.add_argument("--recipe-width", type=int, default=64, help="part 3: ResNet-18 width")
    p.add_argument("--gpu-steps", type=int, default=10, help="part 3a: timed steps per variant per repeat")
    p.add_argument("--epoch-repeats", type=int, default=2, help="part 3b: timed epochs")
    p.add_argument("--epoch-steps", type=int, default=0, help="part 3b: time only this many steps of an epoch and "
                                                               "scale up (0: the whole epoch)")
    p.add_argument("--gpu-rows-anyway", action="store_true", help="run part 3 on CPU too (checks the script)")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA device: run this on a GPU machine, or pass --device cpu")
    args.batches = [int(b) for b in args.batches.split(",")]
    args.loss_ns = [int(n) for n in args.loss_ns.split(",")]
    parts = {int(x) for x in args.parts.split(",")}

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {os.cpu_count()} CPUs")
          + f", {torch.get_num_threads()} threads; load average {load_avg()} at start")
    if device.type == "cpu":
        keep_freed_memory()  # as `simclr pretrain` does on CPU (the reference loss gets it too)
    root = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    data = load_data(args.data_dir, None) if parts & {1, 3} else None
    if 1 in parts:
        step_vs_batch(args, device, data, root)
    if 2 in parts:
        loss_vs_n(args, device)
    if 3 in parts:
        if device.type == "cuda" or args.gpu_rows_anyway:
            gpu_rows(args, device, data, root)
        else:
            print("\n### 3. GPU rows skipped: no CUDA device here (bf16 autocast is CUDA-only in the trainer; "
                  "on this CPU bf16 matmuls are far slower than fp32). Run with --device cuda on a GPU machine.")
    print(f"\nload average at end {load_avg()}")


if __name__ == "__main__":
    main()
