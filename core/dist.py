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


def cleanup() -> None:
    """Tears the process group down; does nothing outside a group."""
    if is_dist():
        dist.destroy_process_group()
