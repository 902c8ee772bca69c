"""`simclr results --group-by` and `simclr runs --format json`, on run directories made by hand.

No torch and no training: every file a run directory would hold is written here, and the
numbers are checked against the textbook formulas (mean, sample std with n - 1).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from tests.helpers import make_eval_job, write_status

from core.cli import main
from core.report.tables import latex_escape

CONFIG = {"dataset": "cifar10", "data_dir": "data", "backbone": "resnet18", "width": 64, "batch_size": 256,
          "projection_dim": 128, "optimizer": "lars", "epochs": 2, "temperature": 0.5, "seed": 0,
          "device": "auto", "workers": 2}


def write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_run(runs: Path, name: str, top1: float | None = None, top5: float | None = None, *,
             job: str = "linear-last", sweep: dict | None = None, **config) -> Path:
    """A finished run with one evaluation result (when top1 is given) and its sweep.json."""
    run = runs / name
    write(run / "config.json", {**CONFIG, **config})
    write_status(run, kind="pretrain", state="finished", epoch=2, total_epochs=2)
    if top1 is not None:
        add_result(run, job, top1, top5)
    if sweep is not None:
        write(run / "sweep.json", sweep)
    return run


def add_result(run: Path, job: str, top1: float, top5: float | None = None) -> None:
    knn = job.startswith("knn")
    result = {"kind": "knn" if knn else "linear-eval", "protocol": "knn" if knn else "lbfgs",
              "settings": {"k": 200} if knn else {"protocol": "lbfgs", "l2": 1e-3}, "pretrain_epoch": 2,
              "dataset": "cifar10", "test_top1": top1, "job": job}
    if top5 is not None:
        result["test_top5"] = top5
    write(run / "eval" / f"{job}.json", result)


def mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def results(runs: Path, capsys, *flags: str) -> str:
    assert main(["results", "--runs-dir", str(runs), *flags]) == 0
    return capsys.readouterr().out


# grid temperature=[0.5, 0.1] x seeds [0, 1, 2]: seeds outermost, so index = 2 * seed + grid place
TOP1 = {0.5: [0.50, 0.52, 0.57], 0.1: [0.61, 0.60, 0.66]}
TOP5 = {0.5: [0.90, 0.91, 0.95], 0.1: [0.93, 0.92, 0.97]}


def make_sweep(runs: Path) -> None:
    grid = [0.5, 0.1]
    for seed in range(3):
        for place, t in enumerate(grid):
            record = {"sweep": "tsweep", "index": 2 * seed + place, "size": 6, "swept": {"temperature": t, "seed": seed},
                      "grid": {"temperature": grid}, "seeds": [0, 1, 2]}
            run = make_run(runs, f"tsweep-temperature={t},seed={seed}", TOP1[t][seed], TOP5[t][seed],
                           sweep=record, temperature=t, seed=seed)
            if t == 0.1:
                add_result(run, "knn-last", 0.4 + seed / 100)
    # one seed only for a third setting, and a run made outside the sweep
    make_run(runs, "tsweep-temperature=0.9,seed=0", 0.7, sweep={"sweep": "tsweep", "index": 6, "swept":
             {"temperature": 0.9, "seed": 0}}, temperature=0.9)
    make_run(runs, "alone", 0.3)


def test_group_by_sweep_json_gives_mean_and_sample_std_per_setting(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_sweep(runs)
    groups = json.loads(results(runs, capsys, "--group-by", "sweep", "--format", "json"))
    # grid order (the sweep's index), then by job; the run outside the sweep is left out
    assert [(g["setting"], g["job"]) for g in groups] == [
        ({"temperature": 0.5}, "linear-last"), ({"temperature": 0.1}, "knn-last"),
        ({"temperature": 0.1}, "linear-last"), ({"temperature": 0.9}, "linear-last")]
    for g, t in ((groups[0], 0.5), (groups[2], 0.1)):
        assert g["n"] == 3 and g["sweep"] == "tsweep" and g["method"] == "SimCLR + Linear eval. (L-BFGS)"
        assert g["runs"] == sorted(f"tsweep-temperature={t},seed={s}" for s in range(3))
        for metric, values in (("test_top1", TOP1[t]), ("test_top5", TOP5[t])):
            mean, std = mean_std(values)
            assert math.isclose(g[f"{metric}_mean"], mean, rel_tol=1e-12)
            assert math.isclose(g[f"{metric}_std"], std, rel_tol=1e-12)
        assert (g["Batch Size"], g["Backbone"], g["Optimizer"], g["Epochs"]) == ("256", "ResNet18", "LARS", "2")
    knn = groups[1]
    assert knn["method"] == "SimCLR + kNN (k=200)" and knn["test_top5_mean"] is None and knn["test_top5_std"] is None
    assert math.isclose(knn["test_top1_std"], mean_std([0.40, 0.41, 0.42])[1])
    single = groups[3]
    assert single["n"] == 1 and single["test_top1_mean"] == 0.7 and single["test_top1_std"] is None


def test_group_by_sweep_markdown_shows_mean_std_and_n(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_sweep(runs)
    lines = results(runs, capsys, "--group-by", "sweep").splitlines()
    assert lines[0].startswith("| Method | Batch Size |") and len(lines) == 2 + 4
    mean, std = mean_std(TOP1[0.5])
    assert lines[2].endswith(f"| {mean:.4f} ± {std:.4f} (n=3) | tsweep [temperature=0.5] |")
    assert lines[5].endswith("| 0.7000 (n=1) | tsweep [temperature=0.9] |")
    csv_lines = results(runs, capsys, "--group-by", "sweep", "--format", "csv").splitlines()
    assert csv_lines[1].endswith(f",{mean:.4f} ± {std:.4f} (n=3),tsweep [temperature=0.5]")


def test_group_by_sweep_without_sweeps_says_so(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_run(runs, "alone", 0.3)
    assert main(["results", "--runs-dir", str(runs), "--group-by", "sweep"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "sweep" in err
    assert json.loads(results(runs, capsys, "--group-by", "sweep", "--format", "json")) == []


def test_group_by_config_folds_seeds_and_separates_other_keys(tmp_path, capsys):
    runs = tmp_path / "runs"
    # the same setting with three seeds, on different devices and worker counts
    for seed, (device, workers) in enumerate((("cpu", 2), ("cuda", 8), ("auto", 0))):
        make_run(runs, f"a-seed{seed}", TOP1[0.5][seed], seed=seed, device=device, workers=workers)
    make_run(runs, "b", 0.61, temperature=0.1)
    groups = json.loads(results(runs, capsys, "--group-by", "config", "--format", "json"))
    assert [(g["runs"], g["setting"]) for g in groups] == [
        (["a-seed0", "a-seed1", "a-seed2"], {"temperature": 0.5}), (["b"], {"temperature": 0.1})]
    mean, std = mean_std(TOP1[0.5])
    assert groups[0]["n"] == 3 and groups[0]["sweep"] is None
    assert math.isclose(groups[0]["test_top1_mean"], mean) and math.isclose(groups[0]["test_top1_std"], std)
    assert groups[1]["n"] == 1 and groups[1]["test_top1_std"] is None
    assert groups[0]["Run"] == "[temperature=0.5]"
    # one setting only: the group is named after its first run
    (runs / "b" / "eval" / "linear-last.json").unlink()
    assert json.loads(results(runs, capsys, "--group-by", "config", "--format", "json"))[0]["Run"] == "a-seed0 +2 more"


def test_ungrouped_json_and_latex(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_run(runs, "run_a", 0.5, 0.9)
    make_run(runs, "tsweep-temperature=0.1,seed=0", 0.6, sweep={"sweep": "tsweep", "index": 0, "swept": {}})
    rows = json.loads(results(runs, capsys, "--format", "json"))
    assert [(r["run"], r["job"], r["sweep"], r["test_top1"], r["test_top5"]) for r in rows] == [
        ("run_a", "linear-last", None, 0.5, 0.9), ("tsweep-temperature=0.1,seed=0", "linear-last", "tsweep", 0.6, None)]
    assert rows[0]["Accuracy"] == "0.5000" and rows[0]["Method"] == "SimCLR + Linear eval. (L-BFGS)"
    latex = results(runs, capsys, "--format", "latex").splitlines()
    assert latex[0] == r"\begin{tabular}{lllllllll}" and latex[-1] == r"\end{tabular}"
    assert latex[4].endswith(r"& 0.5000 & run\_a \\")
    grouped = results(runs, capsys, "--format", "latex", "--group-by", "config")
    assert r"& 0.5500 $\pm$ 0.0707 (n=2) & run\_a +1 more \\" in grouped  # one config: one group
    assert latex_escape(r"a&b%c$d#e_f{g}h~i^j\k") == \
        r"a\&b\%c\$d\#e\_f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    assert latex_escape("0.5 ± 0.1") == r"0.5 $\pm$ 0.1"


def test_bad_group_by_is_one_line(tmp_path, capsys):
    assert main(["results", "--runs-dir", str(tmp_path), "--group-by", "seed"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_runs_json_has_sweep_queue_position_notes_and_results(tmp_path, capsys):
    runs = tmp_path / "runs"
    done = make_run(runs, "done", 0.55, sweep={"sweep": "tsweep", "index": 0, "swept": {"temperature": 0.5}})
    make_eval_job(done, "linear-last", kind="linear-eval", state="finished", parent="done")
    write(done / "notes.json", {"note": "the baseline", "tags": ["baseline", "lr-test"]})
    (done / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"step": 1, "tag": "train/loss", "value": 5.0}, {"step": 2, "tag": "train/loss", "value": 4.5},
        {"step": 2, "tag": "knn/top1", "value": 0.3}, {"step": 1, "tag": "linear/test_top1", "value": 0.9, "job": "x"})))
    for name, order in (("q-late", 5), ("q-next", 1.5)):
        write(runs / name / "config.json", CONFIG)
        write_status(runs / name, kind="pretrain", state="queued", epoch=0, total_epochs=2)
        write(runs / name / "queue.json", {"order": order, "then": [], "launch": None})
    assert main(["runs", "--runs-dir", str(runs), "--format", "json"]) == 0
    records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(records) == ["done", "done/eval/linear-last", "q-late", "q-next"]
    run, job = records["done"], records["done/eval/linear-last"]
    assert (run["kind"], run["state"], run["sweep"], run["swept"]) == ("pretrain", "finished", "tsweep", {"temperature": 0.5})
    assert (run["note"], run["tags"], run["parent"], run["position"]) == ("the baseline", ["baseline", "lr-test"], None, None)
    assert run["last"] == {"train/loss": 4.5, "knn/top1": 0.3} and run["results"] == {"linear-last": 0.55}
    assert (run["epoch"], run["total_epochs"], run["step"], run["total_steps"]) == (2, 2, None, None)
    assert run["config"]["temperature"] == 0.5 and run["path"] == str(done)
    assert (job["kind"], job["parent"], job["results"], job["note"], job["tags"]) == ("linear-eval", "done", 0.55, "", [])
    assert [records[n]["position"] for n in ("q-next", "q-late")] == [1, 2]
    assert records["q-next"]["state"] == "queued" and records["q-next"]["sweep"] is None

    assert main(["runs", "--runs-dir", str(runs)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert rows["q-next"][:3] == ["q-next", "pretrain", "queued"] and "#1" in rows["q-next"]
    assert "#2" in rows["q-late"] and "2/2" in rows["done"]


def test_garbage_sweep_notes_and_queue_files_do_not_crash(tmp_path, capsys):
    runs = tmp_path / "runs"
    garbage = [([1, 2], [1]), ({"sweep": 5, "swept": "x"}, {"note": 5, "tags": "x"}),
               ({"sweep": "s", "index": "first", "swept": [1]}, {"note": None, "tags": [1, None, "ok"]}),
               ({"sweep": "s", "index": True, "swept": {"seed": [1], "temperature": {"a": 1}}}, "not json")]
    for i, (sweep, notes) in enumerate(garbage):
        run = make_run(runs, f"g{i}", 0.5, sweep=sweep)
        (run / "notes.json").write_text(notes if isinstance(notes, str) else json.dumps(notes))
        write(run / "queue.json", {"order": "first"} if i % 2 else [3])
    write_status(runs / "g0", state="queued")
    write(runs / "g1" / "eval" / "knn-last.json", {"kind": "knn", "test_top1": True, "settings": [1]})  # no number
    for flags in ([], ["--group-by", "sweep"], ["--group-by", "config"]):
        for fmt in ("markdown", "csv", "json", "latex"):
            results(runs, capsys, *flags, "--format", fmt)
    assert len(json.loads(results(runs, capsys, "--format", "json"))) == 4
    groups = json.loads(results(runs, capsys, "--group-by", "sweep", "--format", "json"))
    assert sum(g["n"] for g in groups) == 2 and all(g["sweep"] == "s" for g in groups)
    assert main(["runs", "--runs-dir", str(runs), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["sweep"], r["note"], r["tags"], r["position"]) for r in records] == [
        (None, "", [], None), (None, "", [], None), ("s", "", ["ok"], None), ("s", "", [], None)]
    assert main(["runs", "--runs-dir", str(runs)]) == 0


def test_results_module_imports_no_torch():
    code = "import sys, core.evaluation.results; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_pruned_members_are_left_out_of_a_groups_mean_and_counted(tmp_path, capsys):
    runs = tmp_path / "runs"
    sweep = lambda t, s: {"sweep": "p", "index": s, "swept": {"temperature": t, "seed": s}}  # noqa: E731
    for seed, top1 in enumerate((0.52, 0.54, 0.53)):
        make_run(runs, f"p-a-{seed}", top1, sweep=sweep(0.2, seed), temperature=0.2, seed=seed)
    make_run(runs, "p-a-3", None, sweep=sweep(0.2, 3), temperature=0.2, seed=3)  # pruned, never evaluated
    write_status(runs / "p-a-3", kind="pretrain", state="pruned", epoch=1, total_epochs=2)
    make_run(runs, "p-a-4", 0.10, sweep=sweep(0.2, 4), temperature=0.2, seed=4)  # pruned, evaluated by hand
    write_status(runs / "p-a-4", kind="pretrain", state="pruned", epoch=1, total_epochs=2)
    make_run(runs, "p-b-0", 0.40, sweep=sweep(0.5, 0), temperature=0.5, seed=0)
    groups = {g["setting"]["temperature"]: g for g in json.loads(results(runs, capsys, "--group-by", "sweep",
                                                                         "--format", "json"))}
    mean, std = mean_std([0.52, 0.54, 0.53])
    a = groups[0.2]
    assert a["n"] == 3 and a["pruned"] == 2 and sorted(a["runs"]) == ["p-a-0", "p-a-1", "p-a-2"]
    assert math.isclose(a["test_top1_mean"], mean) and math.isclose(a["test_top1_std"], std)
    assert a["Accuracy"] == f"{mean:.4f} ± {std:.4f} (n=3, 2 pruned)"
    assert groups[0.5]["Accuracy"] == "0.4000 (n=1)" and groups[0.5]["pruned"] == 0
    by_config = json.loads(results(runs, capsys, "--group-by", "config", "--format", "json"))
    assert sorted((g["n"], g["pruned"]) for g in by_config) == [(1, 0), (3, 2)]
