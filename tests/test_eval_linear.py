"""Linear evaluation: separable data is solved, random labels are not, the optimum is exact,
and nothing about the test split reaches the fit."""

from __future__ import annotations

import math

import pytest
import torch

from core.evaluation.features import Features
from core.evaluation.frozen import linear_eval
from core.evaluation.job import EvalJob
from core.evaluation.linear import (
    LinearSettings,
    Standardizer,
    fit_lbfgs,
    holdout_split,
    train_linear,
)
from core.evaluation.metrics import (
    classification_report,
    confusion_matrix,
    topk_accuracy,
)


def separable(n: int, d: int = 16, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Points labelled by the argmax of a fixed random linear map: linearly separable by construction."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(classes, d, generator=torch.Generator().manual_seed(99))
    x = torch.randn(n, d, generator=g) * 3 + 1.0  # off-centre and scaled: standardisation matters
    return x, (x @ w.T).argmax(1)


@pytest.mark.parametrize("protocol", ["lbfgs", "adam"])
def test_linearly_separable_reaches_100_percent(protocol: str) -> None:
    x, y = separable(1200)
    xt, yt = separable(400, seed=1)
    s = LinearSettings(protocol=protocol, epochs=150, batch_size=64, lr=1e-2)
    clf = train_linear(x, y, 4, s)
    acc = topk_accuracy(clf.scores(xt), yt)
    assert acc >= 0.97, acc
    if protocol == "lbfgs":
        assert clf.info["l2"] <= 1e-3  # separable: the weakest penalties win on held-out data


@pytest.mark.parametrize("protocol", ["lbfgs", "adam"])
def test_random_labels_stay_near_chance(protocol: str) -> None:
    g = torch.Generator().manual_seed(3)
    x, xt = torch.randn(1000, 32, generator=g), torch.randn(2000, 32, generator=g)
    y, yt = torch.randint(0, 5, (1000,), generator=g), torch.randint(0, 5, (2000,), generator=g)
    clf = train_linear(x, y, 5, LinearSettings(protocol=protocol, epochs=30, batch_size=100, lr=1e-2))
    acc = topk_accuracy(clf.scores(xt), yt)
    # chance is 0.2; 2000 test points give a standard error of 0.009
    assert abs(acc - 0.2) < 0.04, acc


def test_lbfgs_reaches_the_optimum_of_the_penalised_objective() -> None:
    """Gradient of mean CE + l2/2 ||W||^2, by autograd on an independent transcription, is ~0."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(500, 12, generator=g, dtype=torch.float64).float()
    y = torch.randint(0, 3, (500,), generator=g)
    l2 = 1e-2
    clf = fit_lbfgs(x, y, 3, l2, max_iter=500)
    w = clf.weight.double().requires_grad_(True)
    b = clf.bias.double().requires_grad_(True)
    logits = x.double() @ w.T + b
    loss = -sum(logits[i, y[i]] - torch.logsumexp(logits[i], 0) for i in range(len(y))) / len(y)
    loss = loss + 0.5 * l2 * (w ** 2).sum()
    loss.backward()
    assert w.grad.abs().max() < 1e-4 and b.grad.abs().max() < 1e-4
    assert clf.info["loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_holdout_split_is_disjoint_and_seeded() -> None:
    fit, val = holdout_split(1000, 0.1, seed=7)
    assert len(val) == 100 and len(fit) == 900
    assert len(set(fit.tolist()) | set(val.tolist())) == 1000
    assert torch.equal(holdout_split(1000, 0.1, seed=7)[1], val)
    assert not torch.equal(holdout_split(1000, 0.1, seed=8)[1], val)


def test_standardizer_uses_given_statistics_and_keeps_constant_dims_finite() -> None:
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    s = Standardizer.fit(x)
    assert s(x)[:, 0].tolist() == [-1.0, 1.0]
    assert torch.isfinite(s(torch.tensor([[2.0, 9.0]]))).all()


class _Source:
    """A FeatureSource stand-in serving fixed features."""

    def __init__(self, train: Features, test: Features) -> None:
        self.splits = {"train": train, "test": test}

    def get(self, split, say=print):
        return self.splits[split]

    def describe(self):
        return {"checkpoint": "last"}


def test_test_split_never_reaches_the_fit(tmp_path) -> None:
    """Changing every test feature and label changes the test scores, not l2, held-out scores or weights."""
    x, y = separable(600, seed=2)
    x = x + 2.0 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4))  # not separable now
    classes = [str(i) for i in range(4)]
    train = Features(x, y, classes)
    test_a = Features(*separable(300, seed=10), classes)
    test_b = Features(torch.randn(250, 16) * 100, torch.randint(0, 4, (250,)), classes)
    results = []
    for i, test in enumerate((test_a, test_b)):
        run = tmp_path / f"run{i}"
        job = EvalJob(run, "linear-last", "linear-eval", "last")
        captured = {}
        assert job.run(lambda j: captured.setdefault("r", linear_eval(j, _Source(train, test), LinearSettings()))) == 0
        results.append(captured["r"])
    a, b = results
    assert a["l2"] == b["l2"] and a["fit"]["holdout_top1"] == b["fit"]["holdout_top1"]
    assert a["fit"]["loss"] == b["fit"]["loss"]
    assert a["test_size"] == 300 and b["test_size"] == 250
    assert a["test_top1"] != b["test_top1"]


def test_metrics_count_every_sample() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(1001, 7, generator=g)
    labels = torch.randint(0, 7, (1001,), generator=g)
    hits1 = sum(int(scores[i].argmax()) == int(labels[i]) for i in range(1001))
    order = scores.argsort(1, descending=True)
    hits5 = sum(int(labels[i]) in order[i, :5].tolist() for i in range(1001))
    assert topk_accuracy(scores, labels, 1) == pytest.approx(hits1 / 1001)
    assert topk_accuracy(scores, labels, 5) == pytest.approx(hits5 / 1001)
    cm = confusion_matrix(scores.argmax(1), labels, 7)
    for t in range(7):
        for p in range(7):
            assert cm[t, p] == sum(int(labels[i]) == t and int(scores[i].argmax()) == p for i in range(1001))
    rep = classification_report(scores, labels, [f"c{i}" for i in range(7)])
    assert sum(sum(r) for r in rep["confusion_matrix"]) == 1001
    for i in range(7):
        support = int((labels == i).sum())
        assert rep["test_per_class"][f"c{i}"] == pytest.approx(cm[i, i].item() / support)
    assert math.isclose(rep["test_top1"], hits1 / 1001, rel_tol=1e-6)


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="lbfgs, adam"):
        train_linear(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), 2, LinearSettings(protocol="sgd"))


def test_l2_sweep_goes_strong_to_weak_and_stops_after_two_worse(monkeypatch) -> None:
    """Held-out accuracy by l2 is scripted: the sweep keeps the best and skips the weakest fits."""
    import core.evaluation.linear as linear
    from core.evaluation.linear import LinearClassifier, choose_l2

    x = torch.linspace(0, 1, 1000)[:, None]
    y = (x[:, 0] > 0.5).long()
    # decision threshold (in standardised units) per l2: 0 is perfect, further away is worse
    threshold = {1.0: -1.5, 0.1: -0.5, 0.01: 0.0, 1e-3: 0.3, 1e-4: 0.6, 1e-5: 0.0, 1e-6: 0.0}
    called = []

    def scripted(xf, yf, num_classes, l2, max_iter, init, *rest):
        called.append(l2)
        key = min(threshold, key=lambda k: abs(math.log10(k) - math.log10(l2)))
        return LinearClassifier(torch.tensor([[0.0], [1.0]]), torch.tensor([0.0, -threshold[key]]))

    monkeypatch.setattr(linear, "fit_lbfgs", scripted)
    best, accs, clf = choose_l2(x, y, 2, LinearSettings())
    assert called == pytest.approx([1.0, 0.1, 0.01, 1e-3, 1e-4])
    assert best == pytest.approx(0.01) and accs[repr(best)] > 0.97
    assert max(accs.values()) == accs[repr(best)]
