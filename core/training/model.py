"""What a run trains: the model on its device and layout, its wrapper, its optimizer, its EMA."""

from __future__ import annotations

import copy

import torch
from torch import nn

from core.config import PretrainConfig
from core.simclr import dist, layout
from core.simclr.lars import LARS
from core.simclr.models import build_model


def build_training_model(cfg: PretrainConfig, device: torch.device) -> nn.Module:
    """The model a run trains, on ``device``, in the memory layout ``core.simclr.layout`` chooses.

    channels_last (NHWC) on CUDA for the tensor cores, and on CPU where oneDNN's kernels are
    safe and faster in it (width 8 and up: 1.1-1.6x a whole step on 2 cores); NCHW on CPU
    below width 8, where an AVX2 kernel corrupts memory (``docs/BENCHMARKS.md``).
    """
    model: nn.Module = build_model(cfg.backbone, cfg.width, cfg.image_size, cfg.projection_dim).to(device)
    if dist.is_dist():
        # global BatchNorm: statistics over the whole batch, as one process would compute
        model = (nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda"
                 else dist.convert_global_bn(model))
    return layout.to_layout(model, device)


def wrap_model(cfg: PretrainConfig, model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel / DataParallel / torch.compile around the bare model, as asked."""
    if dist.is_dist():
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    elif cfg.data_parallel and torch.cuda.device_count() > 1:
        model = nn.DataParallel(model)
    if cfg.compile:
        model = torch.compile(model)
    return model


def make_optimizer(cfg: PretrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "lars":
        return LARS(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        # The fused kernel updates every tensor in one pass: 3x the per-tensor loop for the
        # cifar10-cpu model (bench/bench_optimizer.py). On CPU it assumes each grad has its
        # parameter's strides, which autograd guarantees (tests/test_runner.py checks it for
        # the channels_last model). CPU support came in torch 2.4: older ones get the loop.
        if all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params):
            try:
                return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
            except RuntimeError:
                pass
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


class EMA:
    """Exponential moving average of the encoder's weights (our reading of AVGSimCLR)."""

    def __init__(self, encoder: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(encoder)
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, encoder: nn.Module) -> None:
        ema_p = list(self.module.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in encoder.parameters()], 1.0 - self.decay)
        for b_ema, b in zip(self.module.buffers(), encoder.buffers()):
            b_ema.copy_(b)
