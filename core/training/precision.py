"""Which autocast dtype a run uses, and why (``--precision``; meta.json's ``precision``).

``auto`` on CUDA is bf16 autocast. ``auto`` on a CPU is decided per machine, never by a
constant: a CPU without bf16 instructions (``amx_bf16`` / ``avx512_bf16`` in /proc/cpuinfo)
runs fp32 without probing (bf16 there is emulated: ~400x slower on one AMD machine); one
with them is probed once per process and model shape (the run's model's forward and
backward on the views of one of its steps, fp32 against bf16 autocast, a second or a few),
and bf16 is chosen only when it is at least
``MIN_SPEEDUP`` times faster. The probe's answer is kept in memory and in the user cache
(``$SIMCLR_CACHE/precision-probe.json``, keyed by CPU model, flags, threads and torch
version), so later runs on the machine do not probe again.

Explicit ``fp32`` and ``bf16`` are obeyed on either device; ``fp16`` is CUDA-only (CPU
autocast has no gradient scaler here) and runs fp32 on a CPU. The loss's logits and
log-sum-exp stay fp32 (``core.simclr.loss``) and the weights (so the checkpoints) stay
fp32: autocast only changes what the matmuls and convolutions compute in.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
MIN_SPEEDUP = 1.2  # bf16 must be this much faster than fp32 for auto to pick it on a CPU
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Choice:
    """What a run computes in: ``used`` fp32, bf16 or fp16, and ``why`` in one line."""

    used: str
    why: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype; None for fp32 (autocast off)."""
        return _DTYPES[self.used]

    def as_dict(self) -> dict[str, str]:
        return {"used": self.used, "why": self.why}


# ---------------------------------------------------------------------- the CPU
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_flags() -> set[str]:
    """The bf16 flags (``BF16_FLAGS``) this CPU reports; empty where there is no /proc/cpuinfo."""
    flags: set[str] = set()
    for line in _cpuinfo().splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(f for f in line.split(":", 1)[-1].split() if f in BF16_FLAGS)
    return flags


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    import platform
    return platform.processor() or platform.machine() or "unknown CPU"


# ---------------------------------------------------------------------- the probe
PROBE_PIXELS = 256 * 32 * 32  # the most a probe's batch holds: 256 views at 32 px, 16 at 128 px


def probe_views(batch_size: int, micro_batch: int | None, image_size: int) -> int:
    """How many views the probe times: those of the run's own step (2 per pair, or a
    micro-batch's chunk), up to ``PROBE_PIXELS``. bf16's gain grows with the batch: on an AMD
    EPYC with avx512_bf16 (ResNet-18 width 16, 24 px) it was 1.11x at 8 views, 1.35x at 64 and
    1.72x at 256, and the run's batch of 256 views gained 1.34x end to end (data included),
    so a small probe batch kept fp32 where bf16 was a third faster."""
    return max(2, min(2 * (micro_batch or batch_size), PROBE_PIXELS // (image_size * image_size)))


def probe_speedup(shape: tuple = ("resnet18", 16, 24, 128), budget_s: float = 0.5) -> float:
    """fp32 time / bf16-autocast time of the run's model (``shape``: backbone, width, image
    size, projection dim and optionally the views of a step, ``probe_views``; 8 without)
    forward and backward on one batch, in the layout the run uses, on this process's CPU
    threads. > 1: bf16 is faster. Interleaved repetitions, the fastest of each kept (robust
    to other load), until ``budget_s`` is spent (at least 2 each).

    The whole model, not a bare matmul: on one AMD EPYC with avx512_bf16, bf16 against fp32
    went from 0.7x to 3.3x across matmul and conv shapes, so only the run's own layers tell."""
    from core.simclr import layout
    from core.simclr.models import build_model
    backbone, width, size, proj = shape[:4]
    views = shape[4] if len(shape) > 4 else (8 if size <= 64 else 2)
    torch.manual_seed(0)
    model = layout.to_layout(build_model(backbone, width, size, proj), torch.device("cpu"))
    fmt = layout.memory_format(model, "cpu")
    x = torch.randn(views, 3, size, size).contiguous(memory_format=fmt)

    def work(dtype: torch.dtype | None) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            _, z = model(x)
        z.float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    work(None), work(torch.bfloat16)  # warm-up: first calls pick kernels
    best = {None: float("inf"), torch.bfloat16: float("inf")}
    end, reps = time.perf_counter() + budget_s, 0
    while reps < 2 or (time.perf_counter() < end and reps < 10):
        for dt in best:
            best[dt] = min(best[dt], work(dt))
        reps += 1
    return best[None] / best[torch.bfloat16]


def _cache_file() -> Path:
    return Path(os.environ.get("SIMCLR_CACHE", Path.home() / ".cache" / "simclr-tui")) / "precision-probe.json"


def _probe_key(model: str, flags: set[str], shape: tuple) -> str:
    return (f"{model}|{','.join(sorted(flags))}|threads={torch.get_num_threads()}|torch={torch.__version__}"
            f"|{'/'.join(map(str, shape))}")


def _cached_speedup(model: str, flags: set[str], shape: tuple) -> tuple[float, bool]:
    """The probe's ratio for this CPU and model, from the user cache when it has one (then True)."""
    path, key = _cache_file(), _probe_key(model, flags, shape)
    try:
        table = json.loads(path.read_text())
        if isinstance(table.get(key), (int, float)):
            return float(table[key]), True
    except (OSError, ValueError, AttributeError):
        table = {}
    ratio = probe_speedup(shape)
    try:  # best effort: a read-only home only means probing again next time
        table = table if isinstance(table, dict) else {}
        table[key] = round(ratio, 3)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass
    return ratio, False


_cpu_auto: dict[tuple, Choice] = {}


def cpu_auto(shape: tuple) -> Choice:
    """``--precision auto`` on this CPU for a model of ``shape`` (decided once per process)."""
    if shape not in _cpu_auto:
        _cpu_auto[shape] = _decide_cpu(shape)
    return _cpu_auto[shape]


#: SIMCLR_CPU_BF16=off keeps auto at fp32 on every CPU (the test suite sets it, so its numbers do not
#: depend on the processor it runs on); on: bf16 without a probe; unset or probe: decide as below
CPU_BF16_ENV = "SIMCLR_CPU_BF16"


def _decide_cpu(shape: tuple) -> Choice:
    model, flags = cpu_model(), cpu_flags()
    wanted = os.environ.get(CPU_BF16_ENV, "probe").strip().lower()
    if wanted == "off":
        return Choice("fp32", f"auto: fp32 ({CPU_BF16_ENV}=off)")
    if wanted == "on":
        return Choice("bf16", f"auto: bf16 ({CPU_BF16_ENV}=on) on {model}")
    if not flags:
        return Choice("fp32", f"auto: fp32, {model} has no bf16 instructions ({'/'.join(BF16_FLAGS)})")
    ratio, cached = _cached_speedup(model, flags, shape)
    src = f"{model} ({', '.join(sorted(flags))}){', probed earlier' if cached else ''}"
    if ratio >= MIN_SPEEDUP:
        return Choice("bf16", f"auto: bf16 step {ratio:.2f}x fp32 on {src}")
    return Choice("fp32", f"auto: fp32, bf16 step only {ratio:.2f}x fp32 (< {MIN_SPEEDUP}x) on {src}")


def choose(precision: str, device: torch.device, shape: tuple = ("resnet18", 16, 24, 128)) -> Choice:
    """The autocast a run with ``--precision precision`` uses on ``device``, and why; ``shape``
    (backbone, width, image size, projection dim[, views]) is the model and batch an auto CPU
    probe times."""
    if precision == "fp32":
        return Choice("fp32", "--precision fp32")
    if device.type == "cuda":
        if precision == "auto":
            return Choice("bf16", "auto: bf16 autocast on CUDA")
        return Choice(precision, f"--precision {precision}")
    if precision == "bf16":
        return Choice("bf16", "--precision bf16")
    if precision == "fp16":
        return Choice("fp32", "--precision fp16 is CUDA-only: fp32 on the CPU")
    if device.type != "cpu":
        return Choice("fp32", f"auto: fp32 on {device.type}")
    from core.simclr import dist
    if dist.is_dist():  # ranks probing apart could disagree; they all compute alike
        return Choice("fp32", "auto: fp32 on CPU under torchrun (the ranks would each probe)")
    return cpu_auto(tuple(shape))
