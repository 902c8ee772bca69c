"""The memory-layout guard: no CPU model is handed to oneDNN in a layout that breaks it.

oneDNN picks its kernels per CPU. ``ONEDNN_MAX_CPU_ISA=AVX2`` makes this machine run the
kernels of an AVX2 CPU without AVX-512 (where a 1x1 stride-2 convolution in channels_last
with fewer than 8 input channels corrupts the heap), so the crash reproduces here whatever
the CPU is. Each training check runs in its own process: a crash fails that test alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from core.simclr import layout
from core.config import PretrainConfig
from core.simclr.models import build_model, inference_copy
from core.training.model import build_training_model

# widths 4-8 at 24 and 32 px: 20 forward + backward steps each, through the trainer's model
TRAIN_SMALL_WIDTHS = textwrap.dedent("""
    import torch
    from core.simclr import layout
    from core.config import PretrainConfig
    from core.simclr.loss import NTXentLoss
    from core.training.model import build_training_model
    torch.manual_seed(0)
    for size in (24, 32):
        for width in (4, 5, 6, 7, 8):
            cfg = PretrainConfig(dataset="synthetic", image_size=size, width=width, batch_size=8)
            model = build_training_model(cfg, torch.device("cpu"))
            fmt = layout.memory_format(model, "cpu")
            for _ in range(20):
                x = torch.randn(16, 3, size, size).contiguous(memory_format=fmt)
                z = model(x)[1].unflatten(0, (-1, 2))
                NTXentLoss(0.2)(z[:, 0], z[:, 1]).backward()
            print(size, width, "channels_last" if fmt == torch.channels_last else "nchw", flush=True)
""")


def run_isolated(code: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


@pytest.mark.timeout(300)
@pytest.mark.parametrize("isa", ["native", "AVX2"])
def test_widths_4_to_8_train_at_24_and_32_px(isa):
    """Before the guard, widths 4-6 aborted, segfaulted or hung here with the AVX2 kernels."""
    env = {} if isa == "native" else {"ONEDNN_MAX_CPU_ISA": isa}
    res = run_isolated(TRAIN_SMALL_WIDTHS, env)
    assert res.returncode == 0, f"exit {res.returncode}; trained: {res.stdout!r}; {res.stderr[-2000:]}"
    lines = [line.split() for line in res.stdout.splitlines()]
    assert [(int(s), int(w)) for s, w, _ in lines] == [(s, w) for s in (24, 32) for w in (4, 5, 6, 7, 8)]
    assert {(int(w), f) for _, w, f in lines} == {(w, "nchw") for w in (4, 5, 6, 7)} | {(8, "channels_last")}


@pytest.mark.timeout(120)
def test_a_width_4_run_finishes_from_the_command_line(tmp_path):
    """The command that hung in its first backward on an AVX2 EPYC now finishes."""
    run = tmp_path / "w4"
    res = subprocess.run([sys.executable, "-m", "core", "pretrain", "--dataset", "synthetic", "--image-size", "32",
                          "--width", "4", "--batch-size", "16", "--max-steps", "4", "--knn-every", "0",
                          "--run-dir", str(run)], capture_output=True, text=True, timeout=100,
                         env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "SIMCLR_CACHE": str(tmp_path / ".cache")})
    assert res.returncode == 0, res.stderr[-2000:]
    assert '"state": "finished"' in (run / "status.json").read_text()


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("width", [4, 7, 8, 16])
def test_cpu_models_below_width_8_run_in_nchw(arch, width):
    model = build_model(arch, width, 32, 16)
    # the first downsample branch (1x1, stride 2) sees `width` channels; the stem sees 3
    hazards = layout.channels_last_hazards(model)
    assert bool(hazards) == (width < 8)
    assert "encoder.conv1" not in hazards
    if arch != "resnet50":  # a Bottleneck's own 1x1 convolutions see `width` channels too
        assert "encoder.layer2.0.downsample.0" in hazards or width >= 8
    expected = torch.channels_last if width >= 8 else torch.contiguous_format
    assert layout.memory_format(model, "cpu") == expected
    assert layout.memory_format(model, "cuda") == torch.channels_last  # cuDNN: the tensor cores' layout


def test_the_trainer_and_feature_extraction_use_the_guard():
    for width, fmt in ((4, torch.contiguous_format), (8, torch.channels_last)):
        cfg = PretrainConfig(dataset="synthetic", image_size=16, width=width, batch_size=8)
        model = build_training_model(cfg, torch.device("cpu"))
        assert model.encoder.layer2[0].downsample[0].weight.is_contiguous(memory_format=fmt)
        frozen = inference_copy(model.encoder.eval())
        assert frozen.layer2[0].downsample[0].weight.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("value, expected", [("0", torch.contiguous_format), ("1", torch.channels_last),
                                             ("auto", torch.contiguous_format), ("", torch.contiguous_format)])
def test_the_environment_can_override_the_choice(monkeypatch, value, expected):
    monkeypatch.setenv("SIMCLR_CHANNELS_LAST", value)
    assert layout.memory_format(build_model("resnet18", 4, 32, 16), "cpu") == expected


def test_a_bad_override_is_one_line_that_says_what_to_use(monkeypatch):
    monkeypatch.setenv("SIMCLR_CHANNELS_LAST", "yes")
    with pytest.raises(ValueError, match="use 0 .*, 1 .* or auto"):
        layout.memory_format(build_model("resnet18", 8, 32, 16), "cpu")
