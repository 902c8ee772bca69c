"""Linear evaluation: wall time from a checkpoint to test accuracy, ours against the seed's protocol.

* ``lbfgs (cached)``: the features of the checkpoint are already in ``features/`` (any earlier
  evaluation, kNN or linear, put them there), so: load them, choose L2 on 10% of train,
  refit by full-batch L-BFGS on standardised features, score the test set.
* ``lbfgs (cold)``: the first evaluation of a checkpoint: feature extraction + the above.
* ``seed (adam)``: the seed's protocol (Spijkervet/SimCLR ``linear_evaluation.py``): its own
  feature extraction, then ``--adam-epochs`` (500) epochs of Adam, lr 3e-4, batch 256, on the
  raw features, then the test set.

Feature extraction is timed once per side (it is the slow part on a CPU): ours is
``core.training.pipeline.encode`` (the cached uint8 images, BatchNorm folded into the convolutions,
channels_last, batch 512, inference mode); the seed's is its ``inference()``: a DataLoader
(one worker per core) of PIL images through Resize + ToTensor, batch 256, ``torch.no_grad``,
and ``simclr_model(x, x)``, which runs the encoder and the projector twice per batch
(``--seed-extraction-as-ours`` charges the seed our extraction time instead, as the earlier
version of this benchmark did). The classifier fits are repeated, ours and the seed's
interleaved so both see the same machine load, and the median is reported. Adam's test
accuracy is also recorded after some epochs (scoring is not counted in its time).

Run it from the repository root::

    python bench/bench_linear_eval.py --run-dir runs/NAME [--checkpoint last] [--repeats 3]
    python bench/bench_linear_eval.py --synthetic       # no run needed: a random encoder on synthetic data

The numbers measured on this project's machines are in docs/EVALUATION.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import PretrainConfig  # noqa: E402
from core.evaluation.features import FeatureSource, load_cached, save_cached  # noqa: E402
from core.evaluation.linear import LinearSettings, train_adam, train_lbfgs  # noqa: E402
from core.evaluation.metrics import topk_accuracy  # noqa: E402
from core.runs import read_json  # noqa: E402

ADAM_CHECKPOINTS = (10, 50, 100, 200, 300, 400, 500)


def synthetic_run(root: Path) -> Path:
    """A run directory holding a random ResNet-18 (width 16) for the synthetic dataset."""
    from core.evaluation.baselines import create_baseline

    cfg = PretrainConfig(dataset="synthetic", width=16, image_size=32, knn_every=0).validate()
    create_baseline(root / "synthetic-random", "random-encoder", cfg)
    return root / "synthetic-random"


def seed_extraction(run_dir: Path, checkpoint: str, cfg: PretrainConfig, workers: int) -> float:
    """Seconds of the seed's feature extraction (train + test) for this checkpoint, on CPU."""
    import os

    from PIL import Image
    from torchvision import transforms as T

    from core.training.checkpoint import checkpoint_path, load_checkpoint
    from core.training.data import load_tensor_split
    from core.simclr.models import build_model, clean_state_dict

    ckpt = load_checkpoint(checkpoint_path(run_dir, checkpoint))
    model = build_model(cfg.backbone, cfg.width, cfg.image_size, cfg.projection_dim)
    model.load_state_dict(clean_state_dict(ckpt["model"]))
    model.eval()

    class Split(torch.utils.data.Dataset):  # torchvision's CIFAR10 with the seed's test_transform
        def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
            self.data, self.targets = images.permute(0, 2, 3, 1).numpy(), labels.tolist()
            self.transform = T.Compose([T.Resize(cfg.image_size), T.ToTensor()])

        def __len__(self) -> int:
            return len(self.data)

        def __getitem__(self, i: int):
            return self.transform(Image.fromarray(self.data[i])), self.targets[i]

    t0 = time.perf_counter()
    for split in ("labelled-train", "test"):
        d = load_tensor_split(cfg.dataset, cfg.data_dir, split, cfg.image_size, cfg.seed)
        keep = d.labels >= 0
        loader = torch.utils.data.DataLoader(Split(d.images[keep], d.labels[keep]), batch_size=256,
                                             shuffle=split != "test", drop_last=True,
                                             num_workers=workers if workers >= 0 else (os.cpu_count() or 1))
        feats = []
        for x, _ in loader:
            with torch.no_grad():
                h, _ = model(x)  # the seed's simclr_model(x, x): encoder and projector once per view
                model(x)
            feats.extend(h.cpu().detach().numpy())
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", help="a run directory with checkpoints/ (e.g. a CIFAR-10 folder run)")
    p.add_argument("--checkpoint", default="last")
    p.add_argument("--synthetic", action="store_true", help="no run: a random encoder on synthetic data")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each classifier fit (median reported)")
    p.add_argument("--adam-epochs", type=int, default=500, help="the seed's logistic_epochs")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--workers", type=int, default=-1, help="the seed's DataLoader workers (default: one per core)")
    p.add_argument("--seed-extraction-as-ours", action="store_true",
                   help="charge the seed our extraction time instead of timing its own")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    run_dir = synthetic_run(Path(tmp.name)) if args.synthetic or not args.run_dir else Path(args.run_dir)
    cfg = PretrainConfig.from_dict(read_json(run_dir / "config.json"))
    source = FeatureSource(run_dir, args.checkpoint, cfg, torch.device("cpu"))
    quiet = lambda _: None  # noqa: E731

    # feature extraction, timed once, then cached as an evaluation would leave it
    t0 = time.perf_counter()
    encoder = source.encoder()
    splits = {s: source.extract(s, quiet) for s in ("train", "test")}
    t_encode = time.perf_counter() - t0
    for s, f in splits.items():
        save_cached(source.cache_file(s), source.cache_key(s), f)
    train, test = splits["train"], splits["test"]
    num_classes = train.num_classes
    print(f"run {run_dir} ({args.checkpoint}): {cfg.dataset}, {cfg.backbone} width {cfg.width}, "
          f"features {tuple(train.x.shape)} / {tuple(test.x.shape)}, {torch.get_num_threads()} threads")
    print(f"feature extraction (encoder load + {len(train.y) + len(test.y)} images): {t_encode:.1f} s")
    del encoder
    if args.seed_extraction_as_ours:
        t_seed_encode = t_encode
    else:
        t_seed_encode = seed_extraction(run_dir, args.checkpoint, cfg, args.workers)
        print(f"the seed's feature extraction (its inference(), both splits): {t_seed_encode:.1f} s")

    ours, seed, adam_curve = [], [], {}
    for r in range(args.repeats):
        t0 = time.perf_counter()
        tr = load_cached(source.cache_file("train"), source.cache_key("train"))
        te = load_cached(source.cache_file("test"), source.cache_key("test"))
        clf = train_lbfgs(tr.x, tr.y, num_classes, LinearSettings())
        acc = topk_accuracy(clf.scores(te.x), te.y)
        ours.append((time.perf_counter() - t0, acc, clf.info["l2"]))
        print(f"  repeat {r + 1}: lbfgs {ours[-1][0]:.1f} s, top-1 {acc:.4f} (l2 {clf.info['l2']:g})", flush=True)

        scoring = [0.0]

        def on_epoch(epoch, loss, current):
            if epoch in ADAM_CHECKPOINTS and r == 0:
                ts = time.perf_counter()
                adam_curve[epoch] = topk_accuracy(current.scores(test.x), test.y)
                scoring[0] += time.perf_counter() - ts

        t0 = time.perf_counter()
        clf = train_adam(train.x, train.y, num_classes, LinearSettings(protocol="adam", epochs=args.adam_epochs),
                         on_epoch=on_epoch)
        acc = topk_accuracy(clf.scores(test.x), test.y)
        seed.append((time.perf_counter() - t0 - scoring[0], acc))
        print(f"  repeat {r + 1}: adam {seed[-1][0]:.1f} s (+ extraction), top-1 {acc:.4f}", flush=True)

    t_ours = statistics.median(t for t, *_ in ours)
    t_fit = statistics.median(t for t, _ in seed)
    t_seed = t_fit + t_seed_encode
    t_cold = t_ours + t_encode
    acc_ours = statistics.median(a for _, a, _ in ours)
    acc_seed = statistics.median(a for _, a in seed)
    print()
    print("| protocol | wall time (s) | range of the fits (s) | test top-1 |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| ours: lbfgs (cached features) | {t_ours:.1f} | {min(t for t, *_ in ours):.1f}-"
          f"{max(t for t, *_ in ours):.1f} | {acc_ours:.4f} |")
    print(f"| ours: lbfgs cold (extraction {t_encode:.1f} s + fit) | {t_cold:.1f} | | {acc_ours:.4f} |")
    print(f"| seed: Adam {args.adam_epochs} epochs (fit only) | {t_fit:.1f} | {min(t for t, _ in seed):.1f}-"
          f"{max(t for t, _ in seed):.1f} | {acc_seed:.4f} |")
    print(f"| seed: extraction {t_seed_encode:.1f} s + Adam {args.adam_epochs} epochs | {t_seed:.1f} | | "
          f"{acc_seed:.4f} |")
    print(f"\nspeed-up, checkpoint to accuracy: {t_seed / t_cold:.1f}x cold, {t_seed / t_ours:.1f}x with our "
          f"features cached; fits alone: {t_fit / t_ours:.1f}x; extraction alone: {t_seed_encode / t_encode:.1f}x")
    print("Adam test top-1 by epoch (first repeat): "
          + ", ".join(f"{e}: {a:.4f}" for e, a in sorted(adam_curve.items())))
    tmp.cleanup()


if __name__ == "__main__":
    main()
