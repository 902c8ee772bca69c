"""The memory layout a model runs in: channels_last where it is safe and faster, else NCHW.

oneDNN (PyTorch's CPU convolutions) picks its kernels per CPU. On AVX2 CPUs without
AVX-512 (many AMD EPYCs), torch 2.14.1 / oneDNN 3.12, a 1x1 stride-2 convolution in
channels_last with 2 to 7 input channels corrupts the heap in its backward pass: the
process aborts ("double free or corruption"), segfaults, or hangs at 100% CPU. In our
ResNets that is the first downsample branch at widths below 8. Convolutions with 8 or more
input channels (AVX2's eight fp32 lanes), 3x3 convolutions of any channel count and the
first convolution (3 colour channels) pass, on AVX2, AVX-512 and AVX kernels alike
(``bench/layout_probe.py`` runs every case in its own process; docs/BENCHMARKS.md has the
table). Below width 8 channels_last gains little or loses (0.82-1.35x of NCHW on 2 cores,
a whole forward + backward, steps under 0.15 s), so on CPU every model with a convolution
after the first that sees fewer than 8 channels runs in NCHW. On CUDA (cuDNN) models run
in channels_last, which the tensor cores want.

``SIMCLR_CHANNELS_LAST=0`` or ``=1`` in the environment overrides the choice (``auto``,
the default, is the rule above), for a CPU whose kernels break somewhere else.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from core.errors import ConfigError

#: a convolution after the first with fewer input channels than this keeps a CPU model in NCHW
MIN_CHANNELS = 8


def channels_last_hazards(model: nn.Module) -> list[str]:
    """Names of the convolutions that rule out channels_last on CPU (empty: it is safe).

    Every ``Conv2d`` but the first (the input convolution, which sees the image's colour
    channels) with fewer than ``MIN_CHANNELS`` input channels.
    """
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return [name for name, m in convs[1:] if m.in_channels < MIN_CHANNELS]


def memory_format(model: nn.Module, device: torch.device | str) -> torch.memory_format:
    """The layout ``model`` (and its input) should be in on ``device``."""
    override = os.environ.get("SIMCLR_CHANNELS_LAST", "auto").strip().lower() or "auto"
    if override not in ("0", "1", "auto"):
        raise ConfigError(f"SIMCLR_CHANNELS_LAST={override!r} in the environment: use 0 (NCHW), 1 (channels_last) "
                         f"or auto, or unset it")
    if override != "auto":
        return torch.channels_last if override == "1" else torch.contiguous_format
    if torch.device(device).type == "cuda":
        return torch.channels_last
    return torch.contiguous_format if channels_last_hazards(model) else torch.channels_last


def to_layout(model: nn.Module, device: torch.device | str) -> nn.Module:
    """``model`` moved to its layout on ``device`` (in place, as ``Module.to``)."""
    return model.to(memory_format=memory_format(model, device))
