"""NT-Xent against an independent transcription of the SimCLR paper."""

from __future__ import annotations

import math

import pytest
import torch

from core.simclr.loss import NTXentLoss


def paper_loss(z_i: torch.Tensor, z_j: torch.Tensor, tau: float) -> float:
    """SimCLR Algorithm 1, in plain Python floats (no torch maths).

    Samples are interleaved as in the paper: z_{2k-1} = z_i[k], z_{2k} = z_j[k]
    (0-based here: z[2k] and z[2k+1]).
    """
    rows_i, rows_j = z_i.double().tolist(), z_j.double().tolist()
    z = [row for pair in zip(rows_i, rows_j) for row in pair]
    two_n = len(z)

    def cos(u: list[float], v: list[float]) -> float:
        dot = sum(a * b for a, b in zip(u, v))
        return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))

    s = [[cos(z[a], z[b]) for b in range(two_n)] for a in range(two_n)]

    def ell(i: int, j: int) -> float:
        denom = sum(math.exp(s[i][k] / tau) for k in range(two_n) if k != i)
        return -math.log(math.exp(s[i][j] / tau) / denom)

    total = sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(two_n // 2))
    return total / two_n


@pytest.mark.parametrize("n", [1, 2, 5, 16])
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_matches_paper_algorithm(n: int, tau: float) -> None:
    g = torch.Generator().manual_seed(1000 * n + int(10 * tau))
    z_i = torch.randn(n, 7, generator=g)
    z_j = z_i + 0.5 * torch.randn(n, 7, generator=g)
    loss = NTXentLoss(tau)(z_i, z_j)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(paper_loss(z_i, z_j, tau), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_identical_embeddings_give_log_2n_minus_1(n: int, tau: float) -> None:
    z = torch.randn(1, 5).expand(n, 5)
    loss = NTXentLoss(tau)(z, z.clone())
    assert loss.item() == pytest.approx(math.log(2 * n - 1), abs=1e-5)


@pytest.mark.parametrize("n", [1, 4, 10])
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_orthonormal_pairs_closed_form(n: int, tau: float) -> None:
    # Rows of a random orthogonal matrix: each anchor sees its partner at cosine 1
    # and the 2N - 2 other embeddings at cosine 0.
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(n)))
    z = q[:n]
    expected = -1 / tau + math.log(math.exp(1 / tau) + 2 * n - 2)
    loss = NTXentLoss(tau)(z, z.clone())
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(0)
    z_i = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z_j = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    loss_fn = NTXentLoss(0.3)
    assert loss_fn(z_i, z_j).dtype == torch.float64
    assert torch.autograd.gradcheck(loss_fn, (z_i, z_j))


def test_stable_at_small_temperature_with_large_logits() -> None:
    # Logits reach 1/tau = 100; exp(100) overflows float32, so only a
    # log-sum-exp formulation stays finite.
    g = torch.Generator().manual_seed(3)
    z_i = (1e4 * torch.randn(6, 8, generator=g)).requires_grad_()
    z_j = (z_i.detach() + 1e3 * torch.randn(6, 8, generator=g)).requires_grad_()
    loss = NTXentLoss(0.01)(z_i, z_j)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z_i.grad).all() and torch.isfinite(z_j.grad).all()
    assert loss.item() == pytest.approx(paper_loss(z_i, z_j, 0.01), rel=1e-4, abs=1e-4)


def test_autocast_bfloat16_computes_in_float32() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 8)
    x_i, x_j = torch.randn(10, 16), torch.randn(10, 16)
    loss_fn = NTXentLoss(0.2)

    reference = loss_fn(head(x_i), head(x_j))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_i, z_j = head(x_i), head(x_j)
        assert z_i.dtype == torch.bfloat16  # autocast really is on
        loss = loss_fn(z_i, z_j)
    assert loss.dtype == torch.float32
    # Inside, the maths is float32: same as the loss on the upcast embeddings ...
    exact = loss_fn(z_i.float(), z_j.float())
    assert loss.item() == pytest.approx(exact.item(), abs=1e-6)
    # ... and only bf16 rounding of the embeddings separates it from fp32.
    assert loss.item() == pytest.approx(reference.item(), abs=2e-2)


def test_invariant_to_embedding_scale() -> None:
    g = torch.Generator().manual_seed(5)
    z_i, z_j = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    loss_fn = NTXentLoss(0.5)
    base = loss_fn(z_i, z_j).item()
    for scale in (1e-3, 7.0, 1e3):
        assert loss_fn(scale * z_i, scale * z_j).item() == pytest.approx(base, abs=1e-5)
    per_row = torch.rand(6, 1, generator=g) * 10 + 0.1
    assert loss_fn(per_row * z_i, z_j).item() == pytest.approx(base, abs=1e-5)


def test_gradient_flows_to_both_views() -> None:
    z_i = torch.randn(4, 5, requires_grad=True)
    z_j = torch.randn(4, 5, requires_grad=True)
    NTXentLoss()(z_i, z_j).backward()
    assert z_i.grad.abs().sum() > 0 and z_j.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("shape_i", "shape_j"),
    [((4, 8), (5, 8)), ((4, 8), (4, 9)), ((8,), (8,)), ((2, 4, 8), (2, 4, 8)), ((0, 8), (0, 8))],
)
def test_bad_shapes_raise(shape_i: tuple[int, ...], shape_j: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        NTXentLoss()(torch.randn(shape_i), torch.randn(shape_j))


@pytest.mark.parametrize("tau", [0.0, -0.5, float("nan"), float("inf")])
def test_bad_temperature_raises(tau: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(tau)
