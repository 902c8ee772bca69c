"""bench/gpu_check.py: one line and exit 2 without a GPU; every check runs (on the CPU, tiny)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


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
    assert all(c["ok"] for c in data["checks"]), [c for c in data["checks"] if not c["ok"]]
    by_name = {c["check"]: c["result"] for c in data["checks"]}
    assert by_name["DDP (torchrun)"]["world_size"] == 2
    assert by_name["stop + resume"]["stopped_at_step"] < by_name["stop + resume"]["resumed_to"]
    # stdout is the markdown table and its summary line, nothing else
    lines = res.stdout.strip().splitlines()
    assert lines[2] == "| check | result | seconds | numbers |"
    assert lines[-1].startswith(f"{len(names)} of {len(names)} checks passed")
    assert sum(line.startswith("| ") for line in lines) == len(names) + 2  # header, rule, a row a check
