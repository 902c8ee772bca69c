"""Gradient caching (Gao et al., 2021): the exact gradient of a large contrastive batch in the
memory of one chunk (``--micro-batch M``).

NT-Xent couples every pair of the batch, so the batch cannot simply be split into gradient
accumulation steps. It can be split at the projections z, though: the loss needs only z, and
the parameters' gradient is sum over chunks of (dz_chunk/dtheta)^T dL/dz_chunk. So:

1. without autograd, run the model on each chunk of M pairs (2M interleaved views, pairs kept
   together) and concatenate the projections z of all 2B views;
2. make z a leaf, compute the loss on the whole batch exactly as the plain step does (across
   ranks too: the loss gathers z) and backward to dL/dz; nothing of the model is in that graph;
3. for each chunk, run the model again with autograd and backward ``z_chunk`` with its slice of
   dL/dz; the parameters' gradients add up over the chunks.

BatchNorm statistics are per chunk: the result is what B/M devices of M pairs each, with local
BatchNorm and gathered negatives, compute (tests/test_gradcache.py). Under DDP each rank
micro-batches its own share and the chunks' BatchNorm spans chunk k of every rank.

Running statistics. Both passes run the model in training mode, so both would update
BatchNorm's running mean/var. We save every BatchNorm buffer (running_mean, running_var,
num_batches_tracked) before pass 1 and put them back after it, so only pass 3 updates them:
once per chunk, as the chunks run once each would. We chose this over setting momentum to 0
for pass 1 because it is exact for every BatchNorm: momentum=None (a cumulative average whose
weight comes from num_batches_tracked, which momentum 0 would still count up) and our
GlobalBatchNorm alike; the buffers are a few KB.

The loss is scaled before dL/dz is taken (``scaler.scale(loss).backward()``), so every chunk
backward carries the scaled gradient exactly as the plain step's backward does, and
``GradScaler.step`` unscales and skips non-finite steps as it does there. DDP all-reduces on
every backward: all chunks but the last run under ``no_sync()``, so gradients accumulate
locally and are all-reduced once, with the last chunk.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn


def bn_buffers(model: nn.Module) -> list[Tensor]:
    """Every BatchNorm running buffer of ``model`` (running_mean, running_var, num_batches_tracked)."""
    return [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]


def cached_step(model: nn.Module, criterion: nn.Module, x: Tensor, pairs: int,
                scaler: torch.amp.GradScaler, amp: torch.dtype | None) -> tuple[Tensor, Tensor]:
    """Forward, loss and backward of one batch, ``pairs`` pairs at a time.

    Args:
        model: the (possibly wrapped) SimCLRModel: ``model(x) -> (h, z)``.
        criterion: the NT-Xent loss, ``criterion(z_i, z_j)``.
        x: the interleaved views (v1_0, v2_0, v1_1, ...). Shape: (2B, C, H, W).
        pairs: M, pairs per chunk; divides B.
        scaler: the run's GradScaler (scales the loss before dL/dz is taken).
        amp: the autocast dtype, None for fp32.

    Returns:
        The whole batch's loss (detached) and its projections z (detached). Shape: (), (B, 2, D).
        The parameters' .grad hold the (scaled) gradient of the loss, as after ``backward``.
    """
    chunks = x.split(2 * pairs)
    autocast = lambda: torch.autocast(x.device.type, dtype=amp or torch.float32, enabled=amp is not None)  # noqa: E731
    buffers = bn_buffers(model)
    kept = [b.clone() for b in buffers]
    with torch.no_grad(), autocast():
        z = torch.cat([model(c)[1] for c in chunks])
    with torch.no_grad():
        for b, k in zip(buffers, kept):
            b.copy_(k)
    z.requires_grad_(True)
    pz = z.unflatten(0, (-1, 2))
    loss = criterion(pz[:, 0], pz[:, 1])
    scaler.scale(loss).backward()
    cached = z.grad.split(2 * pairs)
    no_sync = getattr(model, "no_sync", None)  # DDP (also through torch.compile's wrapper)
    for k, (c, g) in enumerate(zip(chunks, cached)):
        with no_sync() if no_sync is not None and k < len(chunks) - 1 else nullcontext():
            with autocast():
                _, zc = model(c)
            zc.backward(g.to(zc.dtype))
    return loss.detach(), pz.detach()
