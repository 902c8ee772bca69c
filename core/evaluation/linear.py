"""Linear classifiers on frozen features: the two linear-evaluation protocols.

* ``lbfgs`` (the default, see docs/EVALUATION.md for the measurement): features are
  standardised with the training split's per-dimension mean and std, then multinomial
  logistic regression with an L2 penalty,

      mean_i CE(W^T x_i + b, y_i) + l2 / 2 * ||W||^2      (the bias is not penalised),

  is minimised to convergence by full-batch L-BFGS with a strong-Wolfe line search. The
  objective is strictly convex, so the answer is its one optimum: no learning rate, batch
  order or epoch count to tune. The L2 strength is chosen from ``L2_GRID`` by accuracy on
  a held-out part of the training split, then the model is refitted on all of it.
* ``adam`` (the seed's protocol): ``nn.Linear`` on the raw features, Adam (lr 3e-4, no
  weight decay), batch 256, a fixed number of epochs, reshuffled every epoch.

The fitting functions never see the test split; callers score it only with the finished
classifier (or, for the live curve, after each epoch without feeding anything back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from core.evaluation.job import StopRequested
from core.evaluation.settings import L2_GRID, PROTOCOLS, LinearSettings  # noqa: F401 - re-exported

#: the L2 sweep stops after this many weaker penalties in a row scored below the best
SWEEP_PATIENCE = 2
#: L-BFGS iterations between progress reports / stop checks (the optimizer keeps its history)
LBFGS_CHUNK = 25


@dataclass
class Standardizer:
    """x -> (x - mean) / std with statistics of a training set. Shapes: mean, std (D,)."""

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, x: Tensor) -> "Standardizer":
        std = x.std(0, unbiased=False)
        # a dimension constant on the training set carries no information: leave it unscaled
        return cls(x.mean(0), torch.where(std > 1e-6, std, torch.ones_like(std)))

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


@dataclass
class LinearClassifier:
    """scores = standardise(x) @ weight.T + bias. Shapes: weight (C, D), bias (C,), as nn.Linear."""

    weight: Tensor
    bias: Tensor
    standardizer: Standardizer | None = None
    info: dict = field(default_factory=dict)

    @torch.no_grad()
    def scores(self, x: Tensor) -> Tensor:
        """Class scores (N, C) for features x (N, D)."""
        if self.standardizer is not None:
            x = self.standardizer(x)
        return torch.addmm(self.bias, x, self.weight.T)


Progress = Callable[[str, int, float], None]   # (phase, iteration or epoch, training loss)


def _never() -> bool:
    return False


def _quiet(phase: str, i: int, loss: float) -> None:  # noqa: ARG001
    pass


# ---------------------------------------------------------------------- L-BFGS
def fit_lbfgs(x: Tensor, y: Tensor, num_classes: int, l2: float, max_iter: int = 1000,
              init: tuple[Tensor, Tensor] | None = None, phase: str = "fit",
              progress: Progress = _quiet, should_stop: Callable[[], bool] = _never) -> LinearClassifier:
    """Multinomial logistic regression by full-batch L-BFGS on (already standardised) x.

    Shapes: x (N, D) float, y (N,) int64, init (C, D) and (C,). Starts from zero or ``init``;
    stops when L-BFGS converges (max |gradient| <= 1e-5 or no more progress) or after
    ``max_iter`` iterations. ``info`` of the result holds the iterations, the final loss and
    max |gradient|.
    """
    d = x.shape[1]
    w0, b0 = init if init is not None else (x.new_zeros(num_classes, d), x.new_zeros(num_classes))
    weight, bias = w0.detach().clone(), b0.detach().clone()  # the closure sets their .grad
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=LBFGS_CHUNK, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-5, tolerance_change=1e-10)

    n = len(y)
    rows = torch.arange(n, device=x.device)

    @torch.no_grad()
    def closure() -> Tensor:
        # loss and gradient in closed form: d/dz mean CE = (softmax(z) - onehot(y)) / N;
        # g.T @ x reads x row by row: several times faster on CPU than autograd's x.T @ g
        logp = torch.addmm(bias, x, weight.T).log_softmax(1)
        loss = -logp[rows, y].mean() + 0.5 * l2 * weight.pow(2).sum()
        g = logp.exp_()
        g[rows, y] -= 1.0
        g /= n
        weight.grad = g.T @ x + l2 * weight
        bias.grad = g.sum(0)
        return loss

    # L-BFGS runs in chunks of LBFGS_CHUNK iterations, keeping its history in opt.state, so a
    # stop request and progress reports come between chunks; its own counter (n_iter) tells
    # whether a chunk ended early, i.e. converged
    done = 0
    while done < max_iter:
        before = opt.state[weight].get("n_iter", 0)
        opt.param_groups[0]["max_iter"] = min(LBFGS_CHUNK, max_iter - done)
        opt.step(closure)
        ran = opt.state[weight]["n_iter"] - before
        done += ran
        loss = opt.state[weight].get("prev_loss")
        if loss is not None:
            progress(phase, done, float(loss))
        if ran < opt.param_groups[0]["max_iter"]:
            break  # converged: L-BFGS stopped before its iteration budget
        if should_stop():
            raise StopRequested
    loss = closure()
    grad = torch.cat([weight.grad.flatten(), bias.grad]).abs().max().item()
    return LinearClassifier(weight.detach(), bias.detach(), None,
                            {"iterations": done, "loss": loss.item(), "max_abs_grad": grad, "l2": l2})


def holdout_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded random (fit, held-out) index split of range(n); the held-out part has >= 1 item."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = min(n - 1, max(1, round(fraction * n)))
    return perm[k:], perm[:k]


def choose_l2(x: Tensor, y: Tensor, num_classes: int, s: LinearSettings,
              progress: Progress = _quiet, should_stop: Callable[[], bool] = _never,
              report: Callable[[float, float], None] | None = None,
              ) -> tuple[float, dict[str, float], LinearClassifier]:
    """The L2 strength with the best accuracy on a held-out part of the training split.

    Standardisation statistics come from the fitting part only. Fits go from the strongest
    penalty to the weakest, each warm-started from the previous optimum; ties go to the
    stronger penalty, and the sweep ends once ``SWEEP_PATIENCE`` weaker penalties in a row
    scored below the best (held-out accuracy rises, peaks and falls along the path; the
    weakest penalties are the slowest fits). Returns (l2, {repr(l2): held-out accuracy}, the classifier fitted with it).
    """
    fit_idx, val_idx = holdout_split(len(y), s.holdout, s.seed)
    fit_idx, val_idx = fit_idx.to(x.device), val_idx.to(x.device)
    std = Standardizer.fit(x[fit_idx])
    xf, yf = std(x[fit_idx]), y[fit_idx]
    xv, yv = std(x[val_idx]), y[val_idx]
    accs: dict[str, float] = {}
    best, best_acc, best_clf, init, worse = s.l2_grid[0], -1.0, None, None, 0
    for l2 in sorted(s.l2_grid, reverse=True):
        clf = fit_lbfgs(xf, yf, num_classes, l2, s.max_iter, init, f"select l2={l2:g}", progress, should_stop)
        init = (clf.weight, clf.bias)
        acc = (clf.scores(xv).argmax(1) == yv).float().mean().item()
        accs[repr(l2)] = acc
        if report is not None:
            report(l2, acc)
        if acc > best_acc:
            best, best_acc, best_clf, worse = l2, acc, clf, 0
        elif acc < best_acc:  # a tie is a plateau, not a decline: keep going
            worse += 1
            if worse >= SWEEP_PATIENCE:
                break
    return best, accs, best_clf


def train_lbfgs(x: Tensor, y: Tensor, num_classes: int, s: LinearSettings,
                progress: Progress = _quiet, should_stop: Callable[[], bool] = _never,
                report: Callable[[float, float], None] | None = None) -> LinearClassifier:
    """The lbfgs protocol on a training split: choose l2 (unless given), refit on all of it."""
    info: dict = {}
    l2, init = s.l2, None
    if l2 is None:
        l2, info["holdout_top1"], chosen = choose_l2(x, y, num_classes, s, progress, should_stop, report)
        # the optimum on 90% of the data is a close start for all of it (the same convex
        # problem up to nearly equal statistics): the refit needs about half the iterations
        init = (chosen.weight, chosen.bias)
    std = Standardizer.fit(x)
    clf = fit_lbfgs(std(x), y, num_classes, l2, s.max_iter, init, "refit", progress, should_stop)
    clf.standardizer = std
    clf.info.update(info)
    return clf


# ---------------------------------------------------------------------- Adam (the seed's protocol)
def train_adam(x: Tensor, y: Tensor, num_classes: int, s: LinearSettings,
               on_epoch: Callable[[int, float, LinearClassifier], None] | None = None,
               should_stop: Callable[[], bool] = _never) -> LinearClassifier:
    """nn.Linear trained with Adam on mini-batches of the raw features (no standardisation).

    Every sample is used in every epoch (the last batch may be smaller). ``on_epoch`` gets
    (epoch, mean training loss over the epoch's samples, the classifier so far).
    """
    g = torch.Generator().manual_seed(s.seed)
    layer = torch.nn.Linear(x.shape[1], num_classes).to(x.device)
    with torch.no_grad():  # seeded init, as nn.Linear's default (uniform +-1/sqrt(D))
        bound = 1.0 / math.sqrt(x.shape[1])
        layer.weight.copy_(torch.empty_like(layer.weight, device="cpu").uniform_(-bound, bound, generator=g))
        layer.bias.copy_(torch.empty_like(layer.bias, device="cpu").uniform_(-bound, bound, generator=g))
    opt = torch.optim.Adam(layer.parameters(), lr=s.lr)
    n = len(y)
    for epoch in range(1, s.epochs + 1):
        perm = torch.randperm(n, generator=g).to(x.device)
        total = torch.zeros((), device=x.device)
        for i in range(0, n, s.batch_size):
            idx = perm[i:i + s.batch_size]
            loss = F.cross_entropy(layer(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        if on_epoch is not None:
            on_epoch(epoch, total.item() / n, _as_classifier(layer))
        if should_stop() and epoch < s.epochs:
            raise StopRequested
    clf = _as_classifier(layer)
    clf.info["epochs"] = s.epochs
    return clf


def _as_classifier(layer: torch.nn.Linear) -> LinearClassifier:
    return LinearClassifier(layer.weight.detach().clone(), layer.bias.detach().clone())


def train_linear(x: Tensor, y: Tensor, num_classes: int, s: LinearSettings, **hooks) -> LinearClassifier:
    """Dispatch on ``s.protocol``."""
    if s.protocol == "lbfgs":
        return train_lbfgs(x, y, num_classes, s, **hooks)
    if s.protocol == "adam":
        return train_adam(x, y, num_classes, s, **hooks)
    raise ValueError(f"unknown linear protocol {s.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
