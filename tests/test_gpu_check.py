"""bench/gpu_check.py: one line and exit 2 without a GPU; every check runs (on the CPU, tiny), each in a
child process; a crashing check, --only/--skip, the budget and the failed logs' bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))

import gpu_check_lib as lib  # noqa: E402


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    res = run("--json", str(tmp_path / "r.json"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "no CUDA device" in res.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.timeout(300)
def test_every_check_runs_on_the_cpu(tmp_path):
    report = tmp_path / "out" / "gpu.json"
    res = run("--allow-cpu", "--quick", "--json", str(report), env={"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
              timeout=280)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = json.loads(report.read_text())
    names = [c["check"] for c in data["checks"]]
    assert names[:4] == ["step fp32 channels_last", "step fp32 NCHW", "step bf16 channels_last", "step bf16 NCHW"]
    assert {"recipe epoch (cifar10-resnet18)", "DataParallel", "DDP (torchrun)", "pretrain + kNN monitor",
            "stop + resume", "linear-eval", "knn", "finetune"} <= set(names)
    assert not any(c["ok"] is False for c in data["checks"]), [c for c in data["checks"] if c["ok"] is False]
    skipped = {c["check"]: c["skip_kind"] for c in data["checks"] if c["ok"] is None}
    assert skipped == {"fp16 + GradScaler": "unavailable", "compile": "unavailable", "real data": "unavailable"} \
        or skipped == {"fp16 + GradScaler": "unavailable", "compile": "unavailable", "real data": "unavailable",
                       "micro-batch memory": "unavailable"}, skipped
    by_name = {c["check"]: c.get("result") for c in data["checks"]}
    assert by_name["DDP (torchrun)"]["world_size"] == 2
    assert by_name["stop + resume"]["stopped_at_step"] < by_name["stop + resume"]["resumed_to"]
    assert by_name["host syncs"]["sync_total"] == 0 and by_name["large images"]["image_size"] > 64
    assert all(c["covers"] for c in data["checks"]) and data["budget_s"] == 480
    assert not (report.parent / "failed_logs.tar.gz").exists()
    # stdout is the markdown table and its summary line, nothing else
    lines = res.stdout.strip().splitlines()
    assert lines[2] == "| check | result | seconds | numbers |"
    assert lines[-1].startswith(f"{len(names) - len(skipped)} of {len(names)} checks passed, 0 failed")
    assert sum(line.startswith("| ") for line in lines) == len(names) + 2  # header, rule, a row a check


CPU = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


@pytest.mark.timeout(120)
def test_a_failed_check_keeps_its_output_and_its_logs_are_bundled(tmp_path):
    report = tmp_path / "out" / "gpu.json"  # knn alone: no pretrained run to evaluate, so it fails
    res = run("--allow-cpu", "--quick", "--only", "knn", "--json", str(report), env=CPU, timeout=100)
    assert res.returncode == 1, res.stderr[-2000:]
    rows = {c["check"]: c for c in json.loads(report.read_text())["checks"]}
    knn = rows.pop("knn")
    assert knn["ok"] is False and "exited" in knn["error"] and knn["stderr_tail"].strip()
    assert knn["traceback"] and knn["logs"] == "failed_logs.tar.gz: knn/"
    assert all(r["ok"] is None and r["skip_kind"] in ("selection", "unavailable") for r in rows.values())
    with tarfile.open(report.parent / "failed_logs.tar.gz") as tar:
        names = tar.getnames()
    assert "knn/check.log" in names and any(n.startswith("knn/cmd/") and n.endswith(".stderr") for n in names), names
    assert sorted(p.name for p in report.parent.iterdir()) == ["failed_logs.tar.gz", "gpu.json"]


def test_budget_names_and_help(tmp_path):
    report = tmp_path / "gpu.json"
    res = run("--allow-cpu", "--quick", "--budget", "0", "--skip", "step", "--json", str(report), env=CPU)
    assert res.returncode == 1
    rows = json.loads(report.read_text())["checks"]
    assert {r["skip_kind"] for r in rows if r["check"].startswith("step")} == {"selection"}
    assert any(r["skip_kind"] == "budget" and r["skipped"].startswith("budget: 0 s") for r in rows)
    res = run("--allow-cpu", "--only", "nope", "--json", str(report), env=CPU)
    assert res.returncode == 2 and "no check is called 'nope'" in res.stderr
    assert run("--help").returncode == 0


def test_selection_by_name_or_first_words():
    names = ["step fp32 channels_last", "step fp32 NCHW", "step bf16 NCHW", "DDP (torchrun)", "knn",
             "pretrain + kNN monitor"]
    out = lib.selection(names, lib.split_names(["step-bf16,ddp", "KNN"]), [])
    assert [n for n in names if n not in out] == ["step bf16 NCHW", "DDP (torchrun)", "knn"]
    assert set(lib.selection(names, [], ["step fp32"])) == {"step fp32 channels_last", "step fp32 NCHW"}
    with pytest.raises(ValueError):
        lib.selection(names, ["step fp16"], [])


def test_a_crashing_child_is_one_failed_row_with_its_output_tail(tmp_path):
    code = ("import sys\nfor i in range(400): print('line', i, 'x' * 40, file=sys.stderr)\n"
            "print('RuntimeError: CUDA error: an illegal memory access', file=sys.stderr)\n"
            "print('=' * 60, file=sys.stderr)\nsys.exit(3)")
    row = lib.run_child([sys.executable, "-c", code], 30, tmp_path / "c.log", tmp_path / "c.json")
    assert row["ok"] is False and "exited 3 without a result" in row["error"]
    assert "illegal memory access" in row["error"]  # the last line that says something, not the banner
    assert 2000 < len(row["stderr_tail"]) <= lib.STDERR_TAIL and "line 399" in row["stderr_tail"]
    slow = lib.run_child([sys.executable, "-c", "import time; time.sleep(30)"], 1, tmp_path / "s.log",
                         tmp_path / "s.json", grace=2)
    assert slow["ok"] is False and "did not end within 1 s" in slow["error"]
    good = lib.run_child([sys.executable, "-c", f"open({str(tmp_path / 'g.json')!r}, 'w').write('{{\"ok\": true}}')"],
                         30, tmp_path / "g.log", tmp_path / "g.json")
    assert good == {"ok": True}


def test_run_all_saves_every_row_and_keeps_to_the_budget(tmp_path):
    now = [0.0]
    saved, allowed = [], {}

    def run_one(check, seconds):
        allowed[check.name] = seconds
        now[0] += 40
        if check.name == "b":
            raise RuntimeError("the runner broke")
        return {"ok": check.name != "c", "error": "boom"} if check.name == "c" else {"ok": True, "result": {}}

    checks = [lib.Check(n, t) for n, t in (("a", 100), ("b", 100), ("c", 100), ("d", 100))]
    checks.insert(1, lib.Check("x", 5, unavailable="needs CUDA"))
    rows = lib.run_all(checks, run_one, 105, lambda rows: saved.append(len(rows)), {"d": "--skip"},
                       clock=lambda: now[0])
    assert saved == [1, 2, 3, 4, 5]
    assert [r["ok"] for r in rows] == [True, None, False, False, None]
    assert allowed == {"a": 100, "b": 65, "c": 25}  # each bounded by what the budget had left
    assert rows[2]["error"] == "RuntimeError: the runner broke" and rows[4]["skip_kind"] == "selection"
    rows = lib.run_all(checks[:1], run_one, 5, lambda rows: None, clock=lambda: now[0])
    assert rows[0]["skip_kind"] == "budget"


def test_run_logs_and_bundle(tmp_path):
    run = tmp_path / "root" / "run"
    run.mkdir(parents=True)
    for name in ("stdout.log", "status.json", "metrics.jsonl", "x.stderr"):
        (run / name).write_text(name)
    found = [p.name for p in lib.run_logs(tmp_path / "root", 0)]
    assert sorted(found) == ["status.json", "stdout.log", "x.stderr"]
    lib.write_bundle(tmp_path / "b.tar.gz", [(f"c/{n}", run / n) for n in found])
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        assert sorted(tar.getnames()) == sorted(f"c/{n}" for n in found)
        assert tar.extractfile("c/x.stderr").read() == b"x.stderr"
