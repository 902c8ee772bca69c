"""Where training runs: the device, its autocast dtype, and the CPU allocator set-up."""

from __future__ import annotations

import os
import sys

import torch

from core.config import PretrainConfig
from core.errors import DataError
from core.simclr import dist


def pick_device(cfg: PretrainConfig) -> torch.device:
    """``--device`` (auto: CUDA when visible); under torchrun with CUDA, this rank's GPU."""
    if dist.is_dist() and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"--device {cfg.device} asked for, but no CUDA device is visible; use --device cpu")
    return torch.device(cfg.device)


def choose_kernels(cfg: PretrainConfig, device: torch.device) -> str:
    """How CUDA picks its kernels for this run, and that in one line (nothing to do on a CPU).

    By default cuDNN autotunes each convolution once for the run's fixed shapes
    (``cudnn.benchmark``): faster steps, but the kernel it picks, and a few reductions with
    atomics, may differ from one process to the next, so a resumed run matches an
    uninterrupted one to float tolerance, not bit for bit. ``--deterministic`` asks for
    deterministic algorithms everywhere (``torch.use_deterministic_algorithms``, warning
    where an op has none), cuDNN's deterministic kernels and cuBLAS's fixed workspace
    (``CUBLAS_WORKSPACE_CONFIG``, set here before the run's first matmul), so the resume is
    exact as on a CPU, whose kernels are deterministic for a fixed thread count."""
    if device.type != "cuda":
        return "cpu kernels (deterministic for a fixed thread count)"
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        return "deterministic CUDA kernels (--deterministic): a resume is bit-identical"
    torch.backends.cudnn.benchmark = True
    return "cuDNN autotuning for the run's fixed shapes (a resume equals the run to float tolerance; --deterministic for bit-identical)"


def amp_dtype(cfg: PretrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: fp32) of ``--precision`` on ``device``: explicit fp32/bf16 as
    asked, fp16 on CUDA only; auto is bf16 on CUDA and, on a CPU, bf16 only where this
    processor is measured to be fast at it (``core.training.precision``)."""
    return precision_choice(cfg, device).dtype


def precision_choice(cfg: PretrainConfig, device: torch.device):
    """What ``amp_dtype`` decided and why (meta.json's ``precision``): a ``precision.Choice``."""
    from core.training.precision import choose, probe_views
    views = probe_views(cfg.batch_size, cfg.micro_batch, cfg.image_size)
    return choose(cfg.precision, device, (cfg.backbone, cfg.width, cfg.image_size, cfg.projection_dim, views))


def keep_freed_memory() -> bool:
    """Serve big CPU tensors from the heap and keep freed memory there (glibc only).

    glibc's malloc hands every block over 32 MB (activations of a CIFAR batch are 30-130 MB)
    its own mmap and returns it to the kernel on free, so each training step faults all its
    activation memory in again, page by page: on 2 cores, 0.35 s of a 0.9 s step at width
    16 and 2.8 s of a 9.4 s step at width 64 (batch 256) were the kernel zeroing pages.
    With mmap off, trimming at 1 GiB and one arena, the freed blocks are reused: steps got
    1.2x faster, and the peak resident memory grew by what the heap cannot reuse (ResNet-18
    width 16 at batch 256, 32 px, 1.8 -> 2.2 GB, width 64 at batch 512 5.7 -> 9.7 GB; docs/BENCHMARKS.md).
    ``SIMCLR_KEEP_FREED_MEMORY=0`` in the environment turns it off. Returns whether it applied.
    """
    import ctypes
    import platform
    if os.environ.get("SIMCLR_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8  # <malloc.h>
    # one arena: with per-thread arenas each kept its own freed blocks (+1 GB at width 64)
    return (bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
            and bool(libc.mallopt(m_arena_max, 1)))
