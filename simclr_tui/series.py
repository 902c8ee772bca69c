"""Bounded metric histories and the little bit of maths the plots need.

A run logs `train/loss` every step, so a long run has hundreds of thousands of points.
The UI never needs more points than a terminal has columns, so each metric is kept as at
most `cap` bucket means: when the buffer fills, neighbouring buckets are merged pairwise
and every later bucket covers twice as many records. Memory per metric is O(cap) however
long the run; the extremes and the last value are tracked on the raw records, so "best
accuracy" and "last loss" are exact even when the curve is averaged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SPARK_CHARS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class SeriesData:
    """An immutable copy of a series for the UI thread: x (epoch or step) and y."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]
    last: float | None
    vmin: float | None
    vmax: float | None
    count: int


class Series:
    """A metric's history with at most ``cap`` stored points (bucket means).

    Only ever touched by the poll worker thread; the UI gets `SeriesData` copies.
    """

    __slots__ = ("cap", "xs", "ys", "stride", "_bx", "_by", "_bn", "count", "last", "last_x", "vmin", "vmax")

    def __init__(self, cap: int = 512) -> None:
        if cap < 4 or cap % 2:
            raise ValueError("cap must be an even number >= 4")
        self.cap = cap
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.stride = 1  # raw records per stored point
        self._bx = 0.0  # running sums of the open bucket
        self._by = 0.0
        self._bn = 0
        self.count = 0
        self.last: float | None = None
        self.last_x: float | None = None
        self.vmin: float | None = None
        self.vmax: float | None = None

    def add(self, x: float, y: float) -> None:
        if not math.isfinite(y):
            return  # a NaN loss is shown by the run's state/log, not as a hole in the axis
        self.count += 1
        self.last, self.last_x = y, x
        self.vmin = y if self.vmin is None or y < self.vmin else self.vmin
        self.vmax = y if self.vmax is None or y > self.vmax else self.vmax
        self._bx += x
        self._by += y
        self._bn += 1
        if self._bn >= self.stride:
            self.xs.append(self._bx / self._bn)
            self.ys.append(self._by / self._bn)
            self._bx = self._by = 0.0
            self._bn = 0
            if len(self.ys) >= self.cap:
                self._halve()

    def _halve(self) -> None:
        xs, ys = self.xs, self.ys
        self.xs = [(xs[i] + xs[i + 1]) / 2 for i in range(0, len(xs) - 1, 2)]
        self.ys = [(ys[i] + ys[i + 1]) / 2 for i in range(0, len(ys) - 1, 2)]
        self.stride *= 2

    def data(self) -> SeriesData:
        xs, ys = list(self.xs), list(self.ys)
        if self._bn:  # the open bucket, so a live run shows its newest value
            xs.append(self._bx / self._bn)
            ys.append(self._by / self._bn)
        return SeriesData(tuple(xs), tuple(ys), self.last, self.vmin, self.vmax, self.count)

    def values(self) -> list[float]:
        """The stored values plus the open bucket (no copy of x)."""
        return self.ys + [self._by / self._bn] if self._bn else self.ys


def smooth(ys: tuple[float, ...] | list[float], weight: float = 0.9) -> list[float]:
    """TensorBoard-style debiased exponential moving average."""
    out, acc = [], 0.0
    for i, y in enumerate(ys, 1):
        acc = weight * acc + (1 - weight) * y
        out.append(acc / (1 - weight**i))
    return out


def resample(ys: tuple[float, ...] | list[float], n: int) -> list[float]:
    """At most n values: bucket means over equal index ranges."""
    if len(ys) <= n:
        return list(ys)
    out = []
    for i in range(n):
        a, b = i * len(ys) // n, (i + 1) * len(ys) // n
        out.append(sum(ys[a:b]) / (b - a))
    return out


def sparkline(ys: tuple[float, ...] | list[float], width: int = 12) -> str:
    """A one-line block-character sparkline of the values (empty string for no data)."""
    vals = resample(ys, width)
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-12:
        return SPARK_CHARS[3] * len(vals)
    top = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[round((v - lo) / (hi - lo) * top)] for v in vals)
