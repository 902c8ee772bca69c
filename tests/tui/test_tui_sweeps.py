"""Sweep group rows as pure functions: a member's accuracy, the best setting, the row order."""

from __future__ import annotations

from pathlib import Path

from simclr_tui.store import RunView
from simclr_tui.sweeps import arrange, member_accuracy, summarise


def view(key, kind="pretrain", parent=None, best=None, monitor=None, sweep=None, swept=None, state="finished"):
    return RunView(key=key, path=Path("/runs") / key, kind=kind, state=state, damage=(), status={}, config={},
                   parent=parent, best_acc=best, monitor_acc=monitor, sweep=sweep, swept=swept or {})


def test_member_accuracy_prefers_evaluation_jobs():
    a = view("s-a", monitor=0.9, sweep="s", swept={"lr": 1, "seed": 0})
    job = view("s-a/eval/linear-last", kind="linear-eval", parent="s-a", best=0.7)
    b = view("s-b", monitor=0.8, sweep="s", swept={"lr": 2, "seed": 0})
    assert member_accuracy(a, [job]) == (0.7, "linear")  # the job's result, not the higher monitor
    assert member_accuracy(b, []) == (0.8, "kNN monitor")
    assert member_accuracy(view("s-c"), []) is None
    group = summarise({v.key: v for v in (a, job, b)})["s"]
    assert group.best_setting == "lr=2" and group.best_acc == 0.8 and group.members == ("s-a", "s-b")


def test_best_setting_is_the_highest_mean_over_seeds():
    runs = [view(f"s-t={t},seed={seed}", monitor=acc, sweep="s", swept={"seed": seed, "t": t},
                 state="finished" if acc is not None else "queued")
            for t, seed, acc in [(1, 0, 0.9), (1, 1, 0.1), (2, 0, 0.6), (2, 1, 0.6), (3, 0, None)]]
    runs.append(view("s-t=4,seed=0", sweep="s", swept={"seed": 0, "t": 4}, state="running"))
    group = summarise({v.key: v for v in runs})["s"]
    assert (group.best_setting, group.best_n) == ("t=2", 2)  # 0.6 beats 0.5, the mean of 0.9 and 0.1
    assert abs(group.best_acc - 0.6) < 1e-12
    assert group.progress_text() == "4/6 done" and group.state_text() == "1 running 1 queued"
    assert group.best_text() == "best t=2 (kNN monitor 60.0%, n=2)"
    seeds_only = summarise({"z-1": view("z-1", monitor=0.5, sweep="z", swept={"seed": 1})})["z"]
    assert seeds_only.best_text() == "mean kNN monitor 50.0%, n=1"


def test_arrange_puts_members_and_their_jobs_under_the_group():
    m1, m2 = view("s-1", sweep="s", swept={"seed": 1}), view("s-2", sweep="s", swept={"seed": 2})
    job = view("s-1/eval/knn-last", kind="knn", parent="s-1")
    other = view("b-run")
    ordered = [m2, other, m1, job]  # e.g. sorted by some column
    groups = summarise({v.key: v for v in ordered})
    assert [r.key for r in arrange(ordered, groups, set())] == ["sweep:s", "b-run"]
    rows = arrange(ordered, groups, {"s"})
    assert [r.key for r in rows] == ["sweep:s", "s-2", "s-1", "s-1/eval/knn-last", "b-run"]
    assert [r.member for r in rows] == [False, True, True, True, False]
    # a job that matched a filter its run did not still sits under the group
    assert [r.key for r in arrange([job], groups, {"s"})] == ["sweep:s", "s-1/eval/knn-last"]
