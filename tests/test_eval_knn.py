"""Weighted kNN against a brute-force transcription: loop over test points, sort, vote."""

from __future__ import annotations

import math

import pytest
import torch

from core.simclr.knn import knn_accuracy, knn_predict


def brute_force_scores(bank: list[list[float]], bank_labels: list[int], queries: list[list[float]],
                       num_classes: int, k: int, t: float) -> list[list[float]]:
    """For each query: cosine similarity to every bank point, sorted, the k best vote exp(s/T)."""
    def cos(u, v):
        return sum(a * b for a, b in zip(u, v)) / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))

    out = []
    for q in queries:
        sims = sorted(((cos(q, b), lab) for b, lab in zip(bank, bank_labels)), key=lambda p: p[0], reverse=True)
        votes = [0.0] * num_classes
        for s, lab in sims[:k]:
            votes[lab] += math.exp(s / t)
        out.append(votes)
    return out


@pytest.mark.parametrize("k,t", [(1, 0.1), (7, 0.1), (20, 0.5), (500, 0.07)])
def test_matches_brute_force(k: int, t: float) -> None:
    g = torch.Generator().manual_seed(k)
    bank = torch.randn(120, 6, generator=g, dtype=torch.float64).float()
    labels = torch.randint(0, 4, (120,), generator=g)
    queries = torch.randn(33, 6, generator=g, dtype=torch.float64).float()
    ref = brute_force_scores(bank.tolist(), labels.tolist(), queries.tolist(), 4, k, t)
    got = knn_predict(bank, labels, queries, num_classes=4, k=k, temperature=t, chunk=10)
    assert got.shape == (33, 4)
    assert torch.allclose(got.double(), torch.tensor(ref, dtype=torch.float64), rtol=1e-4, atol=1e-5)
    ref_acc = sum(max(range(4), key=lambda c: row[c]) == lab for row, lab in zip(ref, queries_labels(queries))) / 33
    assert knn_accuracy(bank, labels, queries, queries_labels(queries), 4, k, t) == pytest.approx(ref_acc)


def queries_labels(queries: torch.Tensor) -> torch.Tensor:
    return (queries[:, 0] > 0).long() + 2 * (queries[:, 1] > 0).long()
