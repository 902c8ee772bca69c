"""--resume on a device other than the CPU, and on another device type than the run was saved on.

``torch.set_rng_state`` and a CUDA generator's ``set_state`` take only a CPU ByteTensor, so the
RNG states of a checkpoint must reach them on the CPU whatever the training device; a state
that cannot carry over (a CUDA generator's is 16 bytes, a CPU one's 5056) is replaced by a
fresh stream, and the log says so. Without a GPU, ``meta`` stands for one: a device whose
tensors hold no data, so nothing read back from it can be used as an RNG state.
"""

from __future__ import annotations

import pytest
import torch

from core.config import PRESETS, PretrainConfig
from core.training import setup
from core.training.checkpoint import load_checkpoint, save_checkpoint
from core.training.resume import save
from core.training.setup import open_session
from core.training.stopping import StopGuard

CFG = PretrainConfig(**{**PRESETS["tiny"], "knn_every": 0, "ema": None})


def state_of(seed: int) -> torch.Tensor:
    """The state of a CPU generator seeded with ``seed``: the expectation, computed apart."""
    return torch.Generator().manual_seed(seed).get_state()


@pytest.fixture
def on_meta(monkeypatch):
    """The run's device is ``meta``: its model and optimizer live there, and so would whatever
    is loaded with map_location=<the device>; the pipeline stays on the CPU (no generator lives on meta)."""
    real_pipeline = setup.train_pipeline

    def on_cpu(cfg, views, device, rank, world):
        return real_pipeline(cfg, views, torch.device("cpu"), rank, world)
    monkeypatch.setattr(setup, "pick_device", lambda cfg: torch.device("meta"))
    monkeypatch.setattr(setup, "train_pipeline", on_cpu)


def test_resume_on_a_gpu_reads_the_rng_states_on_the_cpu(tmp_path, on_meta, capsys):
    """The defect: last.pt was loaded with map_location=<the training device>, its RNG states
    arrived there, and torch.set_rng_state raised 'RNG state must be a torch.ByteTensor'."""
    run = tmp_path / "r"
    s = open_session(CFG, run, StopGuard())
    assert next(s.model.parameters()).device.type == "meta"
    torch.manual_seed(1234)
    s.pipe.generator.manual_seed(77)
    save(s)

    torch.manual_seed(5)  # the process moves on; resuming must bring both streams back
    resumed = open_session(CFG, run, StopGuard(), resume=True)
    assert torch.equal(torch.get_rng_state(), state_of(1234))
    assert torch.equal(resumed.pipe.rng_state(), state_of(77))
    assert "saved on" not in capsys.readouterr().out  # the same device type: nothing to say


def test_a_run_saved_on_cuda_resumes_on_the_cpu_with_a_fresh_view_stream(tmp_path, capsys):
    run = tmp_path / "r"
    s = open_session(CFG, run, StopGuard())
    torch.manual_seed(1234)
    save(s)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    # as a CUDA run writes it: its view generator is a CUDA one (Philox: seed and offset, 16 bytes)
    cuda_state = torch.cat([torch.tensor([9], dtype=torch.int64).view(torch.uint8),
                            torch.tensor([0], dtype=torch.int64).view(torch.uint8)])
    ckpt["rng"] = {**ckpt["rng"], "pipeline": [cuda_state], "device": "cuda"}
    ckpt["progress"] = {**ckpt["progress"], "step": 3}
    save_checkpoint(ckpt, run / "checkpoints" / "last.pt")
    capsys.readouterr()

    torch.manual_seed(5)
    resumed = open_session(CFG, run, StopGuard(), resume=True)
    assert torch.equal(torch.get_rng_state(), state_of(1234))  # the CPU stream carries over
    assert torch.equal(resumed.pipe.rng_state(), state_of(CFG.seed * 7919 + 3))  # reseeded at step 3
    notes = [line for line in capsys.readouterr().out.splitlines() if "saved on cuda" in line]
    assert len(notes) == 1 and "resumed on cpu" in notes[0] and "reseeded" in notes[0], notes


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("saved_on, resumed_on", [("cuda", "cuda"), ("cpu", "cuda"), ("cuda", "cpu")])
def test_resume_on_a_real_gpu(tmp_path, capsys, saved_on, resumed_on):
    run = tmp_path / "r"
    s = open_session(CFG.replace(device=saved_on), run, StopGuard())
    torch.manual_seed(1234)
    s.pipe.generator.manual_seed(77)
    save(s)
    capsys.readouterr()
    torch.manual_seed(5)
    resumed = open_session(CFG.replace(device=resumed_on), run, StopGuard(), resume=True)
    assert torch.equal(torch.get_rng_state(), state_of(1234))
    out = capsys.readouterr().out
    if saved_on == resumed_on:
        assert "saved on" not in out
        assert torch.equal(resumed.pipe.rng_state(), s.pipe.rng_state().cpu())
    else:
        assert f"saved on {saved_on}" in out and f"resumed on {resumed_on}" in out
