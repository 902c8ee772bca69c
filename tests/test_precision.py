"""``--precision auto`` on a CPU: bf16 only where the processor is measured fast at it.

The probe's answer and the CPU's flags are injected, so every test passes on any processor;
only ``test_probe_is_quick_and_sane`` runs the real probe, and checks its time, not its verdict.
"""

from __future__ import annotations

import time

import pytest
import torch

from core import cli
from core.config import PretrainConfig, preset
from core.runs import read_json
from core.training import precision
from core.training.device import amp_dtype

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    """No answer kept from an earlier test or run: an empty in-process cache and a private disk cache."""
    monkeypatch.setattr(precision, "_cpu_auto", {})
    monkeypatch.setenv("SIMCLR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(precision.CPU_BF16_ENV, "probe")  # the suite pins auto to fp32; here it decides
    monkeypatch.setattr(precision, "cpu_model", lambda: "Test CPU 9000")


def fake_cpu(monkeypatch, flags: set[str], ratio: float | None) -> list:
    """This CPU reports ``flags`` and its probe measures ``ratio``; returns the probe's calls."""
    calls: list = []

    def probe(shape=None, budget_s=0.8):
        calls.append(shape)
        if ratio is None:
            raise AssertionError("the probe ran")
        return ratio
    monkeypatch.setattr(precision, "cpu_flags", lambda: set(flags))
    monkeypatch.setattr(precision, "probe_speedup", probe)
    return calls


def cfg(**kw) -> PretrainConfig:
    return PretrainConfig(**{**preset("tiny"), **kw})


def test_fast_bf16_cpu_autocasts_bf16(monkeypatch):
    calls = fake_cpu(monkeypatch, {"amx_bf16"}, 2.1)
    assert amp_dtype(cfg(), CPU) is torch.bfloat16
    assert amp_dtype(cfg(), CPU) is torch.bfloat16
    assert len(calls) == 1  # once per process and model
    c = precision.choose("auto", CPU, ("resnet18", 8, 16, 128))
    assert c.used == "bf16" and "2.10x" in c.why and "Test CPU 9000" in c.why and "amx_bf16" in c.why


def test_slow_bf16_cpu_stays_fp32(monkeypatch):
    fake_cpu(monkeypatch, {"avx512_bf16"}, 1.1)  # faster, but not clearly (< 1.2x)
    c = precision.choose("auto", CPU)
    assert c.used == "fp32" and c.dtype is None and "1.10x" in c.why
    assert amp_dtype(cfg(), CPU) is None


def test_no_bf16_flags_is_fp32_without_probing(monkeypatch):
    calls = fake_cpu(monkeypatch, set(), None)
    assert amp_dtype(cfg(), CPU) is None
    c = precision.choose("auto", CPU)
    assert c.used == "fp32" and "no bf16 instructions" in c.why and calls == []


def test_probe_answer_is_kept_on_disk(monkeypatch):
    calls = fake_cpu(monkeypatch, {"amx_bf16"}, 1.5)
    assert precision.choose("auto", CPU).used == "bf16"
    monkeypatch.setattr(precision, "_cpu_auto", {})  # a later process
    c = precision.choose("auto", CPU)
    assert c.used == "bf16" and "probed earlier" in c.why and len(calls) == 1


def test_explicit_precision_wins(monkeypatch):
    calls = fake_cpu(monkeypatch, {"amx_bf16"}, 3.0)
    assert amp_dtype(cfg(precision="fp32"), CPU) is None
    assert amp_dtype(cfg(precision="bf16"), CPU) is torch.bfloat16
    assert amp_dtype(cfg(precision="fp16"), CPU) is None  # fp16 is CUDA-only
    assert calls == []
    cuda = torch.device("cuda", 0)
    assert amp_dtype(cfg(), cuda) is torch.bfloat16 and amp_dtype(cfg(precision="fp16"), cuda) is torch.float16
    assert amp_dtype(cfg(precision="fp32"), cuda) is None


def test_cpu_flags_reads_cpuinfo(monkeypatch):
    monkeypatch.setattr(precision, "_cpuinfo", lambda: "model name\t: X\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert precision.cpu_flags() == {"avx512_bf16", "amx_bf16"}
    monkeypatch.setattr(precision, "_cpuinfo", lambda: "flags\t\t: fpu sse avx2\n")
    assert precision.cpu_flags() == set()


def test_a_run_records_its_precision(monkeypatch, tmp_path, capsys):
    fake_cpu(monkeypatch, {"amx_bf16"}, 2.1)
    run = tmp_path / "run"
    assert cli.main(["pretrain", "--preset", "tiny", "--device", "cpu", "--knn-every", "0", "--max-steps", "2",
                     "--run-dir", str(run)]) == 0
    meta = read_json(run / "meta.json")
    assert meta["precision"]["used"] == "bf16"
    assert "auto: bf16" in meta["precision"]["why"] and "2.10x" in meta["precision"]["why"]
    assert "precision: bf16 (auto: bf16" in capsys.readouterr().out
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert all(t.dtype == torch.float32 for t in ckpt["model"].values() if t.is_floating_point())

    fake_cpu(monkeypatch, {"amx_bf16"}, None)  # explicit fp32: no probe
    run2 = tmp_path / "run2"
    assert cli.main(["pretrain", "--preset", "tiny", "--device", "cpu", "--knn-every", "0", "--max-steps", "1",
                     "--precision", "fp32", "--run-dir", str(run2)]) == 0
    assert read_json(run2 / "meta.json")["precision"] == {"used": "fp32", "why": "--precision fp32"}


def test_encode_follows_the_choice(monkeypatch):
    from core.training.pipeline import TensorData, encode
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            return x.flatten(1)
    data = TensorData(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), ["a"])
    c = cfg(image_size=8)
    encode(Probe(), data, c, CPU)
    encode(Probe(), data, c, CPU, amp=torch.bfloat16)
    assert seen == [None, torch.bfloat16]


def test_probe_is_quick_and_sane():
    t0 = time.perf_counter()
    ratio = precision.probe_speedup(("resnet18", 8, 16, 128), budget_s=0.5)
    # about a second on an idle 2-core machine; 13 s seen with 5 other processes on its 2 cores, 80 s (niced)
    # with a 10-minute pretraining beside it; a bound against a probe grown far too big, not a timing
    assert time.perf_counter() - t0 < 120
    assert 0.001 < ratio < 100


def test_the_environment_can_pin_the_choice(monkeypatch):
    calls = fake_cpu(monkeypatch, {"amx_bf16"}, 3.0)
    monkeypatch.setenv(precision.CPU_BF16_ENV, "off")
    assert precision.choose("auto", CPU).used == "fp32" and not calls
    monkeypatch.setattr(precision, "_cpu_auto", {})
    monkeypatch.setenv(precision.CPU_BF16_ENV, "on")
    assert precision.choose("auto", CPU).used == "bf16" and not calls


def test_the_probe_times_the_runs_own_step_up_to_a_cap(monkeypatch):
    """The views of one step (2 per pair, or a micro-batch's chunk), at most 256 at 32 px:
    bf16's gain grows with the batch, so a probe of a few views misjudges a run's step."""
    assert precision.probe_views(128, None, 24) == 256
    assert precision.probe_views(512, None, 32) == 256  # capped
    assert precision.probe_views(512, 16, 32) == 32  # a micro-batch's chunk is the step's batch
    assert precision.probe_views(1024, None, 128) == 16  # 256 views' pixels at 32 px
    assert precision.probe_views(2, None, 512) == 2
    calls = fake_cpu(monkeypatch, {"amx_bf16"}, 2.0)
    amp_dtype(cfg(batch_size=24, image_size=16), CPU)
    assert calls == [("resnet18", 8, 16, 128, 48)]
