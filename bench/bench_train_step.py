"""Image pairs per second for a whole SimCLR pretraining step: ours against the reference.

    python3 bench/bench_train_step.py                     # ResNet-18 width 64, batch 256 (~5 min on 2 cores)
    python3 bench/bench_train_step.py --batch 64 --steps 2 --repeats 3   # a quick check
    python3 bench/bench_train_step.py --device cuda       # the same on a GPU (bf16 autocast, as `auto`)

A step is everything between two optimizer updates: the two views of a batch, the forward
pass, the loss, the backward pass and the update.

* ``ours``: the product's own code path. ``core.training.pipeline.train_pipeline`` (CIFAR-10 as one
  uint8 tensor, ``BatchedViews`` in the training process), ``core.training.model.build_training_model``
  (ResNet-18, CIFAR stem, channels_last), ``make_optimizer`` (LARS, as the CIFAR-10
  presets) and the training loop itself, ``core.training.trainer.train``, with its NT-Xent, its one
  ``loss.item()`` per step, its learning-rate schedule and its ``RunLog`` writing
  metrics.jsonl and TensorBoard events into a temporary run directory.
* ``reference``: the original implementation's step (Spijkervet/SimCLR ``main.py``), written
  out below: torchvision per-image transforms (RandomResizedCrop, flip,
  RandomApply(ColorJitter(0.8s, 0.8s, 0.8s, 0.2s), p=0.8), RandomGrayscale(0.2), ToTensor)
  on PIL images made from the same uint8 array (as torchvision's CIFAR10 does), in a
  DataLoader with one worker per core; ``SimCLR(encoder, projector)`` running the encoder
  once per view; its ``NT_Xent`` (cosine similarity of every pair by broadcasting, a boolean
  mask built once, cross-entropy over [positive, negatives]); ``torch.optim.Adam(lr=3e-4)``;
  ``loss.item()`` every step. The encoder is torchvision's ``resnet18`` with the CIFAR stem
  (3x3 stride-1 ``conv1``, no max-pool, ``fc`` removed): the same convolutions as ours, so
  the two sides do the same arithmetic and the ratio measures the pipeline, not the model.
  Its projector is the reference's (Linear, ReLU, Linear, no BatchNorm), in the default
  (NCHW) memory layout, fp32.
* Every side runs in its own process (spawned, so each has its own malloc state and the
  reference its own DataLoader workers), driven by this one: ours with
  ``core.training.device.keep_freed_memory`` (what ``simclr pretrain`` applies on CPU: malloc keeps
  freed activation memory instead of unmapping it), the reference under glibc's default.
* ``model fwd+bwd`` (with ``--model-row``): our model's forward and backward on a fixed batch,
  nothing else, for the FLOP rate the convolutions reach by themselves.

The sides alternate (one runs while the others wait), ``--repeats`` times, ``--steps`` timed
steps each after one untimed warm-up step per side, so they see the same machine load. The reference's
DataLoader runs one epoch across the whole benchmark (its workers fork once, during the
warm-up) and is given a second to top up its prefetch queue before its steps are timed: its
workers' start-up is not counted, their work during the steps is. (They also top up the
queue while our side runs, which can only slow ours.) Reported: pairs per second,
median and range over repeats, and the ratio of medians.

FLOP rate: the model's forward + backward FLOPs per image counted by
``torch.utils.flop_counter.FlopCounterMode`` (about 3.33 GFLOP at width 64, 32 px), times the
images of a step, over the step time, as a fraction of this machine's fp32 matmul peak
(best of several large ``torch.mm``, same thread count; on CUDA the peak of the dtype the
model runs in).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from core.config import PretrainConfig
from core.training import trainer
from core.training.data import TensorData, load_tensor_split, synthetic
from core.training.device import amp_dtype, keep_freed_memory
from core.training.model import build_training_model, make_optimizer, wrap_model
from core.training.pipeline import TensorPipeline, augment_config
from core.training.runlog import RunLog
from core.training.session import Progress, Session
from core.training.stopping import StopGuard

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10"


# ---------------------------------------------------------------------- machine
def load_avg() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, tries: int = 6) -> float:
    """Best FLOP/s of large square matmuls (several sizes), in this process's thread setting."""
    best = 0.0
    for n in ((2048, 3072, 4096) if device.type == "cpu" else (8192,)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        c = torch.mm(a, b)
        sync(device)
        for _ in range(tries):
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def conv_peak(device: torch.device, dtype: torch.dtype = torch.float32, tries: int = 6) -> float:
    """Best FLOP/s of one large 3x3 convolution (256 -> 256 channels, 16 x 16, channels_last).

    A second yardstick: oneDNN's convolutions can run faster than MKL's sgemm on some CPUs.
    """
    x = torch.randn(128, 256, 16, 16, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    torch.nn.functional.conv2d(x, w, padding=1)
    sync(device)
    best = 0.0
    for _ in range(tries):
        t0 = time.perf_counter()
        torch.nn.functional.conv2d(x, w, padding=1)
        sync(device)
        best = max(best, 2 * 128 * 256 * 256 * 9 * 16 * 16 / (time.perf_counter() - t0))
    return best


def model_flops_per_image(cfg: PretrainConfig, device: torch.device, images: int = 8) -> float:
    """Forward + backward FLOPs per image of our model (FlopCounterMode), convolutions and matmuls."""
    from torch.utils.flop_counter import FlopCounterMode

    from core.simclr.models import build_model

    model = build_model(cfg.backbone, cfg.width, cfg.image_size, cfg.projection_dim).to(device)
    x = torch.randn(images, 3, cfg.image_size, cfg.image_size, device=device)
    with FlopCounterMode(display=False) as counter:
        _, z = model(x)
        z.square().sum().backward()
    return counter.get_total_flops() / images


# ---------------------------------------------------------------------- ours: the product's code path
class TimedLog(RunLog):
    """The real RunLog, noting when the loop starts and when each step ends."""

    marks: list[float]

    def running(self, prog, steps_per_epoch: int) -> None:
        super().running(prog, steps_per_epoch)
        self.marks = [time.perf_counter()]

    def step(self, prog, steps_per_epoch: int, loss: float, lr: float) -> None:
        super().step(prog, steps_per_epoch, loss, lr)
        self.marks.append(time.perf_counter())


class Ours:
    """`core.training.trainer.train` for a few steps at a time, on a pipeline and model built once."""

    def __init__(self, cfg: PretrainConfig, data: TensorData, device: torch.device, root: Path,
                 nchw: bool = False) -> None:
        self.cfg, self.device, self.root = cfg, device, root
        self.pipe = TensorPipeline(data, augment_config(cfg), cfg.batch_size, cfg.seed, device)
        self.model = build_training_model(cfg, device)
        if nchw:  # the ablation: the trainer as it was before it used channels_last on CPU
            self.model = NCHW(self.model.to(memory_format=torch.contiguous_format))
        self.optimizer = make_optimizer(cfg, self.model)
        self.model = wrap_model(cfg, self.model, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda")
        self.runs = 0
        self.epoch = 0

    def run(self, steps: int) -> list[float]:
        """Seconds of each of ``steps`` steps of the real loop (a new run directory each call)."""
        self.runs += 1
        log = TimedLog(self.root / f"ours-{self.runs}", self.cfg, argv=["bench"])
        # each call trains a fresh epoch's first batches; the schedule spans these steps
        prog = Progress(step=0, epoch=self.epoch, total_steps=steps)
        prog.step = prog.epoch * len(self.pipe)
        prog.total_steps = prog.step + steps
        self.epoch += 1
        session = Session(self.cfg, self.device, self.pipe, self.model, self.optimizer, self.scaler, None, prog, log)
        trainer.train(session, StopGuard())  # no monitor, no checkpoints
        log.close()
        return [b - a for a, b in itertools.pairwise(log.marks)]


class NCHW(nn.Module):
    """A model fed NCHW (contiguous) input whatever layout the loop hands it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.module = model  # `module`, so core.simclr.models.unwrap finds the model inside

    def forward(self, x):
        return self.module(x.contiguous())


# ---------------------------------------------------------------------- the reference (Spijkervet/SimCLR)
class RefCIFAR(Dataset):
    """torchvision's CIFAR10 + TransformsSimCLR: a PIL image from the uint8 array, two views."""

    def __init__(self, data: np.ndarray, transform) -> None:
        self.data = data  # (N, H, W, 3) uint8
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.data[i])
        return (self.transform(img), self.transform(img)), 0


class RefNTXent(nn.Module):
    """Spijkervet/SimCLR ``modules/nt_xent.py`` (world size 1)."""

    def __init__(self, batch_size: int, temperature: float) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.temperature = temperature
        self.mask = self.mask_correlated_samples(batch_size)
        self.criterion = nn.CrossEntropyLoss(reduction="sum")
        self.similarity_f = nn.CosineSimilarity(dim=2)

    @staticmethod
    def mask_correlated_samples(batch_size: int) -> torch.Tensor:
        n = 2 * batch_size
        mask = torch.ones((n, n), dtype=bool)
        mask = mask.fill_diagonal_(0)
        for i in range(batch_size):
            mask[i, batch_size + i] = 0
            mask[batch_size + i, i] = 0
        return mask

    def forward(self, z_i: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
        n = 2 * self.batch_size
        z = torch.cat((z_i, z_j), dim=0)
        sim = self.similarity_f(z.unsqueeze(1), z.unsqueeze(0)) / self.temperature
        sim_i_j = torch.diag(sim, self.batch_size)
        sim_j_i = torch.diag(sim, -self.batch_size)
        positive_samples = torch.cat((sim_i_j, sim_j_i), dim=0).reshape(n, 1)
        negative_samples = sim[self.mask].reshape(n, -1)
        labels = torch.zeros(n).to(positive_samples.device).long()
        logits = torch.cat((positive_samples, negative_samples), dim=1)
        return self.criterion(logits, labels) / n


class RefSimCLR(nn.Module):
    """Spijkervet/SimCLR ``simclr/simclr.py``: the encoder runs once per view."""

    def __init__(self, encoder: nn.Module, projection_dim: int, n_features: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.encoder.fc = nn.Identity()
        self.projector = nn.Sequential(
            nn.Linear(n_features, n_features, bias=False),
            nn.ReLU(),
            nn.Linear(n_features, projection_dim, bias=False),
        )

    def forward(self, x_i, x_j):
        h_i, h_j = self.encoder(x_i), self.encoder(x_j)
        return h_i, h_j, self.projector(h_i), self.projector(h_j)


def ref_encoder(width: int) -> tuple[nn.Module, int]:
    """torchvision resnet18 with the CIFAR stem (at width 64 exactly torchvision's layers)."""
    import torchvision
    from torchvision.models.resnet import BasicBlock, ResNet

    if width == 64:
        net = torchvision.models.resnet18(weights=None)
    else:  # the same layout with other widths, for quick checks at small width
        class _Narrow(ResNet):
            def __init__(self):
                nn.Module.__init__(self)
                self._norm_layer, self.inplanes, self.dilation = nn.BatchNorm2d, width, 1
                self.groups, self.base_width = 1, 64
                self.bn1, self.relu = nn.BatchNorm2d(width), nn.ReLU(inplace=True)
                self.layer1 = self._make_layer(BasicBlock, width, 2)
                self.layer2 = self._make_layer(BasicBlock, width * 2, 2, stride=2)
                self.layer3 = self._make_layer(BasicBlock, width * 4, 2, stride=2)
                self.layer4 = self._make_layer(BasicBlock, width * 8, 2, stride=2)
                self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Identity()
        net = _Narrow()
    net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net, width * 8


class Reference:
    def __init__(self, cfg: PretrainConfig, data: TensorData, device: torch.device, workers: int) -> None:
        from bench_augment import reference_transform

        self.device = device
        encoder, n_features = ref_encoder(cfg.width)
        self.model = RefSimCLR(encoder, cfg.projection_dim, n_features).to(device)
        self.criterion = RefNTXent(cfg.batch_size, cfg.temperature)
        self.criterion.mask = self.criterion.mask.to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=3e-4)
        array = data.images.permute(0, 2, 3, 1).contiguous().numpy()
        # one long epoch for the whole benchmark: the workers fork once, as within a real epoch
        self.loader = DataLoader(RefCIFAR(array, reference_transform(cfg.jitter_strength)), batch_size=cfg.batch_size,
                                 shuffle=True, drop_last=True, num_workers=workers,
                                 pin_memory=device.type == "cuda")
        self.batches = iter(self.loader)
        self.prefill = 0.0

    def step(self, batch) -> float:
        (x_i, x_j), _ = batch
        self.optimizer.zero_grad()
        x_i = x_i.to(self.device, non_blocking=True)
        x_j = x_j.to(self.device, non_blocking=True)
        _, _, z_i, z_j = self.model(x_i, x_j)
        loss = self.criterion(z_i, z_j)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def run(self, steps: int) -> list[float]:
        batch = next(self.batches)
        time.sleep(self.prefill)  # the workers' prefetch queue is full, as in the middle of an epoch
        marks = [time.perf_counter()]
        for _ in range(steps):
            self.step(batch)
            batch = next(self.batches)
            marks.append(time.perf_counter())
        return [b - a for a, b in itertools.pairwise(marks)]


# ---------------------------------------------------------------------- our model alone
class ModelOnly:
    def __init__(self, cfg: PretrainConfig, device: torch.device) -> None:
        self.device = device
        self.model = build_training_model(cfg, device)
        b = cfg.batch_size
        self.x = torch.randn(2 * b, 3, cfg.image_size, cfg.image_size, device=device).contiguous(
            memory_format=torch.channels_last)
        self.amp = amp_dtype(cfg, device)

    def run(self, steps: int) -> list[float]:
        out = []
        for _ in range(steps):
            t0 = time.perf_counter()
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                _, z = self.model(self.x)
            z.float().square().mean().backward()
            self.model.zero_grad(set_to_none=True)
            sync(self.device)
            out.append(time.perf_counter() - t0)
        return out


# ---------------------------------------------------------------------- main
def load_data(data_dir: Path, n: int | None) -> TensorData:
    if (data_dir / "train.zip").is_file() or (data_dir / "train").is_dir():
        data = load_tensor_split("folder", data_dir, "train", 32)
        print(f"data: {len(data)} CIFAR-10 training images from {data_dir}")
    else:
        data = synthetic(n or 5120, 32)
        print(f"data: {len(data)} synthetic 32 px images ({data_dir} has no train.zip)")
    return data.subset(n)


def table(rows: dict[str, list[float]], pairs: int, baseline: str, flops_per_step: float | None = None,
          peak: float | None = None) -> None:
    """Markdown table of pairs/s (median, range over repeats) from seconds per step."""
    ref = statistics.median(pairs / s for s in rows[baseline]) if baseline in rows else None
    head, sep = "| step | pairs/s (median) | range | vs reference |", "| --- | ---: | ---: | ---: |"
    if flops_per_step:
        head += " s/step | TFLOP/s | of matmul peak |"
        sep += " ---: | ---: | ---: |"
    print(head)
    print(sep)
    for name, secs in rows.items():
        rates = [pairs / s for s in secs]
        med = statistics.median(rates)
        line = f"| {name} | {med:,.1f} | {min(rates):,.1f}-{max(rates):,.1f} | "
        line += f"{med / ref:.2f}x |" if ref else "- |"
        if flops_per_step and peak:
            s = statistics.median(secs)
            line += f" {s:.2f} | {flops_per_step / s / 1e12:.3f} | {flops_per_step / s / peak:.0%} |"
        print(line)


def make_cfg(args: argparse.Namespace, device: torch.device) -> PretrainConfig:
    return PretrainConfig(dataset="folder", data_dir=str(args.data_dir), backbone="resnet18", width=args.width,
                          image_size=32, batch_size=args.batch, optimizer="lars", lr=1.0, lr_scaling="linear",
                          weight_decay=1e-6, temperature=0.5, warmup_epochs=0, jitter_strength=0.5,
                          knn_every=0, checkpoint_every=0, device=str(device), precision=args.precision,
                          max_steps=10**9).validate()


def pick(args: argparse.Namespace) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)


#: every side the benchmark can run: key -> (row name, what to build, its options)
SIDES = {
    "ours": ("ours (core.training.trainer.train)", "ours", {}),
    "nchw": ("ours with an NCHW model (--ablate-layout)", "ours", {"nchw": True}),
    "malloc": ("ours under glibc's default malloc (--ablate-allocator)", "ours", {"product_allocator": False}),
    "before": ("ours with both: NCHW and glibc's malloc (the trainer before)", "ours",
               {"nchw": True, "product_allocator": False}),
    "compile": ("ours + torch.compile (--compile)", "ours", {"compile": True}),
    "reference": ("reference (Spijkervet/SimCLR step)", "reference", {}),
    "model": ("model fwd+bwd (ours, no data/loss/optimizer)", "model", {}),
}


def serve(key: str, args: argparse.Namespace, conn) -> None:
    """One side in its own process (own malloc state, own workers): build, warm up, then run on request."""
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the runs' own log lines
    if args.threads:
        torch.set_num_threads(args.threads)
    _, kind, opts = SIDES[key]
    device = pick(args)
    cfg = make_cfg(args, device)
    if kind in ("ours", "model") and opts.get("product_allocator", True) and device.type == "cpu":
        keep_freed_memory()  # as `simclr pretrain` does on CPU
    data = load_data(args.data_dir, args.n)
    info = ""
    if kind == "ours":
        side = Ours(cfg.replace(compile=opts.get("compile", False)), data, device,
                    Path(tempfile.mkdtemp(prefix=f"bench-train-step-{key}-")), nchw=opts.get("nchw", False))
        t0 = time.perf_counter()
        side.run(1)  # warm-up
        if opts.get("compile"):
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            side.run(1)
            cache = "inductor's on-disk cache kept" if args.warm_compile_cache else "a fresh inductor cache"
            info = (f"first step {first:.1f} s, so compilation took about {first - (time.perf_counter() - t0):.1f} s "
                    f"(first step minus a warm one; {cache})")
    elif kind == "reference":
        side = Reference(cfg, data, device, args.workers)
        side.run(1)  # warm-up; the workers fork here, once for the whole benchmark
        side.prefill = 1.0
    else:
        side = ModelOnly(cfg, device)
        side.run(1)
    conn.send(info)
    while True:
        steps = conn.recv()
        if steps is None:
            return
        conn.send(side.run(steps))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="CIFAR-10 folder with train.zip")
    p.add_argument("--n", type=int, default=None, help="use only the first N training images")
    p.add_argument("--batch", type=int, default=256, help="image pairs per step")
    p.add_argument("--width", type=int, default=64, help="ResNet-18 width (64 = standard)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per side per repeat")
    p.add_argument("--repeats", type=int, default=3, help="alternations of the sides")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="reference DataLoader workers")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda when visible, else cpu")
    p.add_argument("--precision", default="auto", help="ours: auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16")
    p.add_argument("--compile", action="store_true",
                   help="add a side: ours with torch.compile (compile time reported separately)")
    p.add_argument("--warm-compile-cache", action="store_true",
                   help="with --compile: keep inductor's on-disk cache (default: a fresh one, so compile time is cold)")
    p.add_argument("--no-reference", action="store_true", help="skip the reference side")
    p.add_argument("--ablate-allocator", action="store_true",
                   help="add a side: ours under glibc's default malloc (without core.training.device.keep_freed_memory)")
    p.add_argument("--ablate-layout", action="store_true",
                   help="add a side: ours with the model in NCHW (the trainer before it used channels_last on CPU)")
    p.add_argument("--model-row", action="store_true", help="add a row: our model's forward + backward alone")
    p.add_argument("--profile", type=Path, default=None,
                   help="instead of timing: profile 3 of our steps with torch.profiler, print the top ops, "
                        "write a Chrome trace to this file")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA device: run this on a GPU machine, or pass --device cpu")

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile and not args.warm_compile_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-inductor-")
        os.environ["TRITON_CACHE_DIR"] = os.path.join(os.environ["TORCHINDUCTOR_CACHE_DIR"], "triton")
    device = pick(args)
    cfg = make_cfg(args, device)
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {os.cpu_count()} CPUs")
          + f", {torch.get_num_threads()} threads; load average {load_avg()} at start")

    if args.profile:
        if device.type == "cpu":
            keep_freed_memory()
        data = load_data(args.data_dir, args.n)
        ours = Ours(cfg, data, device, Path(tempfile.mkdtemp(prefix="bench-train-step-")))
        ours.run(1)  # warm-up
        profile(ours, args.profile)
        return

    amp = amp_dtype(cfg, device)
    dtype = amp or torch.float32
    peak = matmul_peak(device, dtype)
    cpeak = conv_peak(device, dtype)
    flops_img = model_flops_per_image(cfg, device)
    flops_step = flops_img * 2 * args.batch
    print(f"peaks ({str(dtype).replace('torch.', '')}): matmul {peak / 1e12:.3f} TFLOP/s (best torch.mm), "
          f"one 3x3 convolution {cpeak / 1e12:.3f} TFLOP/s; model fwd+bwd {flops_img / 1e9:.2f} GFLOP/image "
          f"(FlopCounterMode), {flops_step / 1e12:.2f} TFLOP per step of {args.batch} pairs")

    keys = ["ours"]
    keys += ["nchw"] if args.ablate_layout else []
    keys += ["malloc"] if args.ablate_allocator else []
    keys += ["before"] if args.ablate_layout and args.ablate_allocator else []
    keys += ["compile"] if args.compile else []
    keys += [] if args.no_reference else ["reference"]
    keys += ["model"] if args.model_row else []

    # each side in its own process, built and warmed up one after another, then alternated
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    conns, procs = {}, []
    per_repeat: dict[str, list[float]] = {key: [] for key in keys}
    loads = [os.getloadavg()[0]]
    try:
        for key in keys:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=serve, args=(key, args, child))  # not daemonic: it has workers
            proc.start()
            procs.append(proc)
            child.close()  # so a side that dies shows as EOFError here instead of a hang
            info = parent.recv()
            if info:
                print(f"{SIDES[key][0]}: {info}")
            conns[key] = parent
        for r in range(args.repeats):
            for key, conn in conns.items():
                conn.send(args.steps)
                secs = conn.recv()
                per_repeat[key].append(sum(secs) / len(secs))
                print(f"  repeat {r + 1} {key}: " + ", ".join(f"{s:.2f}" for s in secs) + " s/step", flush=True)
            loads.append(os.getloadavg()[0])
        for conn in conns.values():
            conn.send(None)
    except EOFError:
        raise SystemExit("a benchmark side died; its traceback is above") from None
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()

    print(f"\nload average (1 min) during the runs: {min(loads):.2f}-{max(loads):.2f}; "
          f"batch {args.batch} pairs, width {args.width}, {args.steps} steps x {args.repeats} repeats, "
          f"{torch.get_num_threads()} threads, {args.workers} reference workers, device {device}\n")
    rows = {SIDES[key][0]: per_repeat[key] for key in keys}
    peak = max(peak, matmul_peak(device, dtype))  # measured again after the runs; the best counts
    table(rows, args.batch, SIDES["reference"][0], flops_step, peak)
    print(f"\nTFLOP/s = {flops_img / 1e9:.2f} GFLOP/image x {2 * args.batch} images / step time; "
          f"matmul peak = {peak / 1e12:.3f} TFLOP/s (best of before and after the runs); "
          f"ours reaches {flops_step / statistics.median(per_repeat['ours']) / cpeak:.0%} of the single-convolution "
          f"rate ({cpeak / 1e12:.3f} TFLOP/s)")


def profile(ours: Ours, path: Path) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ours.device.type == "cuda" else [])
    with tprofile(activities=acts, record_shapes=False) as prof:
        ours.run(3)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    prof.export_chrome_trace(str(path))
    print(f"trace: {path}")


if __name__ == "__main__":
    main()
