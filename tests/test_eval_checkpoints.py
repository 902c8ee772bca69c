"""Checkpoints from any wrapper load the same way; also the tiny runs the other eval tests use.

``make_run`` builds a run directory without pretraining (milliseconds, no downloads).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.training.checkpoint import save_checkpoint
from core.config import PretrainConfig
from core.evaluation.features import FeatureSource
from core.simclr.models import build_model
from core.runs import StatusFile, atomic_write_json

TINY = dict(dataset="synthetic", backbone="resnet18", width=4, image_size=16, projection_dim=16,
            batch_size=32, epochs=1, optimizer="adam", lr=1e-3, knn_every=0, device="cpu")


def make_run(path: Path, seed: int = 0, prefix: str = "", **overrides) -> Path:
    """A finished 'pretraining' run holding a randomly initialised encoder as checkpoints/last.pt.

    ``prefix`` (e.g. "module.") is put in front of every state-dict key, as a DataParallel
    or DDP checkpoint written without cleaning would have.
    """
    cfg = PretrainConfig.from_dict({**TINY, **overrides}).validate()
    path.mkdir(parents=True)
    torch.manual_seed(seed)
    model = build_model(cfg.backbone, cfg.width, cfg.image_size, cfg.projection_dim)
    state = {prefix + k: v for k, v in model.state_dict().items()}
    save_checkpoint({"model": state, "ema": None, "config": cfg.to_dict(),
                     "progress": {"step": 8, "epoch": 1}}, path / "checkpoints" / "last.pt")
    atomic_write_json(path / "config.json", cfg.to_dict())
    StatusFile(path / "status.json", kind="pretrain").update(state="finished")
    return path


def features_of(run: Path, split: str = "test") -> torch.Tensor:
    cfg = PretrainConfig.from_dict({**TINY})
    return FeatureSource(run, "last", cfg, torch.device("cpu")).get(split, say=lambda _: None).x


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapped_checkpoint_loads_like_a_plain_one(tmp_path: Path, prefix: str) -> None:
    """DataParallel / DDP (``module.``) and torch.compile (``_orig_mod.``) keys give the same encoder."""
    plain = features_of(make_run(tmp_path / "plain", seed=3))
    wrapped = features_of(make_run(tmp_path / "wrapped", seed=3, prefix=prefix))
    other = features_of(make_run(tmp_path / "other", seed=4))
    assert torch.equal(plain, wrapped)
    assert not torch.allclose(plain, other)


def test_features_are_frozen_eval_mode_and_deterministic(tmp_path: Path) -> None:
    """BatchNorm in eval mode: a sample's feature does not depend on the rest of its batch."""
    run = make_run(tmp_path / "run")
    src = FeatureSource(run, "last", PretrainConfig.from_dict({**TINY}), torch.device("cpu"))
    full = src.get("test", say=lambda _: None).x
    enc = src.encoder()
    from core.simclr.augment import normalize_batch
    from core.training.data import load_tensor_split
    from core.training.pipeline import augment_config
    data = load_tensor_split("synthetic", "data", "test", 16, 0)
    with torch.no_grad():
        one = enc.eval()(normalize_batch(data.images[5:6], augment_config(src.cfg)))
    assert torch.allclose(one[0], full[5], atol=1e-5)
    assert not enc.training
