"""A trained encoder out of our checkpoints: `core.load_encoder` and `simclr export`.

Formats (each writes ``PATH`` and, beside it, ``PATH`` with the suffix ``.json`` describing it):

* ``torchvision``: a state dict that ``torchvision.models.resnetNN()`` loads with
  ``strict=True`` once its ``fc`` is ``nn.Identity()`` (for the CIFAR stem also ``conv1`` a
  3x3 stride-1 convolution and ``maxpool`` an identity); width 64 only, since torchvision's
  ResNets have no width knob. Our encoder's parameter names are torchvision's.
* ``safetensors``: the same tensors in the safetensors format (the one the ecosystem shares
  weights in; no pickle, so loading it runs no code), with the description as its metadata.
* ``torch-export``: ``torch.export`` of the encoder in eval mode, batch size free: a
  self-contained program that ``torch.export.load(PATH).module()`` runs without this package.

The default is the encoder alone: its features ``h`` are what every evaluation uses (the
projection head's ``z`` serves the contrastive loss and is worse for downstream tasks, as
the SimCLR paper shows); ``--with-head`` adds the head (not for ``torchvision``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from core.config import PretrainConfig
from core.errors import CheckpointError, ExportError
from core.runs import atomic_write_text, check_checkpoint_name, read_json
from core.simclr.models import build_model, clean_state_dict
from core.training.checkpoint import checkpoint_path, load_checkpoint

FORMATS = ("torchvision", "safetensors", "torch-export")


def run_config(run_dir: Path) -> PretrainConfig:
    data = read_json(run_dir / "config.json")
    if data is None:
        raise ExportError(f"{run_dir} is not a run directory (no readable config.json); give --run-dir runs/NAME")
    return PretrainConfig.from_dict(data)


def load_encoder(run_dir: str | Path, checkpoint: str = "last", ema: bool | None = None,
                 device: str | torch.device = "cpu") -> tuple[nn.Module, Callable[[Any], torch.Tensor]]:
    """A run's trained encoder in eval mode and its evaluation transform (PIL image or uint8
    tensor -> normalised float tensor (3, S, S)): ``h = encoder(transform(img)[None])``.

    ``ema``: None uses the EMA weights when the run kept them (as evaluations do), True
    requires them, False takes the online encoder.
    """
    from core.simclr.augment import eval_transform
    from core.training.pipeline import augment_config

    encoder, cfg, _ = _load(Path(run_dir), checkpoint, ema, device)
    return encoder, eval_transform(augment_config(cfg))


def trained_encoder(run_dir: str | Path, checkpoint: str = "last", prefer_ema: bool = True,
                    device: str | torch.device = "cpu") -> tuple[nn.Module, PretrainConfig, dict[str, Any]]:
    """The one place a checkpoint becomes an encoder: the run's trained encoder on ``device``
    (its EMA weights when the run kept them and ``prefer_ema``), the config it was trained
    with, and the checkpoint itself. The module is as built (train mode); evaluations that
    freeze it switch it to eval mode themselves."""
    ckpt = load_checkpoint(checkpoint_path(run_dir, checkpoint), map_location=device)
    cfg = PretrainConfig.from_dict(ckpt["config"])
    model = build_model(cfg.backbone, cfg.width, cfg.image_size, cfg.projection_dim)
    model.load_state_dict(clean_state_dict(ckpt["model"]))
    encoder = model.encoder
    if prefer_ema and ckpt.get("ema") is not None:
        encoder.load_state_dict(clean_state_dict(ckpt["ema"]))
    return encoder.to(device), cfg, ckpt


def _load(run_dir: Path, checkpoint: str, ema: bool | None, device: str | torch.device = "cpu"):
    """``trained_encoder`` in eval mode, after the checks whose messages name this run's files."""
    cfg = run_config(run_dir)
    path = checkpoint_path(run_dir, check_checkpoint_name(checkpoint))
    if not path.is_file():
        saved = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt"))
        raise CheckpointError(f"{path} does not exist; checkpoints of this run: {', '.join(saved) or 'none yet'}")
    encoder, cfg, ckpt = trained_encoder(run_dir, checkpoint, prefer_ema=ema is not False, device=device)
    if ema and ckpt.get("ema") is None:
        raise ExportError(f"{run_dir} kept no EMA encoder (train with --ema); leave out --ema")
    return encoder.eval(), cfg, ckpt


def describe(run_dir: Path, checkpoint: str, cfg: PretrainConfig, ckpt: dict, ema_used: bool, fmt: str,
             with_head: bool, feature_dim: int) -> dict[str, Any]:
    """The sidecar: everything needed to use the weights, and what they are known to score."""
    from core.training.pipeline import augment_config

    acfg = augment_config(cfg)
    progress = ckpt.get("progress") if isinstance(ckpt.get("progress"), dict) else {}
    known = {}
    for kind in ("linear", "knn"):
        result = read_json(run_dir / "eval" / f"{kind}-{checkpoint}.json") or {}
        if isinstance(result.get("test_top1"), (int, float)):
            known[kind] = {"test_top1": result["test_top1"], "dataset": result.get("dataset")}
    return {"format": fmt, "arch": cfg.backbone, "width": cfg.width, "image_size": cfg.image_size,
            "cifar_stem": cfg.image_size <= 64, "mean": list(acfg.mean or ()), "std": list(acfg.std or ()),
            "feature_dim": feature_dim, "with_head": with_head, "encoder": "ema" if ema_used else "online",
            "run": run_dir.name, "checkpoint": checkpoint, "step": progress.get("step"),
            "epoch": progress.get("epoch"),
            "accuracy": known}


def export(run_dir: str | Path, out: str | Path, fmt: str, checkpoint: str = "last", ema: bool | None = None,
           with_head: bool = False) -> dict[str, Any]:
    """Write the encoder to ``out`` in ``fmt`` and its description to ``out`` + ``.json``.
    Every check comes first: on bad input nothing is written."""
    run_dir, out = Path(run_dir), Path(out)
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if not out.parent.is_dir():
        raise ExportError(f"the folder of --out {out} does not exist; create it or write elsewhere")
    if out.suffix == ".json":
        raise ExportError(f"--out {out}: .json is the description written beside the weights; choose another suffix")
    cfg = run_config(run_dir)
    if fmt == "torchvision" and cfg.width != 64:
        raise ExportError(f"torchvision's {cfg.backbone} has width 64; this run has width {cfg.width}: "
                          f"export it as safetensors or torch-export instead")
    if fmt == "torchvision" and with_head:
        raise ExportError("torchvision's ResNets have no projection head: leave out --with-head, or use safetensors")
    encoder, cfg, ckpt = _load(run_dir, checkpoint, ema)
    net: nn.Module = encoder
    if with_head:  # the head's trained weights are in the checkpoint already read
        model = build_model(cfg.backbone, cfg.width, cfg.image_size, cfg.projection_dim)
        model.load_state_dict(clean_state_dict(ckpt["model"]))
        net = nn.Sequential(encoder, model.projector).eval()
    with torch.no_grad():
        feature_dim = int(net(torch.zeros(1, 3, cfg.image_size, cfg.image_size)).shape[1])
    meta = describe(run_dir, checkpoint, cfg, ckpt, ckpt.get("ema") is not None and ema is not False, fmt,
                    with_head, feature_dim)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    if fmt == "torchvision":
        torch.save(state, out)
    elif fmt == "safetensors":
        from safetensors.torch import save_file
        save_file(state, str(out), metadata={"simclr": json.dumps(meta)})
    else:
        x = torch.zeros(2, 3, cfg.image_size, cfg.image_size)
        program = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        torch.export.save(program, str(out))
    atomic_write_text(sidecar(out), json.dumps(meta, indent=2) + "\n")
    return meta


def sidecar(out: Path) -> Path:
    return out.with_name(out.name + ".json") if out.suffix == "" else out.with_suffix(".json")
