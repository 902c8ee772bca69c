"""Two CPU processes x batch 4 must train exactly like one process x batch 8."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core.simclr import dist
from core.simclr.loss import NTXentLoss

try:
    import pytest_timeout  # noqa: F401

    generous_timeout = pytest.mark.timeout(120)
except ImportError:  # the marker would only warn

    def generous_timeout(fn):
        return fn


WORLD = 2
LOCAL_BATCH = 4
TAU = 0.5


class _GatherWithoutAllReduce(torch.autograd.Function):
    """The buggy gather (lightly #1528): backward keeps only the local gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(torch_dist.get_world_size())]
        torch_dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        start = torch_dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def _model_and_data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Same weights and the same global batch of 8 pairs in every process."""
    torch.manual_seed(0)
    model = nn.Linear(8, 6)
    g = torch.Generator().manual_seed(1)
    x_i = torch.randn(WORLD * LOCAL_BATCH, 8, generator=g)
    x_j = x_i + 0.3 * torch.randn(WORLD * LOCAL_BATCH, 8, generator=g)
    return model, x_i, x_j


def _worker(rank: int, port: int, out_dir: str, buggy_gather: bool) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        if buggy_gather:
            # The loss looks the gather up on the module at call time.
            dist.gather_with_grad = _GatherWithoutAllReduce.apply

        model, x_i, x_j = _model_and_data()
        ddp = DistributedDataParallel(model)  # averages gradients over ranks
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        loss = NTXentLoss(TAU)(ddp(x_i[rows]), ddp(x_j[rows]))
        loss.backward()

        # The gather itself: rank order forward, summed gradient backward.
        x = torch.full((2, 3), float(rank + 1), requires_grad=True)
        gathered = dist.gather_with_grad(x)
        weights = torch.arange(12.0).reshape(4, 3) * (rank + 1)
        (gathered * weights).sum().backward()

        result = {
            "rank": dist.get_rank(),
            "world": dist.get_world_size(),
            "is_main": dist.is_main(),
            "loss": loss.detach(),
            "grads": {name: p.grad.clone() for name, p in model.named_parameters()},
            "gathered": gathered.detach(),
            "gather_grad": x.grad.clone(),
            "mean_metric": dist.all_reduce_mean(torch.tensor([float(rank), 10.0])),
        }
        dist.barrier()
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.cleanup()
    # Skip the interpreter's teardown: about one spawned worker in 20 under pytest died there
    # with SIGABRT ("terminate called without an active exception"), after the process group
    # was destroyed and the results saved, and mp.spawn turned that into a failure.
    os._exit(0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_ranks(tmp_path: Path, buggy_gather: bool) -> list[dict]:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), buggy_gather), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


def _single_process() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model, x_i, x_j = _model_and_data()
    loss = NTXentLoss(TAU)(model(x_i), model(x_j))
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.slow
@generous_timeout
def test_two_ranks_match_one_process(tmp_path: Path) -> None:
    results = _run_two_ranks(tmp_path, buggy_gather=False)
    loss_1p, grads_1p = _single_process()

    assert [r["rank"] for r in results] == [0, 1]
    assert [r["world"] for r in results] == [WORLD, WORLD]
    assert [r["is_main"] for r in results] == [True, False]

    mean_loss = sum(r["loss"] for r in results) / WORLD
    torch.testing.assert_close(mean_loss, loss_1p, atol=1e-6, rtol=0)
    for r in results:
        for name, grad in grads_1p.items():
            torch.testing.assert_close(r["grads"][name], grad, atol=1e-6, rtol=0)

    # gather_with_grad: rows in rank order; each rank's input gradient is the sum,
    # over both ranks' losses, of the weights on its own rows.
    expected_gathered = torch.cat([torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)])
    weight_sum = torch.arange(12.0).reshape(4, 3) * (1 + 2)
    for rank, r in enumerate(results):
        torch.testing.assert_close(r["gathered"], expected_gathered)
        torch.testing.assert_close(r["gather_grad"], weight_sum[2 * rank : 2 * rank + 2])
        torch.testing.assert_close(r["mean_metric"], torch.tensor([0.5, 10.0]))


@pytest.mark.slow
@generous_timeout
def test_gather_without_all_reduce_is_caught(tmp_path: Path) -> None:
    """The comparison above has teeth: the buggy gather gives wrong gradients."""
    results = _run_two_ranks(tmp_path, buggy_gather=True)
    loss_1p, grads_1p = _single_process()

    # The forward pass is identical, so the loss alone cannot reveal the bug ...
    mean_loss = sum(r["loss"] for r in results) / WORLD
    torch.testing.assert_close(mean_loss, loss_1p, atol=1e-6, rtol=0)
    # ... but the parameter gradients are wrong.
    worst = max((results[0]["grads"][n] - g).abs().max().item() for n, g in grads_1p.items())
    assert worst > 1e-3


def test_single_process_helpers_are_identity() -> None:
    assert not dist.is_dist()
    assert dist.get_rank() == 0 and dist.get_world_size() == 1 and dist.is_main()
    dist.barrier()
    dist.cleanup()

    x = torch.randn(5, 3, requires_grad=True)
    y = dist.gather_with_grad(x)
    assert y is x
    (2 * y).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((5, 3), 2.0))

    t = torch.tensor([1.0, 2.0])
    assert dist.all_reduce_mean(t) is t


def test_init_from_env_without_torchrun_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert dist.init_from_env() is False
    assert not dist.is_dist()
