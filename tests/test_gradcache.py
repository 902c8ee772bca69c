"""--micro-batch M (gradient caching, core.training.gradcache): one step at batch B equals B/M
devices of M pairs each, with local BatchNorm and negatives gathered across them.

The reference is built in one process: the model runs on each chunk of M pairs separately
(so BatchNorm's statistics are the chunk's, as on a device holding only that chunk) and the
NT-Xent loss is computed on the concatenated projections (the negatives a gather across the
B/M devices would give). That IS the B/M-devices computation: the gathered loss's gradient,
averaged by DDP over devices, is the gradient of the loss on the concatenated batch
(core.simclr.loss, tests/test_dist.py). A two-rank gloo test checks DDP's no_sync path too.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from torch import nn

from core import cli
from core.config import PretrainConfig
from core.errors import ConfigError
from core.runs import read_json, read_metrics
from core.simclr import dist
from core.simclr.lars import LARS
from core.simclr.loss import NTXentLoss
from core.simclr.models import build_model
from core.training.checkpoint import load_checkpoint
from core.training.gradcache import bn_buffers, cached_step
from core.training.model import EMA
from tests.helpers import stop_at_step

B = 8  # pairs
TAU = 0.5
NO_SCALER = torch.amp.GradScaler("cpu", enabled=False)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet18", 4, 16, 16).train()


def _views(pairs: int = B, seed: int = 1) -> torch.Tensor:
    """Interleaved views (v1_0, v2_0, v1_1, ...), as the trainer makes them. Shape: (2B, 3, 16, 16)."""
    g = torch.Generator().manual_seed(seed)
    v1 = torch.randn(pairs, 3, 16, 16, generator=g)
    v2 = v1 + 0.3 * torch.randn(pairs, 3, 16, 16, generator=g)
    return torch.stack((v1, v2), 1).flatten(0, 1)


def _reference(model: nn.Module, x: torch.Tensor, pairs: int) -> torch.Tensor:
    """B/M devices of M pairs: the model on each chunk alone (its own BatchNorm statistics, its
    running stats updated once), the loss on the concatenated z (gathered negatives)."""
    z = torch.cat([model(c)[1] for c in x.split(2 * pairs)]).unflatten(0, (-1, 2))
    loss = NTXentLoss(TAU)(z[:, 0], z[:, 1])
    loss.backward()
    return loss.detach()


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pairs", [B // 2, B // 4])  # B/M = 2 and 4 devices
def test_gradient_and_running_stats_equal_b_over_m_devices(pairs):
    x = _views()
    ref, cached = _model(), _model()
    loss_ref = _reference(ref, x, pairs)
    loss, z = cached_step(cached, NTXentLoss(TAU), x, pairs, NO_SCALER, None)
    _close(loss, loss_ref)  # the logged loss is the whole batch's
    assert z.shape == (B, 2, 16) and not z.requires_grad
    for (name, p), q in zip(ref.named_parameters(), cached.parameters()):
        _close(q.grad, p.grad)
    # running stats updated once per chunk (the no-grad pass leaves them alone)
    for a, b in zip(bn_buffers(ref), bn_buffers(cached)):
        if a.is_floating_point():
            _close(b, a)
        else:
            assert torch.equal(a, b)
    assert int(bn_buffers(cached)[2]) == B // pairs  # num_batches_tracked: one per chunk


def test_a_lars_step_with_ema_equals_b_over_m_devices():
    pairs = 2
    models = _model(), _model()
    opts = [LARS(m.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-6) for m in models]
    emas = [EMA(m.encoder, 0.9) for m in models]
    # one step: LARS at lr 0.5 amplifies float rounding (1e-7) of later steps' BatchNorm
    # parameters to 1e-5, in either computation alike (the resume test below checks many steps)
    _reference(models[0], _views(), pairs)
    cached_step(models[1], NTXentLoss(TAU), _views(), pairs, NO_SCALER, None)
    for m, o, e in zip(models, opts, emas):
        o.step()
        e.update(m.encoder)
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        _close(b.float(), a.float())
    for a, b in zip(emas[0].module.state_dict().values(), emas[1].module.state_dict().values()):
        _close(b.float(), a.float())


def test_the_scaled_loss_gives_scaled_gradients():
    """fp16's GradScaler: dL/dz is taken of the scaled loss, so every chunk carries the scale
    and GradScaler.step unscales exactly as in the plain step."""
    x, pairs = _views(), 4
    ref, cached = _model(), _model()
    _reference(ref, x, pairs)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    cached_step(cached, NTXentLoss(TAU), x, pairs, scaler, None)
    for p, q in zip(ref.parameters(), cached.parameters()):
        _close(q.grad, 1024.0 * p.grad)
    opt = torch.optim.SGD(cached.parameters(), lr=0.0)
    scaler.unscale_(opt)
    for p, q in zip(ref.parameters(), cached.parameters()):
        _close(q.grad, p.grad)


def test_micro_batch_is_validated():
    base = PretrainConfig(batch_size=32)
    assert base.validate().micro_batch is None
    base.replace(micro_batch=8).validate()
    for bad in (1, 0, 5, 64):
        with pytest.raises(ConfigError, match="--micro-batch"):
            base.replace(micro_batch=bad).validate()


# ------------------------------------------------------------------- DDP: no_sync, one all-reduce
WORLD = 2


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model = _model()
        ddp = nn.parallel.DistributedDataParallel(model)
        x = _views(2 * B).split(2 * B)[rank]  # this rank's B pairs of the global 2B
        loss, _ = cached_step(ddp, NTXentLoss(TAU), x, B // 4, NO_SCALER, None)
        torch.save({"loss": loss, "grads": [p.grad.clone() for p in model.parameters()]},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.cleanup()
    os._exit(0)  # as tests/test_dist.py: skip the teardown that sometimes aborts a spawned worker


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_micro_batched_equal_eight_devices(tmp_path: Path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    ref = _model()
    loss_ref = _reference(ref, _views(2 * B), B // 4)  # 8 chunks of 2 pairs, in rank order
    _close(sum(r["loss"] for r in results) / WORLD, loss_ref)
    for r in results:
        for g, p in zip(r["grads"], ref.parameters()):
            _close(g, p.grad)


# ------------------------------------------------------------------------- the trainer
TINY = ["--preset", "tiny", "--knn-k", "10"]


def test_one_chunk_trains_as_the_plain_step(tmp_path, monkeypatch):
    """--micro-batch B (one chunk) is the plain step through z's cached gradient."""
    monkeypatch.setenv("SIMCLR_CACHE", str(tmp_path / ".cache"))
    args = ["pretrain", *TINY, "--max-steps", "3", "--knn-every", "0"]
    assert cli.main([*args, "--run-dir", str(tmp_path / "plain")]) == 0
    assert cli.main([*args, "--micro-batch", "32", "--run-dir", str(tmp_path / "cached")]) == 0
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt")["model"] for d in ("plain", "cached"))
    for k in a:
        torch.testing.assert_close(b[k].float(), a[k].float(), rtol=1e-4, atol=1e-5)


def test_stop_then_resume_equals_uninterrupted_micro_batched(tmp_path, monkeypatch):
    """tests/test_runner.py's resume test, micro-batched (4 chunks of 8 pairs)."""
    monkeypatch.setenv("SIMCLR_CACHE", str(tmp_path / ".cache"))
    args = ["pretrain", *TINY, "--epochs", "3", "--ema", "0.9", "--optimizer", "lars", "--lr", "0.5",
            "--lr-scaling", "none", "--warmup-epochs", "1", "--micro-batch", "8"]
    assert cli.main([*args, "--run-dir", str(tmp_path / "full")]) == 0

    put_back = stop_at_step(monkeypatch, 11)  # mid-epoch 2
    assert cli.main([*args, "--run-dir", str(tmp_path / "cut")]) == 0
    assert read_json(tmp_path / "cut" / "status.json")["step"] == 11
    put_back()
    assert cli.main(["pretrain", "--resume", str(tmp_path / "cut")]) == 0
    assert read_json(tmp_path / "cut" / "status.json")["state"] == "finished"
    assert read_json(tmp_path / "cut" / "config.json")["micro_batch"] == 8

    full, cut = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("full", "cut"))
    for part in ("model", "ema"):
        for k in full[part]:
            assert torch.equal(full[part][k], cut[part][k]), (part, k)
    rf, _ = read_metrics(tmp_path / "full" / "metrics.jsonl")
    rc, _ = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    loss = lambda rs: [(r["step"], r["value"]) for r in rs if r["tag"] == "train/loss"]  # noqa: E731
    assert loss(rc) == loss(rf) and [s for s, _ in loss(rc)] == list(range(1, 25))
