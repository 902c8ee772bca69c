"""Everything distributed, in one place.

The rest of the code calls these helpers and reads the same on one CPU and on many
GPUs: outside an initialised process group every function is a cheap no-op (rank 0,
world size 1, gather and reduce return their input).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from core.config import DIST_TIMEOUT_DEFAULT_S, dist_timeout_seconds

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def is_dist() -> bool:
    """Returns True when torch.distributed is available and a process group is up."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Returns this process's rank in the default group, 0 outside a group."""
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    """Returns the number of processes in the default group, 1 outside a group."""
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    """Returns True on the process that should log and save (rank 0)."""
    return get_rank() == 0


def loss_and_stop(loss: Tensor, stop: bool) -> tuple[float, bool]:
    """A step's loss on the host, averaged over the ranks, and whether any rank asked to stop.

    The step's one host sync: one all-reduce and one copy under torchrun, ``loss.item()``
    without. Each rank's NT-Xent is the mean over its own 2N anchors of the gathered batch,
    so the ranks' mean is the loss of the whole global batch (what one process computes),
    and every rank sees the same value, so all skip or stop alike on a non-finite one.
    """
    if not is_dist():
        return loss.item(), bool(stop)
    t = torch.stack([loss.detach().float(), torch.full((), 1.0 if stop else 0.0, device=loss.device)])
    dist.all_reduce(t)
    total, asked = t.tolist()
    return total / get_world_size(), asked > 0


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any (itself without several processes).
    A collective: every rank must call it at the same point."""
    if not is_dist():
        return bool(flag)
    t = torch.full((1,), 1.0 if flag else 0.0, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return bool(t.item())


def barrier() -> None:
    """Waits until every rank reaches this point; does nothing outside a group."""
    if is_dist():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sends every rank's gradient home.

    Each rank's output feeds a loss on that rank, so the gradient with respect to
    this rank's input is the sum, over all ranks, of the gradient each one computed
    for this rank's slice. Returning only the local slice of the local gradient
    (the common bug) drops every other rank's contribution.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        # Clone: autograd may hand the same buffer to other consumers, and the
        # all-reduce works in place.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenates ``x`` from every rank, in rank order, keeping gradients exact.

    Every rank must pass the same shape. The backward all-reduces (sums) the
    incoming gradient across ranks and returns this rank's slice, so a loss built
    on the gathered tensor on each rank, followed by DDP's gradient averaging,
    gives the same parameter gradients as one process on the whole batch.

    Args:
        x: Local tensor. Shape: (N, D).

    Returns:
        The gathered tensor. Shape: (world_size * N, D). Outside a group (or with
        one process) ``x`` itself.
    """
    if get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_mean(t: Tensor) -> Tensor:
    """Averages a tensor over all ranks, for logging metrics (no gradient).

    Args:
        t: Any tensor with the same shape on every rank.

    Returns:
        A new tensor holding the mean over ranks (floating point); ``t`` itself
        outside a group.
    """
    if get_world_size() == 1:
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / get_world_size()


def init_from_env(
    backend: str | None = None, timeout: timedelta = timedelta(minutes=30)
) -> bool:
    """Starts the process group when launched by torchrun.

    Reads RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR / MASTER_PORT through
    ``env://``). With CUDA, binds this process to GPU ``LOCAL_RANK`` first.

    Args:
        backend: "nccl", "gloo", ...; by default nccl if CUDA is available, else gloo.
        timeout: How long collectives wait for a missing rank before failing.

    Returns:
        True when running distributed (group started now or already up), False
        when the torchrun variables are absent.
    """
    if is_dist():
        return True
    if not all(name in os.environ for name in _TORCHRUN_VARS):
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
    return True


DEFAULT_TIMEOUT_SECONDS = DIST_TIMEOUT_DEFAULT_S


def timeout_from_env() -> timedelta:
    """How long collectives wait for a rank that went silent: SIMCLR_DIST_TIMEOUT seconds
    (``core.config.dist_timeout_seconds``, torch-free, so queueing checks it too).

    A rank that dies is noticed at once on one machine (its sockets close); one that hangs,
    or a machine that vanishes, is given up on after this long, and the run fails.
    """
    return timedelta(seconds=dist_timeout_seconds())


def cleanup() -> None:
    """Tears the process group down; does nothing outside a group."""
    if is_dist():
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; every rank's output depends on every rank's input, so the
    gradient of the input is the sum over ranks of the output gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics span every rank's batch (any device, any backend).

    torch's SyncBatchNorm is CUDA-only; this one works with gloo on CPU too, so DDP on
    CPU computes exactly what one process computes on the concatenated batch. Statistics
    come from all-reduced per-channel sums (with gradients flowing through the reduction).
    Shape: (N, C) or (N, C, ...) -> same.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_dist()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        count = x.new_full((1,), x.numel() / x.shape[1], dtype=torch.float32)  # a fill on the device, no host copy
        xf = x.float()
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        stats = _AllReduceSum.apply(stats)
        c = x.shape[1]
        n = stats[-1]
        mean, sq = stats[:c] / n, stats[c:2 * c] / n
        var = (sq - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), m)
                self.num_batches_tracked.add_(1)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_global_bn(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every BatchNorm layer by GlobalBatchNorm sharing its parameters and buffers.

    The same Parameter objects are kept, so an optimizer made before still updates them.
    """
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_global_bn(child))
    return module
