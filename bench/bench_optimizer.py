"""One optimizer step on ResNet-18's parameters: ours against the per-tensor loops.

    python3 bench/bench_optimizer.py                 # widths 16 and 64, CPU: ~1 min
    python3 bench/bench_optimizer.py --device cuda   # the same on a GPU (kernel launches count)

Sides, each stepping its own copy of the model (same parameters, same random gradients,
kept fixed so every step does the same work):

* ``LARS, per tensor (reference)``: the official SimCLR rule written out the plain way,
  about ten small ops per tensor (this file, ``per_tensor_lars_step``; it is what
  ``core.simclr.lars.LARS`` did before it bucketed tensors).
* ``LARS (core.simclr.lars)``: ours, foreach ops over each bucket of tensors sharing a rule. After
  the timed steps its parameters are compared with the reference's: the difference must
  be zero or float rounding.
* ``AdamW, per tensor``: ``torch.optim.AdamW(foreach=False)``.
* ``AdamW, fused``: ``fused=True``, as ``core.training.model.make_optimizer`` builds it.

Steps alternate between the sides within each repeat; the table gives the median and
range of milliseconds per step over repeats, and each side's speed against its baseline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.config import PretrainConfig  # noqa: E402
from core.simclr.lars import LARS  # noqa: E402
from core.training.device import keep_freed_memory  # noqa: E402
from core.training.model import build_training_model  # noqa: E402


@torch.no_grad()
def per_tensor_lars_step(params: list[torch.Tensor], state: dict, lr: float, momentum: float = 0.9,
                         weight_decay: float = 1e-6, eta: float = 0.001) -> None:
    """The official rule, one tensor at a time (biases and norm weights: plain momentum SGD)."""
    for p in params:
        g = p.grad
        if p.ndim > 1:
            g = g.add(p, alpha=weight_decay)
            w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
            trust = torch.where((w_norm > 0) & (g_norm > 0), eta * w_norm / g_norm, 1.0)
            g = g * (trust * lr)
        else:
            g = g * lr
        v = state.setdefault(p, torch.zeros_like(p))
        v.mul_(momentum).add_(g)
        p.sub_(v)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_params(width: int, device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    """ResNet-18 (CIFAR stem) + projection head parameters, with fixed random gradients."""
    torch.manual_seed(seed)
    cfg = PretrainConfig(dataset="folder", data_dir="unused", width=width, image_size=32)
    params = [p for p in build_training_model(cfg, device).parameters() if p.requires_grad]
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    for p in params:  # each grad with its parameter's strides (channels_last weights), as autograd makes them
        p.grad = torch.empty_like(p).normal_(0.0, 0.01, generator=gen)
    return params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default="16,64", help="comma-separated ResNet-18 widths")
    p.add_argument("--steps", type=int, default=20, help="steps per side in each repeat")
    p.add_argument("--repeats", type=int, default=7, help="alternations of the sides")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda when visible, else cpu")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA device: run this on a GPU machine, or pass --device cpu")
    if args.steps < 1 or args.repeats < 1:
        p.error("--steps and --repeats must be at least 1")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type == "cpu":
        keep_freed_memory()  # as `simclr pretrain` does on CPU; both sides run under it
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads")

    for width in (int(w) for w in args.widths.split(",")):
        ref_params, ours_params = model_params(width, device), model_params(width, device)
        ref_state: dict = {}
        lars = LARS(ours_params, lr=1.0, momentum=0.9, weight_decay=1e-6, eta=0.001)
        adam_loop = torch.optim.AdamW(model_params(width, device), lr=1e-3, foreach=False)
        adam_fused = torch.optim.AdamW(model_params(width, device), lr=1e-3, fused=True)
        sides = {
            "LARS, per tensor (reference)": lambda: per_tensor_lars_step(ref_params, ref_state, lr=1.0),
            "LARS (core.simclr.lars)": lars.step,
            "AdamW, per tensor": adam_loop.step,
            "AdamW, fused (core.training.trainer)": adam_fused.step,
        }
        baseline = {"LARS (core.simclr.lars)": "LARS, per tensor (reference)",
                    "AdamW, fused (core.training.trainer)": "AdamW, per tensor"}
        ms: dict[str, list[float]] = {name: [] for name in sides}
        for step in sides.values():  # warm-up: buffers and optimizer state exist
            step()
        for _ in range(args.repeats):
            for name, step in sides.items():
                sync(device)
                start = time.perf_counter()
                for _ in range(args.steps):
                    step()
                sync(device)
                ms[name].append((time.perf_counter() - start) / args.steps * 1e3)
        diff = max((a - b).abs().max().item() for a, b in zip(ref_params, ours_params))
        n = sum(q.numel() for q in ours_params)
        print(f"\nResNet-18 width {width}: {len(ours_params)} tensors, {n / 1e6:.2f} M parameters; "
              f"{args.steps} steps x {args.repeats} repeats; LARS vs reference, max |difference| "
              f"after {1 + args.steps * args.repeats} steps: {diff:.1e}\n")
        print("| optimizer | ms/step (median) | range | speed vs per-tensor |")
        print("| --- | ---: | ---: | ---: |")
        for name, values in ms.items():
            med = statistics.median(values)
            ratio = statistics.median(ms[baseline[name]]) / med if name in baseline else 1.0
            print(f"| {name} | {med:.2f} | {min(values):.2f}-{max(values):.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
