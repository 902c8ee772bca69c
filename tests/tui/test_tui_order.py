"""The runs table's row order: evaluation jobs stay under their run when sorted by name."""

from __future__ import annotations

from pathlib import Path

from simclr_tui.screens.runs import order_runs
from simclr_tui.store import RunView


def view(key: str, acc: float | None = None) -> RunView:
    parent = key.split("/eval/")[0] if "/eval/" in key else None
    return RunView(key=key, path=Path(key), kind="pretrain" if parent is None else "linear-eval",
                   state="finished", damage=(), status={}, config={}, parent=parent, best_acc=acc)


# "cpu10-pixels" sorts between "cpu10" and "cpu10/eval/..." as plain strings ('-' < '/')
KEYS = ["cpu10-pixels", "cpu10/eval/linear-last", "cpu10", "cpu10-random/eval/linear-last",
        "cpu10/eval/knn-last", "cpu10-random"]


def keys(views: list[RunView]) -> list[str]:
    return [v.key for v in views]


def test_by_name_jobs_follow_their_run():
    assert keys(order_runs([view(k) for k in KEYS], "name")) == [
        "cpu10", "cpu10/eval/knn-last", "cpu10/eval/linear-last",
        "cpu10-pixels",
        "cpu10-random", "cpu10-random/eval/linear-last"]


def test_by_name_reversed_keeps_jobs_under_their_run():
    assert keys(order_runs([view(k) for k in KEYS], "name", reverse=True)) == [
        "cpu10-random", "cpu10-random/eval/linear-last",
        "cpu10-pixels",
        "cpu10", "cpu10/eval/knn-last", "cpu10/eval/linear-last"]


def test_job_of_a_deleted_run_sorts_where_its_run_would():
    order = order_runs([view("b"), view("a/eval/linear-last"), view("c")], "name")
    assert keys(order) == ["a/eval/linear-last", "b", "c"]


def test_other_columns_place_every_row_by_its_own_value():
    views = [view("cpu10", 0.59), view("cpu10/eval/linear-last", 0.55), view("cpu10-pixels", 0.41)]
    assert keys(order_runs(views, "acc")) == ["cpu10-pixels", "cpu10/eval/linear-last", "cpu10"]
