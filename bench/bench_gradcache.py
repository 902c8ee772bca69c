"""--micro-batch M (gradient caching): peak memory and time per image of one training step.

    python3 bench/bench_gradcache.py [--micro 32] [--chunks 8] [--steps 4] [--width 16] [--size 24]

Each row is its own child process (``--child``), so its peak RSS is the kernel's ru_maxrss for
that child alone (read with ``os.wait4``; tracemalloc does not see torch's allocations):

* ``floor``: the model, optimizer and inputs built, no step (imports included);
* ``plain M``: the plain step at batch M (M pairs, 2M views);
* ``plain B``: the plain step at batch B = chunks x M;
* ``cached B/M``: the micro-batched step at batch B, M pairs per chunk (core.training.gradcache).

The model is the cifar10-cpu preset's (ResNet-18, width 16, 24 px views, channels_last as the
trainer lays it out on CPU), the optimizer LARS; the views are random (augmentation is not what
is measured). Time per image is the median step time over ``--steps`` steps after one warm-up
step, divided by B. Freed memory is kept as the trainer keeps it on CPU (keep_freed_memory).

Below the table, each row's estimate by core.training.memory (what the TUI and `simclr
pretrain` say before a run) and the peak it predicts (the estimate plus the process itself),
beside the measured peak.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(mode: str, pairs: int, micro: int, steps: int, width: int, size: int) -> None:
    sys.path.insert(0, str(REPO))
    import torch

    from core.simclr import layout
    from core.simclr.lars import LARS
    from core.simclr.loss import NTXentLoss
    from core.simclr.models import build_model
    from core.training.device import keep_freed_memory
    from core.training.gradcache import cached_step

    keep_freed_memory()
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = layout.to_layout(build_model("resnet18", width, size, 128), device).train()
    fmt = layout.memory_format(model, device)
    opt = LARS(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-6)
    crit = NTXentLoss(0.5)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    x = torch.randn(2 * pairs, 3, size, size).contiguous(memory_format=fmt)
    times = []
    for _ in range(0 if mode == "floor" else steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if mode == "cached":
            loss, _ = cached_step(model, crit, x, micro, scaler, None)
        else:
            z = model(x)[1].unflatten(0, (-1, 2))
            loss = crit(z[:, 0], z[:, 1])
            loss.backward()
        loss.item()
        opt.step()
        times.append(time.perf_counter() - t0)
    per_image = statistics.median(times[1:]) / pairs if times else 0.0
    print(f"RESULT {per_image}", flush=True)


def measure(args: argparse.Namespace, mode: str, pairs: int) -> tuple[float, float]:
    """(peak RSS MB, seconds per image) of one child."""
    argv = [sys.executable, __file__, "--child", mode, "--pairs", str(pairs), "--micro", str(args.micro),
            "--steps", str(args.steps), "--width", str(args.width), "--size", str(args.size)]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{mode} {pairs}: child failed")
    per_image = float(next(line for line in out.splitlines() if line.startswith("RESULT")).split()[1])
    return usage.ru_maxrss / 1024, per_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--micro", type=int, default=32, help="M, pairs per chunk")
    ap.add_argument("--chunks", type=int, default=8, help="B = chunks x M")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--child", choices=("floor", "plain", "cached"))
    ap.add_argument("--pairs", type=int)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.pairs, args.micro, args.steps, args.width, args.size)
        return
    m, b = args.micro, args.micro * args.chunks
    rows = {"floor": measure(args, "floor", b), f"plain M={m}": measure(args, "plain", m),
            f"plain B={b}": measure(args, "plain", b), f"cached B={b}/M={m}": measure(args, "cached", b)}
    print(f"ResNet-18 width {args.width}, {args.size} px, LARS, {args.steps} timed steps, torch threads "
          f"{os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(f"{'row':<20} {'peak RSS MB':>12} {'ms / image':>11}")
    for name, (mb, t) in rows.items():
        print(f"{name:<20} {mb:>12,.0f} {t * 1e3:>11.3f}")
    floor = rows["floor"][0]
    pm, pb, cb = rows[f"plain M={m}"], rows[f"plain B={b}"], rows[f"cached B={b}/M={m}"]
    print(f"peak, cached B / plain M: {cb[0] / pm[0]:.2f}x (above the floor: {(cb[0] - floor) / (pm[0] - floor):.2f}x); "
          f"plain B / plain M: {pb[0] / pm[0]:.2f}x (above the floor: {(pb[0] - floor) / (pm[0] - floor):.2f}x)")
    print(f"time per image, cached B / plain B: {cb[1] / pb[1]:.2f}x")
    print_estimates(args, rows)


def print_estimates(args: argparse.Namespace, rows: dict[str, tuple[float, float]]) -> None:
    """core.training.memory's estimate beside each measured peak. The floor holds the process
    (imports, allocator) plus the weights and the views of batch B; the estimate of a row plus
    the floor less those is the peak it predicts."""
    sys.path.insert(0, str(REPO))
    from core.config import PretrainConfig
    from core.training.memory import Shape, keeps_freed_memory, shape_cost, step_memory

    m, b = args.micro, args.micro * args.chunks
    base = PretrainConfig(backbone="resnet18", width=args.width, image_size=args.size, projection_dim=128,
                          optimizer="lars", precision="fp32")
    cost = shape_cost(Shape.of(base))
    weights = (cost.params * 4 + cost.buffer_bytes) / 2**20
    heap = keeps_freed_memory()  # as the children's keep_freed_memory() decides
    est = {f"plain M={m}": step_memory(base.replace(batch_size=m), heap=heap),
           f"plain B={b}": step_memory(base.replace(batch_size=b), heap=heap),
           f"cached B={b}/M={m}": step_memory(base.replace(batch_size=b, micro_batch=m), heap=heap)}
    process = rows["floor"][0] - weights - est[f"plain B={b}"].inputs / 2**20
    print(f"estimate (core.training.memory, MB as above; the heap keeps freed memory: {heap}): the process alone "
          f"(the floor less its weights and views) {process:,.0f}")
    print(f"{'row':<20} {'estimate MB':>12} {'+ process MB':>13} {'peak RSS MB':>12} {'peak / predicted':>17}")
    for name, e in est.items():
        predicted = process + e.total / 2**20
        print(f"{name:<20} {e.total / 2**20:>12,.0f} {predicted:>13,.0f} {rows[name][0]:>12,.0f} "
              f"{rows[name][0] / predicted:>16.2f}x")


if __name__ == "__main__":
    main()
