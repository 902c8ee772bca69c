"""simclr_tui.groups: which compared runs are seeds of one setting, and what each group is called."""

from __future__ import annotations

from pathlib import Path

from simclr_tui.groups import group_runs, is_grouped
from simclr_tui.store import RunView


def view(key: str, config: dict, sweep: str | None = None, swept: dict | None = None, parent: str | None = None):
    return RunView(key=key, path=Path("/runs") / key, kind="linear-eval" if parent else "pretrain",
                   state="finished", damage=(), status={}, config=config, parent=parent, sweep=sweep,
                   swept=swept or {})


def test_runs_outside_a_sweep_group_by_config_without_seed_device_workers():
    base = {"dataset": "synthetic", "lr": 0.001, "seed": 0, "device": "cpu", "workers": 2}
    runs = {
        "a": view("a", base),
        "b": view("b", {**base, "seed": 1, "device": "cuda", "workers": 8}),
        "c": view("c", {**base, "lr": 0.002}),
        "a/eval/knn-last": view("a/eval/knn-last", {}, parent="a"),
        "b/eval/knn-last": view("b/eval/knn-last", {}, parent="b"),
    }
    groups = group_runs(list(runs), runs)
    assert [(g.label, g.keys) for g in groups] == [
        ("lr=0.001", ("a", "b")), ("lr=0.002", ("c",)), ("lr=0.001 ▸ knn-last", ("a/eval/knn-last", "b/eval/knn-last"))]
    assert is_grouped(groups)
    alone = group_runs(["a", "c"], runs)
    assert not is_grouped(alone) and [g.label for g in alone] == ["lr=0.001", "lr=0.002"]
    same = group_runs(["a", "b"], runs)
    assert [g.label for g in same] == ["a +1"]  # nothing tells them apart but the seed


def test_sweep_members_group_by_their_swept_values_without_the_seed():
    runs = {f"s-t={t},seed={seed}": view(f"s-t={t},seed={seed}", {"temperature": t, "seed": seed}, "s",
                                         {"seed": seed, "temperature": t}) for t in (0.1, 0.2) for seed in (0, 1)}
    runs["other"] = view("other", {"temperature": 0.1, "seed": 0})  # same config, but no sweep's member
    groups = group_runs(list(runs), runs)
    assert [(g.label, g.n, g.sweep) for g in groups] == [("temperature=0.1", 2, "s"), ("temperature=0.2", 2, "s"),
                                                         ("temperature=0.1 (other)", 1, None)]
    seeds_only = {k: view(k, {"seed": i}, "seeds", {"seed": i}) for i, k in enumerate(("seeds-seed=0", "seeds-seed=1"))}
    assert [g.label for g in group_runs(list(seeds_only), seeds_only)] == ["seeds"]
