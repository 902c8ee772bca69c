"""The one typed config object shared by the command line, the TUI and the trainer.

`PretrainConfig` is validated once (`validate()`), saved as `config.json` in every run
directory and inside every checkpoint. The command line builds its flags from the
dataclass fields, so a flag, a config-file key and a TUI form field always mean the same
thing. Presets are plain dictionaries of overrides on top of the defaults.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from core.errors import ConfigError

DATASETS = ("cifar10", "cifar100", "stl10", "folder", "synthetic")
BACKBONES = ("resnet18", "resnet34", "resnet50")
OPTIMIZERS = ("lars", "adam", "sgd")
LR_SCALINGS = ("linear", "sqrt", "none")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NAN_POLICIES = ("stop", "skip")
ON_UNHEALTHY = ("warn", "stop")


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run. Help strings double as CLI help."""

    dataset: Literal["cifar10", "cifar100", "stl10", "folder", "synthetic"] = field(
        default="cifar10", metadata={"help": "dataset: cifar10, cifar100, stl10 (torchvision), folder (class folders or .zip), synthetic (offline)"})
    data_dir: str = field(default="data", metadata={"help": "dataset root: a torchvision download root, or a folder/.zip holding train/<class>/*"})
    backbone: Literal["resnet18", "resnet34", "resnet50"] = field(
        default="resnet18", metadata={"help": "encoder: resnet18, resnet34 or resnet50"})
    width: int = field(default=64, metadata={"help": "channels of the first ResNet stage (64 = standard ResNet; smaller is faster)"})
    image_size: int = field(default=32, metadata={"help": "side of the square views in pixels; <= 64 uses the CIFAR stem and the batched GPU/CPU augmentation"})
    projection_dim: int = field(default=128, metadata={"help": "output size of the projection head"})
    batch_size: int = field(default=256, metadata={"help": "global batch size (image pairs per step, across all processes)"})
    epochs: int = field(default=100, metadata={"help": "passes over the training set"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps (the schedule is stretched to it)"})
    time_budget: float | None = field(default=None, metadata={"help": "minutes of training; the lr schedule is fitted to the steps that fit in it"})
    subset: int | None = field(default=None, metadata={"help": "use only the first N training images"})
    optimizer: Literal["lars", "adam", "sgd"] = field(default="lars", metadata={"help": "optimizer: lars, adam or sgd"})
    lr: float = field(default=1.0, metadata={"help": "base learning rate, before --lr-scaling"})
    lr_scaling: Literal["linear", "sqrt", "none"] = field(
        default="linear", metadata={"help": "lr scaling with batch size: linear (lr*B/256), sqrt (lr*sqrt(B)), none"})
    weight_decay: float = field(default=1e-6, metadata={"help": "weight decay (LARS/SGD: added to the gradient; Adam: AdamW-style)"})
    temperature: float = field(default=0.5, metadata={"help": "NT-Xent temperature"})
    warmup_epochs: float = field(default=10.0, metadata={"help": "epochs of linear lr warmup before cosine decay"})
    jitter_strength: float = field(default=0.5, metadata={"help": "colour jitter strength s (0.5 for CIFAR, 1.0 for ImageNet)"})
    blur: bool | None = field(default=None, metadata={"help": "Gaussian blur; default: on for images >= 96 px"})
    workers: int = field(default=2, metadata={"help": "DataLoader workers for large-image datasets (0 = in the main process)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        default="auto", metadata={"help": "auto (bf16 autocast on CUDA; on a CPU bf16 where a short probe finds it faster, else fp32; SIMCLR_CPU_BF16=off|on pins it), fp32, bf16 or fp16"})
    data_parallel: bool = field(default=False, metadata={"help": "DataParallel over all visible GPUs"})
    ema: float | None = field(default=None, metadata={"help": "keep an exponential moving average of the encoder with this decay (e.g. 0.996) and evaluate it"})
    knn_every: int = field(default=1, metadata={"help": "kNN monitor every K epochs on the labelled test split (0 = off)"})
    knn_k: int = field(default=200, metadata={"help": "neighbours for the kNN monitor"})
    checkpoint_every: int = field(default=10, metadata={"help": "keep checkpoints/epoch_NNNN.pt every N epochs (last.pt is written every epoch)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    nan_policy: Literal["stop", "skip"] = field(default="stop", metadata={"help": "on a non-finite loss: stop (fail, keep the last good checkpoint) or skip the step"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    deterministic: bool = field(default=False, metadata={"help": "deterministic CUDA kernels (no cuDNN autotuning, deterministic cuBLAS and algorithms): a stopped and resumed GPU run then equals an uninterrupted one bit for bit, some steps slower; CPU runs are deterministic without it"})
    micro_batch: int | None = field(default=None, metadata={"help": "gradient caching: run the model on chunks of M pairs (2M views) at a time and get the exact gradient of the whole batch in the memory of a chunk; BatchNorm statistics are per chunk (as M images per device); must divide each process's batch"})
    on_unhealthy: Literal["warn", "stop"] = field(default="warn", metadata={"help": "when the run's health verdict turns collapsed or not learning (docs/RUN_DIRECTORY.md, Health): warn (say it once, go on) or stop (checkpoint and stop; --resume continues)"})

    # ------------------------------------------------------------------ helpers
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PretrainConfig":
        """Build from a dict (a config file or a preset), refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; see `simclr pretrain --help` for the valid names")
        hints = get_type_hints(cls)
        values = {k: coerce(k, v, hints[k]) for k, v in data.items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "PretrainConfig":
        return dataclasses.replace(self, **changes)

    @property
    def use_blur(self) -> bool:
        return self.image_size >= 96 if self.blur is None else self.blur

    @property
    def small_images(self) -> bool:
        """Images this small are decoded once into a tensor and augmented in batches."""
        return self.image_size <= 64

    def validate(self) -> "PretrainConfig":
        """Check every value; raise ConfigError with a message a person can act on."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        hints = get_type_hints(type(self))
        for f in fields(self):
            choices = literal_choices(hints[f.name])
            if choices:
                v = getattr(self, f.name)
                need(v in choices, f"--{dash(f.name)} must be one of {', '.join(choices)} (got {v!r})")
        need(self.batch_size >= 2, f"--batch-size must be at least 2: NT-Xent needs negatives (got {self.batch_size})")
        need(self.batch_size <= 1 << 20, f"--batch-size {self.batch_size} is beyond any sensible size; use at most 1048576")
        need(self.image_size >= 8, f"--image-size must be at least 8 pixels (got {self.image_size})")
        need(self.width >= 4, f"--width must be at least 4 (got {self.width})")
        need(self.projection_dim >= 1, f"--projection-dim must be positive (got {self.projection_dim})")
        need(self.epochs >= 1 or self.max_steps is not None or self.time_budget is not None,
             f"--epochs must be at least 1 (got {self.epochs}), or give --max-steps / --time-budget")
        need(self.epochs >= 0, f"--epochs must not be negative (got {self.epochs})")
        need(self.max_steps is None or self.max_steps >= 1, f"--max-steps must be at least 1 (got {self.max_steps})")
        need(self.time_budget is None or self.time_budget > 0, f"--time-budget is minutes and must be positive (got {self.time_budget})")
        need(self.subset is None or self.subset >= 2, f"--subset must be at least 2 images (got {self.subset})")
        need(self.lr > 0, f"--lr must be positive (got {self.lr})")
        need(self.weight_decay >= 0, f"--weight-decay must not be negative (got {self.weight_decay})")
        need(self.temperature >= 1e-3, f"--temperature must be at least 0.001 (got {self.temperature}); 0.1-0.5 is usual")
        need(self.warmup_epochs >= 0, f"--warmup-epochs must not be negative (got {self.warmup_epochs})")
        need(0 <= self.jitter_strength <= 2, f"--jitter-strength must be between 0 and 2 (got {self.jitter_strength})")
        need(self.workers >= 0, f"--workers must not be negative (got {self.workers})")
        need(self.ema is None or 0 < self.ema < 1, f"--ema is a decay in (0, 1), e.g. 0.996 (got {self.ema})")
        need(self.micro_batch is None or 2 <= self.micro_batch and self.batch_size % self.micro_batch == 0,
             f"--micro-batch must be at least 2 pairs and divide --batch-size {self.batch_size} (got {self.micro_batch})")
        need(self.knn_every >= 0, f"--knn-every must not be negative (got {self.knn_every})")
        need(self.knn_k >= 1, f"--knn-k must be at least 1 (got {self.knn_k})")
        need(self.checkpoint_every >= 0, f"--checkpoint-every must not be negative (got {self.checkpoint_every})")
        dev = self.device
        need(dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()),
             f"--device must be auto, cpu, cuda or cuda:N (got {dev!r})")
        return self


# ---------------------------------------------------------------------- presets
PRESETS: dict[str, dict[str, Any]] = {
    "cifar10-resnet18": dict(
        dataset="cifar10", backbone="resnet18", image_size=32, batch_size=512, epochs=1000,
        optimizer="lars", lr=1.0, lr_scaling="linear", weight_decay=1e-6, temperature=0.5,
        warmup_epochs=10, jitter_strength=0.5, knn_every=10, checkpoint_every=100,
    ),
    "stl10-resnet18": dict(
        dataset="stl10", backbone="resnet18", image_size=96, batch_size=256, epochs=100,
        optimizer="lars", lr=1.0, lr_scaling="linear", weight_decay=1e-6, temperature=0.5,
        warmup_epochs=10, jitter_strength=1.0, workers=8, knn_every=10, checkpoint_every=25,
    ),
    "imagenet128-resnet50": dict(
        dataset="folder", backbone="resnet50", image_size=128, batch_size=1024, epochs=100,
        optimizer="lars", lr=0.075, lr_scaling="sqrt", weight_decay=1e-6, temperature=0.1,
        warmup_epochs=10, jitter_strength=1.0, workers=16, knn_every=10, checkpoint_every=10,
    ),
    # Chosen by measurement on two CPU cores; docs/PRESETS.md records the searches (the last
    # with bf16, which --precision auto picks where the CPU is fast at it)
    "cifar10-cpu": dict(
        dataset="cifar10", backbone="resnet18", width=16, image_size=24, batch_size=128,
        epochs=100, time_budget=10.0, optimizer="adam", lr=4e-3, lr_scaling="none",
        weight_decay=1e-6, temperature=0.15, warmup_epochs=0.25, jitter_strength=0.5,
        knn_every=1, checkpoint_every=0,
    ),
    "tiny": dict(
        dataset="synthetic", backbone="resnet18", width=8, image_size=16, batch_size=32,
        epochs=2, subset=256, optimizer="adam", lr=1e-3, lr_scaling="none", warmup_epochs=0,
        knn_every=1, knn_k=20, checkpoint_every=1,
    ),
    # `tiny` on 8x the images, batch 64, 3 epochs: still seconds, and its curves go the right
    # way (kNN top-1 rose every epoch for seeds 0-2; tiny's falls as it trains on 256 images)
    "demo": dict(
        dataset="synthetic", backbone="resnet18", width=8, image_size=16, batch_size=64,
        epochs=3, subset=2048, optimizer="adam", lr=1e-3, lr_scaling="none", warmup_epochs=0,
        knn_every=1, knn_k=20, checkpoint_every=1,
    ),
}

PRESET_NOTES: dict[str, str] = {
    "cifar10-resnet18": "SimCLR paper's CIFAR-10 recipe (Appendix B.9): LARS, lr 1.0x B/256, t=0.5, s=0.5",
    "stl10-resnet18": "STL-10 unlabeled+train at 96 px, blur on, s=1.0",
    "imagenet128-resnet50": "ImageNet-style class folders at 128 px, ResNet-50, LARS 0.075 sqrt(B), t=0.1",
    "cifar10-cpu": "most learning in 10 minutes on two CPU cores (see docs/PRESETS.md)",
    "tiny": "seconds-long synthetic run for tests",
    "demo": "a synthetic run of seconds whose loss falls and kNN accuracy rises (simclr-tui --demo)",
}


def preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)} (list them with `simclr presets`)")
    return dict(PRESETS[name])


# ---------------------------------------------------------------------- files
def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a .json or .yaml/.yml config file into a dict (not yet validated)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; pass an existing .json or .yaml file to --config")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error becomes one line
        mark, context = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)  # yaml
        line = mark.line + 1 if mark is not None else getattr(e, "lineno", None)  # json
        first = context.line + 1 if context is not None else line  # yaml notices some errors late
        where = f" at line {line}" if line and first == line else f" at lines {first}-{line}" if line else ""
        problem = getattr(e, "problem", None) or getattr(e, "msg", None) or str(e).splitlines()[0]
        kind = "YAML" if p.suffix in (".yaml", ".yml") else "JSON"
        raise ConfigError(f"cannot parse config file {p}{where}: {problem}; fix the {kind} there") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of key: value pairs")
    return {k.replace("-", "_"): v for k, v in data.items()}


# ---------------------------------------------------------------------- typing helpers
def dash(name: str) -> str:
    return name.replace("_", "-")


def literal_choices(tp: Any) -> tuple[str, ...]:
    if getattr(tp, "__origin__", None) is Literal:
        return tuple(get_args(tp))
    return ()


def base_type(tp: Any) -> tuple[type, bool]:
    """(underlying scalar type, optional?) of a field annotation."""
    if literal_choices(tp):
        return str, False
    args = [a for a in get_args(tp) if a is not type(None)]
    optional = type(None) in get_args(tp)
    if args:
        return args[0], optional
    return tp, False


def coerce(name: str, value: Any, tp: Any) -> Any:
    """Convert a value from JSON/YAML/CLI text to the field's type, strictly."""
    kind, optional = base_type(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise ConfigError(f"{dash(name)} cannot be empty")
    try:
        if kind is bool:
            return parse_bool(value)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value, 10)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{dash(name)} expects {kind.__name__}{' or none' if optional else ''}, got {value!r}") from None


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


# ---------------------------------------------------------------------- the runner's environment
#: default of SIMCLR_DIST_TIMEOUT: the longest a rank may be silent (a checkpoint save on
#: rank 0, a slow first step) before the others give up on it
DIST_TIMEOUT_DEFAULT_S = 1800.0


def dist_timeout_seconds() -> float:
    """SIMCLR_DIST_TIMEOUT in seconds (core.simclr.dist.timeout_from_env); a bad value is a
    ConfigError, checked before anything is written, also when a run is only queued."""
    import os

    text = os.environ.get("SIMCLR_DIST_TIMEOUT", "").strip()
    if not text:
        return DIST_TIMEOUT_DEFAULT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 1e8:
        raise ConfigError(f"SIMCLR_DIST_TIMEOUT must be a positive number of seconds (got {text!r})")
    return seconds
