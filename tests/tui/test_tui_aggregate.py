"""simclr_tui.aggregate (pure Python) against an independent numpy computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simclr_tui.aggregate import Stat, common_grid, interpolate, mean_curve, mean_std

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_mean_std_is_the_sample_std(n):
    values = RNG.normal(3.0, 0.5, n)
    stat = mean_std(values.tolist())
    assert stat.n == n
    assert stat.mean == pytest.approx(np.mean(values), rel=1e-12)
    assert stat.std == pytest.approx(np.std(values, ddof=1), rel=1e-12)


def test_mean_std_skips_missing_values_and_has_no_spread_for_one():
    assert mean_std([None, 0.25, None]) == Stat(0.25, None, 1)
    assert mean_std([None, None]) is None and mean_std([]) is None
    assert mean_std([1.0, 1.0, 1.0]).std == 0.0


def test_stat_text():
    assert Stat(0.5321, 0.00412, 3).text() == "0.532 ± 0.004 (n=3)"
    assert Stat(0.5321, None, 1).text() == "0.532 (n=1)"
    assert Stat(0.7112, 0.0041, 2).text(1, 100.0, "%") == "71.1 ± 0.4% (n=2)"


def test_interpolate_matches_numpy_inside_and_is_none_outside():
    xs = np.sort(RNG.uniform(0, 10, 40))
    ys = RNG.normal(size=40)
    at = RNG.uniform(xs[0], xs[-1], 200)
    ours = [interpolate(xs.tolist(), ys.tolist(), a) for a in at]
    np.testing.assert_allclose(ours, np.interp(at, xs, ys), rtol=1e-12, atol=1e-12)
    assert interpolate(xs.tolist(), ys.tolist(), xs[0]) == pytest.approx(ys[0])
    assert interpolate(xs.tolist(), ys.tolist(), xs[-1]) == pytest.approx(ys[-1])
    assert interpolate(xs.tolist(), ys.tolist(), xs[0] - 1e-9) is None
    assert interpolate(xs.tolist(), ys.tolist(), xs[-1] + 1e-9) is None
    assert interpolate([1.0, 1.0, 2.0], [5.0, 7.0, 9.0], 1.0) == 7.0  # a repeated x: its last value


def numpy_band(curves, grid):
    """Independent: np.interp per seed, NaN outside its range, nanmean / nanstd(ddof=1)."""
    stack = np.array([np.where((grid >= x[0]) & (grid <= x[-1]), np.interp(grid, x, y), np.nan) for x, y in curves])
    count = np.sum(~np.isnan(stack), axis=0)
    mean = np.nanmean(stack, axis=0)
    with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        std = np.where(count > 1, np.nanstd(stack, axis=0, ddof=1), np.nan)
    return mean, std, count


def test_seeds_on_the_same_epochs_are_averaged_pointwise():
    xs = np.arange(1, 11, dtype=float)
    curves = [(xs, 5 - 0.3 * xs + RNG.normal(0, 0.1, 10)) for _ in range(3)]
    band = mean_curve([(x.tolist(), y.tolist()) for x, y in curves])
    assert band.xs == tuple(xs)
    stack = np.array([y for _, y in curves])
    np.testing.assert_allclose(band.mean, stack.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(band.std, stack.std(axis=0, ddof=1), rtol=1e-10)
    assert set(band.count) == {3}
    np.testing.assert_allclose(band.upper(), stack.mean(axis=0) + stack.std(axis=0, ddof=1), rtol=1e-10)


def test_seeds_of_different_lengths_and_steps_on_a_common_grid():
    # a finished seed, a shorter one (still running) and one logged at other x values
    a = (np.linspace(0.1, 3.0, 300), None)
    b = (np.linspace(0.1, 1.8, 170), None)
    c = (np.concatenate([[0.05], np.sort(RNG.uniform(0.05, 2.9, 248)), [2.95]]), None)
    curves = [(x, np.exp(-x) + RNG.normal(0, 0.02, len(x))) for x, _ in (a, b, c)]
    band = mean_curve([(x.tolist(), y.tolist()) for x, y in curves], points=120)
    grid = np.array(common_grid([(x.tolist(), y.tolist()) for x, y in curves], 120))
    assert len(grid) == 120 and grid[0] == pytest.approx(0.05) and grid[-1] == 3.0
    np.testing.assert_allclose(band.xs, grid)
    mean, std, count = numpy_band(curves, grid)
    np.testing.assert_allclose(band.mean, mean, rtol=1e-10)
    np.testing.assert_array_equal(band.count, count)
    ours_std = np.array([math.nan if s is None else s for s in band.std])
    np.testing.assert_allclose(ours_std, std, rtol=1e-9, equal_nan=True)
    assert band.count[0] == 1 and band.std[0] is None  # only c starts at 0.05
    assert max(band.count) == 3 and 2 in band.count and band.count[-1] == 1  # b stopped at 1.8, c at 2.95


def test_unsorted_and_empty_curves():
    band = mean_curve([([2.0, 1.0, 3.0], [20.0, 10.0, 30.0]), ([], [])])
    assert band.xs == (1.0, 2.0, 3.0) and band.mean == (10.0, 20.0, 30.0) and band.count == (1, 1, 1)
    assert mean_curve([]).xs == ()
