"""The memory one training step needs, estimated before the run starts, and whether it fits.

    python -m core.training.memory --shape resnet18 64 32 128     # a model shape's cost, as JSON

The estimate of a step (``step_memory``) adds up, per process:

* the model: fp32 weights, their gradients and the optimizer's state (AdamW 2 tensors per
  weight, LARS and SGD 1: momentum), the BatchNorm buffers, and the EMA copy of the encoder;
* activations: the bytes autograd saves for backward, per view, times the views the model
  sees at once (2B/world, or 2M with ``--micro-batch M``), plus the loss's (quadratic in the
  batch: the similarity matrix) and the projections z (with ``--micro-batch``, z of the whole
  batch and its gradient are kept between the passes; the loss's graph and a chunk's never
  live at the same time);
* the views themselves: 2B/world of them, 3 x S x S fp32, held for the whole step;
* on a CPU, where the runner's heap keeps freed memory (``keep_freed_memory``), what a step
  frees and the heap cannot reuse: the activations once more (measured 0.8-0.9x).

The saved bytes per view are measured once per model shape (backbone, width, image size,
projection size) and cached in this process: the model is built on the ``meta`` device (no
memory, no compute), and one forward of 8 and one of 16 views is run under
``torch.autograd.graph.saved_tensors_hooks``, summing each distinct storage once, weights
and input excluded; their difference is the per-view cost, exact because the model is linear
in the batch. The loss is measured the same way, on the CPU (tiny), at three batch sizes (a
quadratic). Where the meta device fails, a real CPU forward of 2 and 4 views does it (a
second, once).

It is an estimate: activations are counted in fp32 (autocast to bf16/fp16 keeps less), and
the process itself (torch's libraries and threads: ~0.8 GB resident on a CPU), the dataset
held in memory, CUDA's context and caching allocator and cuDNN's workspaces are not counted.
bench/bench_gradcache.py prints it next to measured peaks: ResNet-18 width 16, 24 px, batch
128, on 2 busy CPU cores, the floor plus the estimate predicted 1,137 MB and two runs peaked
at 1,093 and 1,142 MB; with SIMCLR_KEEP_FREED_MEMORY=0, 971 MB predicted, 946 MB peak.

Free memory (``available_memory``) never initialises CUDA in the asking process (the TUI must
never make a CUDA context): a GPU's comes from ``nvidia-smi``, a CPU's from /proc/meminfo
(and the cgroup's limit, in a container).

This module imports torch only inside ``measure_shape``: the TUI, which never imports torch,
does the arithmetic here with a shape's cost measured by ``python -m core.training.memory``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.config import PretrainConfig

FP32 = 4
#: optimizer state, in tensors the size of the weights
OPTIMIZER_STATE = {"adam": 2, "lars": 1, "sgd": 1}
#: the share of free memory a step may take before the verdict says it will not fit
HEADROOM = 0.9
NVIDIA_SMI = ("nvidia-smi", "--query-gpu=memory.total,memory.used", "--format=csv,noheader,nounits")


@dataclass(frozen=True)
class Shape:
    """What the model's memory depends on."""

    backbone: str
    width: int
    image_size: int
    projection_dim: int

    @classmethod
    def of(cls, cfg: PretrainConfig) -> "Shape":
        return cls(cfg.backbone, cfg.width, cfg.image_size, cfg.projection_dim)


@dataclass(frozen=True)
class ShapeCost:
    """One model shape's measured memory, what ``step_memory`` scales to a batch."""

    params: int  # parameters (each fp32)
    encoder_params: int  # of them, the encoder's (what --ema copies)
    buffer_bytes: int  # BatchNorm's running statistics
    per_view: int  # bytes saved for backward per view, weights and input excluded
    fixed: int  # bytes saved once per forward whatever the batch (BatchNorm's batch statistics)
    loss_quad: float  # the loss saves loss_quad * V * V_all + loss_lin * V + loss_fixed bytes
    loss_lin: float
    loss_fixed: float
    measured_on: str  # meta, or cpu where meta failed

    def loss_bytes(self, views: int, views_all: int) -> int:
        """Bytes NT-Xent saves for ``views`` local anchors among ``views_all`` candidates."""
        return max(0, round(self.loss_quad * views * views_all + self.loss_lin * views + self.loss_fixed))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ShapeCost":
        data = json.loads(text)
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Estimate:
    """The memory of one training step on one process, in bytes."""

    total: int
    model: int  # weights, gradients, optimizer state (and the EMA copy)
    activations: int  # saved for backward: of the batch, or of one chunk with the cached z
    inputs: int  # the step's views
    heap: int  # on a CPU, freed blocks the heap keeps (core.training.device.keep_freed_memory)
    views: int  # views the model runs on at once (2B/world, or 2M)
    how: str  # one line: what was counted, and that it is an estimate


# ...................................................................... a shape's cost
_costs: dict[Shape, ShapeCost] = {}
_costs_lock = threading.Lock()


def shape_cost(shape: Shape) -> ShapeCost:
    """``measure_shape(shape)``, once per shape in this process."""
    with _costs_lock:
        if shape not in _costs:
            _costs[shape] = measure_shape(shape)
        return _costs[shape]


def measure_shape(shape: Shape) -> ShapeCost:
    """Measure a shape on the meta device (a real CPU forward of 2 and 4 views where meta fails)."""
    try:
        return _measure(shape, "meta", (8, 16))
    except Exception:  # noqa: BLE001 - an op without a meta kernel: measure for real, small
        return _measure(shape, "cpu", (2, 4))


def _measure(shape: Shape, device: str, sizes: tuple[int, int]) -> ShapeCost:
    import torch

    from core.simclr.loss import NTXentLoss
    from core.simclr.models import build_model

    def key(t: torch.Tensor) -> int:
        return t.untyped_storage()._cdata  # the storage itself: views of one tensor count once

    def saved_bytes(run, inputs: list[torch.Tensor], skip: set[int]) -> int:
        seen: dict[int, int] = {}
        skip = skip | {key(t) for t in inputs}

        def pack(t: torch.Tensor) -> torch.Tensor:
            if key(t) not in skip:
                seen[key(t)] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run(*inputs)
        return sum(seen.values())

    with torch.device(device):
        model = build_model(shape.backbone, shape.width, shape.image_size, shape.projection_dim).train()
    weights = {key(t) for t in [*model.parameters(), *model.buffers()]}
    s = shape.image_size
    a, b = (saved_bytes(model, [torch.zeros(n, 3, s, s, device=device)], weights) for n in sizes)
    per_view = (b - a) // (sizes[1] - sizes[0])
    criterion = NTXentLoss(0.5)

    def loss(z: torch.Tensor) -> torch.Tensor:
        pz = z.unflatten(0, (-1, 2))
        return criterion(pz[:, 0], pz[:, 1])

    # views; L(V) = q V^2 + l V + c through three points. On the CPU (the loss's autocast guard
    # has no meta device), real but tiny: 32 x 32 similarities
    with _one_process():
        l8, l16, l32 = (saved_bytes(loss, [torch.zeros(n, shape.projection_dim, requires_grad=True)], set())
                        for n in (8, 16, 32))
    d1, d2 = l16 - l8, l32 - l16
    q = (d2 - 2 * d1) / 384
    lin = (d1 - 192 * q) / 8
    return ShapeCost(
        params=sum(p.numel() for p in model.parameters()),
        encoder_params=sum(p.numel() for p in model.encoder.parameters()),
        buffer_bytes=sum(t.numel() * t.element_size() for t in model.buffers()),
        per_view=per_view, fixed=max(0, a - per_view * sizes[0]),
        loss_quad=q, loss_lin=lin, loss_fixed=l8 - 64 * q - 8 * lin, measured_on=device)


@contextmanager
def _one_process():
    """The loss as one process computes it. Under torchrun only rank 0 estimates, and the loss
    would gather from every rank (a collective the others never join); the quadratic measured
    here is scaled to the global batch by ``ShapeCost.loss_bytes``."""
    from unittest import mock

    from core.simclr import dist

    if not dist.is_dist():
        yield
        return
    with mock.patch.object(dist, "get_world_size", lambda: 1), mock.patch.object(dist, "get_rank", lambda: 0):
        yield


# ...................................................................... a step
def step_memory(cfg: PretrainConfig, cost: ShapeCost | None = None, world: int = 1, heap: bool = False) -> Estimate:
    """The memory one step of ``cfg`` needs on each of ``world`` processes (an estimate).

    ``cost``: the shape's, when the caller has it (the TUI measures it in a child process);
    else measured here (torch) and cached. ``heap``: the step runs on a CPU whose heap keeps
    freed memory (``keeps_freed_memory()``): its resident memory also holds what the step
    freed and could not reuse, counted as the activations once more. Measured with
    bench/bench_gradcache.py and docs/BENCHMARKS.md: 0.8x (ResNet-18 width 64, batch 512) and
    0.9x (width 16, batch 128, 24 px) of them; the heap cannot keep more than was freed.
    """
    cost = cost if cost is not None else shape_cost(Shape.of(cfg))
    local = 2 * (cfg.batch_size // max(1, world))  # views on this process
    state = OPTIMIZER_STATE.get(cfg.optimizer, 2)
    model = cost.params * FP32 * (2 + state) + cost.buffer_bytes + (cost.encoder_params * FP32 if cfg.ema else 0)
    inputs = local * 3 * cfg.image_size ** 2 * FP32
    z = local * cfg.projection_dim * FP32
    loss = cost.loss_bytes(local, 2 * cfg.batch_size)
    if cfg.micro_batch:
        views = 2 * min(cfg.micro_batch, local // 2)
        # pass 2 (the loss on the whole batch) and pass 3 (one chunk) never overlap; z and dL/dz stay
        activations = max(cost.per_view * views + cost.fixed, loss) + 2 * z
    else:
        views = local
        activations = cost.per_view * views + cost.fixed + loss + z
    kept = activations if heap else 0
    total = model + activations + inputs + kept
    slack = "" if heap else ", the allocator's slack"
    amp = "" if cfg.precision == "fp32" else "; activations counted in fp32 (bf16/fp16 autocast keeps less)"
    how = (f"an estimate: fp32 weights, gradients and {cfg.optimizer} state{' and the EMA copy' * bool(cfg.ema)} "
           f"{fmt_bytes(model)}, activations of {views} views {fmt_bytes(activations)} (saved for backward, "
           f"measured per view on the {cost.measured_on} device), the views {fmt_bytes(inputs)}"
           f"{f', freed blocks the heap keeps {fmt_bytes(kept)}' if heap else ''}{amp}; "
           f"not counted: the process itself (torch), the dataset{slack}, "
           f"CUDA's context")
    return Estimate(total, model, activations, inputs, kept, views, how)


def fitting_micro_batch(cfg: PretrainConfig, free_bytes: int, headroom: float = HEADROOM,
                        cost: ShapeCost | None = None, world: int = 1, heap: bool = False) -> int | None:
    """The largest micro-batch M (pairs; at least 2, dividing each process's batch) whose step
    fits in ``headroom * free_bytes``; None when even the smallest does not."""
    for m in reversed(micro_batches(cfg.batch_size // max(1, world))):
        if step_memory(cfg.replace(micro_batch=m), cost, world, heap).total <= headroom * free_bytes:
            return m
    return None


def micro_batches(pairs: int) -> list[int]:
    """The micro-batches a process's batch of ``pairs`` allows: its divisors from 2 up."""
    small = [d for d in range(1, math.isqrt(pairs) + 1) if pairs % d == 0]
    return sorted({d for s in small for d in (s, pairs // s)} - {1})


def keeps_freed_memory() -> bool:
    """Whether a run's CPU heap keeps freed memory here: ``core.training.device.keep_freed_memory``'s
    rule (glibc on Linux, unless SIMCLR_KEEP_FREED_MEMORY=0), without importing torch."""
    import platform

    return (os.environ.get("SIMCLR_KEEP_FREED_MEMORY", "1") != "0" and sys.platform == "linux"
            and platform.libc_ver()[0] == "glibc")


# ...................................................................... free memory
def parse_nvidia_smi(text: str) -> list[tuple[int, int] | None]:
    """(total, used) bytes of each GPU in `nvidia-smi --query-gpu=memory.total,memory.used
    --format=csv,noheader,nounits` output (MiB); None for a GPU that reports no number."""
    out: list[tuple[int, int] | None] = []
    for line in text.strip().splitlines():
        try:
            total, used = (round(float(p)) << 20 for p in line.split(","))
            out.append((total, used))
        except (ValueError, OverflowError):  # "[N/A]", "[Not Supported]" or a line of another shape
            out.append(None)
    return out


def nvidia_smi(timeout: float = 2.0) -> list[tuple[int, int] | None] | None:
    """Each GPU's (total, used) bytes from nvidia-smi; None when there is no nvidia-smi or it fails."""
    if shutil.which(NVIDIA_SMI[0]) is None:
        return None
    try:
        proc = subprocess.run(NVIDIA_SMI, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(proc.stdout) if proc.returncode == 0 else None


def cpu_available() -> int | None:
    """Bytes a new process can take: MemAvailable (or free pages), within the cgroup's limit."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return None
    try:  # cgroup v2: a container's limit, when it has one
        cg = Path("/sys/fs/cgroup")
        limit = (cg / "memory.max").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int((cg / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(0, free)


def _gpu_index(device: str) -> int | None:
    """The nvidia-smi row of ``cuda`` / ``cuda:N`` (through CUDA_VISIBLE_DEVICES's numbers)."""
    n = int(device.split(":", 1)[1]) if ":" in device else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return n
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if n >= len(ids) or not ids[n].isdigit():
        return None  # hidden, or named by UUID: not worth guessing
    return int(ids[n])


def available_memory(device: str, gpus: list[tuple[int, int] | None] | None | str = "ask") -> tuple[int | None, str]:
    """(free bytes or None when unknown, where) for a config's ``device``: auto, cpu, cuda,
    cuda:N. Auto is CUDA when nvidia-smi reports a GPU. Never initialises CUDA, never raises.
    ``gpus``: nvidia-smi's answer, when the caller has it (tests)."""
    dev = (device or "auto").strip().lower()
    try:
        if dev == "auto" or dev.startswith("cuda"):
            gpus = nvidia_smi() if gpus == "ask" else gpus
            if dev == "auto":
                if not gpus:
                    return cpu_available(), "cpu"
                dev = "cuda:0"
            if gpus is None:
                return None, f"{dev} (no nvidia-smi to ask)"
            i = _gpu_index(dev)
            row = gpus[i] if i is not None and 0 <= i < len(gpus) else None
            return (None, f"{dev} (nvidia-smi does not report it)") if row is None else (row[0] - row[1], dev)
        return cpu_available(), "cpu"
    except Exception:  # noqa: BLE001 - an estimate's side question never fails its caller
        return None, dev


# ...................................................................... the verdict
@dataclass(frozen=True)
class Verdict:
    """A step's estimate against the free memory, in one line."""

    estimate: Estimate
    free: int | None
    where: str
    fits: bool | None  # None: the free memory is unknown
    micro: int | None  # when it does not fit: a --micro-batch that does
    text: str


def memory_verdict(cfg: PretrainConfig, cost: ShapeCost | None = None, available: tuple[int | None, str] | None = None,
                   world: int = 1, headroom: float = HEADROOM) -> Verdict:
    """The estimate of ``cfg``'s step against the free memory of its device (``available``, else
    asked), in the line the TUI and the command line show."""
    free, where = available if available is not None else available_memory(cfg.device)
    heap = where == "cpu" and keeps_freed_memory()
    est = step_memory(cfg, cost, world, heap)
    setting = f"batch {cfg.batch_size}" + (f", micro-batch {cfg.micro_batch}" if cfg.micro_batch else "") + (
        f", {world} processes" if world > 1 else "")
    if free is None:
        return Verdict(est, None, where, None, None, f"step ≈ {fmt_bytes(est.total)} ({setting}); free memory on {where} unknown")
    if est.total <= headroom * free:
        return Verdict(est, free, where, True, None, f"step ≈ {fmt_bytes(est.total)} ({setting}) of {fmt_bytes(free)} free on {where}")
    over = f" (over {headroom:.0%})" if est.total <= free else ""
    head = f"will not fit: step ≈ {fmt_bytes(est.total)} ({setting}) of {fmt_bytes(free)} free on {where}{over}"
    micro = fitting_micro_batch(cfg, free, headroom, cost, world, heap)
    if micro is not None:
        need = step_memory(cfg.replace(micro_batch=micro), cost, world, heap).total
        return Verdict(est, free, where, False, micro, f"{head}; --micro-batch {micro} needs ≈ {fmt_bytes(need)}")
    smallest = (micro_batches(cfg.batch_size // max(1, world)) or [None])[0]
    if smallest is None:
        return Verdict(est, free, where, False, None, f"{head}: lower --width or --image-size")
    need = step_memory(cfg.replace(micro_batch=smallest), cost, world, heap).total
    return Verdict(est, free, where, False, None, f"{head}, even with --micro-batch {smallest} (≈ {fmt_bytes(need)}): "
                                                   f"lower --width or --image-size")


def start_line(cfg: PretrainConfig, device: str, world: int = 1) -> str | None:
    """The runner's line at start (rank 0), or None when the estimate cannot be made: it never
    fails a run."""
    try:
        v = memory_verdict(cfg, available=available_memory(device), world=world)
        e = v.estimate
        heap = f", heap {fmt_bytes(e.heap)}" if e.heap else ""
        return (f"memory (an estimate): {v.text}; model {fmt_bytes(e.model)}, activations of {e.views} views "
                f"{fmt_bytes(e.activations)}, views {fmt_bytes(e.inputs)}{heap}")
    except Exception:  # noqa: BLE001 - the estimate is advice; the run goes on without it
        return None


def fmt_bytes(n: float) -> str:
    """3.1 GB, 420 MB, 12 kB (powers of 1000)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}" if abs(n) < 10 * size else f"{n / size:.0f} {unit}"
    return f"{n:.0f} B"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.training.memory", description=__doc__.splitlines()[0])
    ap.add_argument("--shape", nargs=4, metavar=("BACKBONE", "WIDTH", "IMAGE_SIZE", "PROJECTION_DIM"), required=True,
                    help="print this model shape's measured cost as JSON")
    args = ap.parse_args(argv)
    backbone, width, size, proj = args.shape
    print(measure_shape(Shape(backbone, int(width), int(size), int(proj))).to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
