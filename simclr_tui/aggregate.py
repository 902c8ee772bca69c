"""The seeds of one setting as one number and one curve: mean ± sample standard deviation.

Plain Python (the TUI imports neither numpy nor torch); tests/tui/test_tui_aggregate.py
checks it against numpy. A curve is a pair of x (epoch) and y sequences. Seeds are averaged
on a common x grid: the x values they logged when those are few (seeds of one setting log
at the same epochs), else evenly spaced points over their whole range. Each seed is
linearly interpolated there, and a point averages the seeds whose range covers it, so a seed
still running (or one that stopped early) counts where it has data and nowhere else.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Curve = tuple[Sequence[float], Sequence[float]]


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (n - 1) of n values; std is None for n = 1.
    ``pruned``: members left out because their sweep pruned them (said, never averaged)."""

    mean: float
    std: float | None
    n: int
    pruned: int = 0

    def text(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        """``0.532 ± 0.004 (n=3)``; one value: ``0.532 (n=1)``; ``(n=3, 2 pruned)``."""
        mean = f"{self.mean * scale:.{digits}f}"
        spread = f" ± {self.std * scale:.{digits}f}" if self.std is not None else ""
        left_out = f", {self.pruned} pruned" if self.pruned else ""
        return f"{mean}{spread}{unit} (n={self.n}{left_out})"


def mean_std(values: Iterable[float | None]) -> Stat | None:
    """The Stat of the values that are not None, or None when there are none."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    n = len(vals)
    mean = math.fsum(vals) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else None
    return Stat(mean, std, n)


def interpolate(xs: Sequence[float], ys: Sequence[float], at: float) -> float | None:
    """y at ``at`` by linear interpolation between the neighbouring points (xs ascending);
    None outside [xs[0], xs[-1]]. Where x repeats, the last point at that x counts."""
    if not xs or at < xs[0] or at > xs[-1]:
        return None
    i = bisect.bisect_right(xs, at)  # xs[i - 1] <= at < xs[i]
    if i == len(xs) or xs[i - 1] == at:
        return float(ys[i - 1])
    x0, x1 = xs[i - 1], xs[i]
    t = (at - x0) / (x1 - x0)
    return float(ys[i - 1]) + t * (float(ys[i]) - float(ys[i - 1]))


def common_grid(curves: Sequence[Curve], points: int = 200) -> list[float]:
    """Where the seeds are compared: every x they logged when there are at most ``points``
    distinct ones, else ``points`` evenly spaced x over [smallest x, largest x]."""
    distinct = sorted({float(x) for xs, _ in curves for x in xs})
    if len(distinct) <= points:
        return distinct
    lo, hi = distinct[0], distinct[-1]
    return [lo + (hi - lo) * i / (points - 1) for i in range(points)]


@dataclass(frozen=True)
class Band:
    """The mean curve of some seeds and its spread: at each x, the mean, the sample std
    (None where fewer than two seeds cover x) and how many seeds cover it."""

    xs: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float | None, ...]
    count: tuple[int, ...]

    def lower(self) -> tuple[float, ...]:
        return tuple(m - (s or 0.0) for m, s in zip(self.mean, self.std, strict=True))

    def upper(self) -> tuple[float, ...]:
        return tuple(m + (s or 0.0) for m, s in zip(self.mean, self.std, strict=True))


def _sorted(curve: Curve) -> tuple[list[float], list[float]]:
    xs, ys = curve
    if all(a <= b for a, b in itertools.pairwise(xs)):
        return list(xs), list(ys)
    pairs = sorted(zip(xs, ys), key=lambda p: p[0])  # stable: the later of equal x stays last
    return [p[0] for p in pairs], [p[1] for p in pairs]


def mean_curve(curves: Sequence[Curve], points: int = 200) -> Band:
    """The seeds' mean ± std on their common grid (see the module docstring)."""
    curves = [_sorted(c) for c in curves if len(c[0])]
    xs, means, stds, counts = [], [], [], []
    for x in common_grid(curves, points):
        stat = mean_std(interpolate(cx, cy, x) for cx, cy in curves)
        if stat is not None:
            xs.append(x)
            means.append(stat.mean)
            stds.append(stat.std)
            counts.append(stat.n)
    return Band(tuple(xs), tuple(means), tuple(stds), tuple(counts))
