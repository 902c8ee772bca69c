"""core.training.memory: a step's memory estimate, checked against independent counts.

The per-view activations are checked against a hand count of what each layer's backward
needs (below) and against a real CPU forward; the weights against the model's parameters;
the micro-batch choice with free memory given, never this machine's.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.config import PretrainConfig
from core.simclr.models import build_model
from core.training import memory
from core.training.memory import Shape, ShapeCost, available_memory, fitting_micro_batch, memory_verdict, step_memory

REPO = Path(__file__).resolve().parents[1]
TINY = dict(backbone="resnet18", width=8, image_size=16, projection_dim=32)


def cfg(**kw) -> PretrainConfig:
    return PretrainConfig(**{**TINY, "batch_size": 64, "optimizer": "lars", **kw}).validate()


def hand_count_basic(width: int, size: int, blocks: tuple[int, ...]) -> int:
    """Floats autograd keeps per view for a BasicBlock ResNet with the CIFAR stem, the input
    excluded, counted from what each backward needs: a BatchNorm its input (the convolution's
    output), an in-place ReLU its output (which the next convolution saves too: one tensor);
    so the stem keeps 2 maps, a block 4 (bn1's input, relu's output, bn2's input, the last
    relu's output) and a downsample branch 1 more (its BatchNorm's input); the head keeps h,
    the hidden Linear's output and the ReLU's: 3 vectors of 8 x width."""
    total, s = 2 * width * size * size, size
    for stage, count in enumerate(blocks):
        planes = width << stage
        if stage:
            s = math.ceil(s / 2)
        total += count * 4 * planes * s * s + (planes * s * s if stage else 0)
    return total + 3 * 8 * width


@pytest.mark.parametrize("backbone, blocks", [("resnet18", (2, 2, 2, 2)), ("resnet34", (3, 4, 6, 3))])
@pytest.mark.parametrize("width, size", [(8, 16), (16, 24), (8, 33)])
def test_activations_per_view_equal_a_hand_count(backbone, blocks, width, size):
    cost = memory.shape_cost(Shape(backbone, width, size, 128))
    assert cost.measured_on == "meta"
    assert cost.per_view == 4 * hand_count_basic(width, size, blocks)


def test_meta_equals_a_real_forward_and_scales_linearly_in_views():
    shape = Shape("resnet50", 8, 72, 64)  # Bottleneck blocks and the ImageNet stem (max-pool indices)
    meta = memory.shape_cost(shape)
    real = memory._measure(shape, "cpu", (2, 4))
    assert (real.per_view, real.fixed) == (meta.per_view, meta.fixed)
    # an independent point: a real forward of 6 views saves exactly per_view * 6 + fixed
    model = build_model(*TINY.values()).train()
    cost = memory.shape_cost(Shape(**TINY))
    x = torch.randn(6, 3, 16, 16)
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(), x]}
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in weights:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    assert sum(seen.values()) == cost.per_view * 6 + cost.fixed


def test_the_loss_part_is_the_quadratic_it_was_fitted_to():
    from core.simclr.loss import NTXentLoss

    cost = memory.shape_cost(Shape(**TINY))
    z = torch.randn(24, 32, requires_grad=True)  # 24 views: not one of the fitted sizes
    seen = {}

    def pack(t):
        if t.untyped_storage().data_ptr() != z.untyped_storage().data_ptr():
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        pz = z.unflatten(0, (-1, 2))
        NTXentLoss(0.5)(pz[:, 0], pz[:, 1])
    assert cost.loss_bytes(24, 24) == sum(seen.values())
    assert cost.loss_quad >= 4  # at least the (2B)^2 fp32 similarities


@pytest.mark.parametrize("optimizer, state", [("lars", 1), ("sgd", 1), ("adam", 2)])
def test_the_model_part_is_weights_grads_and_optimizer_state(optimizer, state):
    model = build_model(*TINY.values())
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    est = step_memory(cfg(optimizer=optimizer))
    assert est.model == params * 4 * (2 + state) + buffers
    with_ema = step_memory(cfg(optimizer=optimizer, ema=0.99))
    assert with_ema.model - est.model == 4 * sum(p.numel() for p in model.encoder.parameters())


def test_the_plain_and_micro_batched_steps_add_up():
    cost = memory.shape_cost(Shape(**TINY))
    b, m, d, s = 64, 8, 32, 16
    plain = step_memory(cfg(batch_size=b))
    views, z = 2 * b * 3 * s * s * 4, 2 * b * d * 4
    loss = cost.loss_bytes(2 * b, 2 * b)
    assert plain.inputs == views
    assert plain.activations == cost.per_view * 2 * b + cost.fixed + loss + z
    assert plain.total == plain.model + plain.activations + plain.inputs
    micro = step_memory(cfg(batch_size=b, micro_batch=m))
    # a chunk's graph and the whole batch's loss never live together; z and dL/dz stay
    assert micro.activations == max(cost.per_view * 2 * m + cost.fixed, loss) + 2 * z
    assert micro.inputs == plain.inputs and micro.model == plain.model and micro.views == 2 * m
    assert micro.total < plain.total
    # two processes: each holds half the views, and its loss half the anchors among all candidates
    half = step_memory(cfg(batch_size=b), world=2)
    assert half.inputs == views // 2
    assert half.activations == cost.per_view * b + cost.fixed + cost.loss_bytes(b, 2 * b) + z // 2


def test_fitting_micro_batch_is_the_largest_divisor_that_fits():
    c = cfg(batch_size=96)  # divisors 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 96
    need = {m: step_memory(c.replace(micro_batch=m)).total for m in (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 96)}
    assert all(need[a] <= need[b] for a, b in zip(list(need), list(need)[1:]))
    assert need[8] < need[12] < need[16]
    assert fitting_micro_batch(c, need[12] / 0.9) == 12
    assert fitting_micro_batch(c, need[12] / 0.9 - 1) == 8
    assert fitting_micro_batch(c, need[12], headroom=1.0) == 12
    assert fitting_micro_batch(c, need[2] / 0.9 - 1) is None
    assert fitting_micro_batch(c, 10 ** 15) == 96
    assert memory.micro_batches(96) == [2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 96]
    assert memory.micro_batches(49) == [7, 49] and memory.micro_batches(1) == []
    per_rank = {m: step_memory(c.replace(micro_batch=m), world=2).total for m in (2, 3, 4, 6, 8, 12, 16, 24, 48)}
    assert fitting_micro_batch(c, per_rank[16] / 0.9, world=2) == 16  # each of 2 processes holds 48 pairs


def test_the_verdict_names_a_micro_batch_that_fits(monkeypatch):
    monkeypatch.setenv("SIMCLR_KEEP_FREED_MEMORY", "0")  # the CPU's heap is the next test's
    c = cfg(batch_size=256)
    plain = step_memory(c).total
    ok = memory_verdict(c, available=(plain * 2, "cpu"))
    assert ok.fits and ok.text.startswith("step ≈") and "of" in ok.text and "free on cpu" in ok.text
    tight = memory_verdict(c, available=(plain // 2, "cuda:0"))
    m = fitting_micro_batch(c, plain // 2)
    assert tight.fits is False and tight.micro == m and m is not None
    assert tight.text.startswith("will not fit") and f"--micro-batch {m} needs" in tight.text
    assert "free on cuda:0" in tight.text
    hopeless = memory_verdict(c, available=(1000, "cpu"))
    assert hopeless.fits is False and hopeless.micro is None and "even with --micro-batch 2" in hopeless.text
    odd = memory_verdict(cfg(batch_size=75), available=(1000, "cpu"))  # 75 = 3 x 25: no micro-batch of 2
    assert "even with --micro-batch 3 (" in odd.text
    unknown = memory_verdict(c, available=(None, "cuda (no nvidia-smi to ask)"))
    assert unknown.fits is None and "unknown" in unknown.text


def test_a_cpu_heap_that_keeps_freed_memory_counts_the_activations_again(monkeypatch):
    c = cfg(batch_size=256)
    est = step_memory(c)
    assert est.heap == 0
    kept = step_memory(c, heap=True)
    assert kept.heap == est.activations and kept.total == est.total + est.activations
    monkeypatch.setenv("SIMCLR_KEEP_FREED_MEMORY", "1")
    on_cpu = memory_verdict(c, available=(10 ** 12, "cpu")).estimate
    assert on_cpu.heap == (est.activations if memory.keeps_freed_memory() else 0)  # glibc Linux
    assert memory_verdict(c, available=(10 ** 12, "cuda:0")).estimate.heap == 0
    monkeypatch.setenv("SIMCLR_KEEP_FREED_MEMORY", "0")
    assert not memory.keeps_freed_memory()
    assert memory_verdict(c, available=(10 ** 12, "cpu")).estimate.heap == 0


def test_nvidia_smi_output_is_parsed_and_mapped_to_the_device(monkeypatch):
    gpus = memory.parse_nvidia_smi("81559, 1024\n[N/A], [N/A]\n40960, 40000\n")
    assert gpus == [(81559 << 20, 1024 << 20), None, (40960 << 20, 40000 << 20)]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert available_memory("cuda", gpus) == ((81559 - 1024) << 20, "cuda")
    assert available_memory("auto", gpus) == ((81559 - 1024) << 20, "cuda:0")
    assert available_memory("cuda:2", gpus) == (960 << 20, "cuda:2")
    assert available_memory("cuda:1", gpus)[0] is None  # no number reported
    assert available_memory("cuda:7", gpus)[0] is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")  # cuda:0 is the third GPU nvidia-smi lists
    assert available_memory("cuda:0", gpus) == (960 << 20, "cuda:0")
    assert available_memory("cuda", None) == (None, "cuda (no nvidia-smi to ask)")
    free, where = available_memory("auto", None)  # no GPU: the CPU
    assert where == "cpu" and free is not None and free > 0


def fake_smi(tmp_path: Path, body: str) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def test_nvidia_smi_is_asked_with_a_timeout_and_never_raises(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", fake_smi(tmp_path, "echo '16384, 4096'"))
    assert available_memory("auto") == (12288 << 20, "cuda:0")
    monkeypatch.setenv("PATH", fake_smi(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9"))
    assert available_memory("cuda:0")[0] is None
    assert available_memory("auto")[1] == "cpu"
    monkeypatch.setenv("PATH", fake_smi(tmp_path, "sleep 5"))
    assert memory.nvidia_smi(timeout=0.3) is None
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    for device in ("auto", "cpu", "cuda", "cuda:3", "cuda:x", "", "tpu"):
        free, where = available_memory(device)  # never raises
        assert free is None or free > 0


def test_the_runner_line_never_fails_a_run(monkeypatch):
    line = memory.start_line(cfg(), "cpu")
    assert line is not None
    assert line.startswith("memory (an estimate): step ≈") and "activations of 128 views" in line

    def broken(*a, **k):
        raise RuntimeError("no kernel")

    monkeypatch.setattr(memory, "memory_verdict", broken)
    assert memory.start_line(cfg(), "cpu") is None


def test_the_module_imports_no_torch_and_measures_in_a_child():
    code = "import sys, core.training.memory; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
    out = subprocess.run([sys.executable, "-m", "core.training.memory", "--shape", "resnet18", "8", "16", "32"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert ShapeCost.from_json(out) == memory.shape_cost(Shape(**TINY))


def test_a_run_says_its_estimate_once_at_start(tmp_path, capsys):
    from core.training.runlog import RunLog

    RunLog(tmp_path / "run", cfg(device="cpu", batch_size=32), argv=["pretrain"])
    said = [line for line in capsys.readouterr().out.splitlines() if "memory (an estimate)" in line]
    assert len(said) == 1 and "step ≈" in said[0] and "(batch 32)" in said[0] and "free on cpu" in said[0]
