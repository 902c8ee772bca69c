"""Linear evaluation: wall time from a checkpoint to test accuracy, ours against the seed's protocol.

* ``lbfgs (cached)``: the features of the checkpoint are already in ``features/`` (any earlier
  evaluation, kNN or linear, put them there), so: load them, choose L2 on 10% of train,
  refit by full-batch L-BFGS on standardised features, score the test set.
* ``lbfgs (cold)``: the first evaluation of a checkpoint: feature extraction + the above.
* ``seed (adam)``: the seed's protocol (Spijkervet/SimCLR ``linear_evaluation.py``): feature
  extraction, then ``--adam-epochs`` (500) epochs of Adam, lr 3e-4, batch 256, on the raw
  features, then the test set.

Feature extraction is the same work for ``cold`` and ``seed``; it is timed once (it is the
slow part on a CPU) and added to both. The classifier fits are repeated, ours and the seed's
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
from core.rundir import read_json  # noqa: E402

ADAM_CHECKPOINTS = (10, 50, 100, 200, 300, 400, 500)


def synthetic_run(root: Path) -> Path:
    """A run directory holding a random ResNet-18 (width 16) for the synthetic dataset."""
    from core.evaluation.baselines import create_baseline

    cfg = PretrainConfig(dataset="synthetic", width=16, image_size=32, knn_every=0).validate()
    create_baseline(root / "synthetic-random", "random-encoder", cfg)
    return root / "synthetic-random"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", help="a run directory with checkpoints/ (e.g. a CIFAR-10 folder run)")
    p.add_argument("--checkpoint", default="last")
    p.add_argument("--synthetic", action="store_true", help="no run: a random encoder on synthetic data")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each classifier fit (median reported)")
    p.add_argument("--adam-epochs", type=int, default=500, help="the seed's logistic_epochs")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
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
    t_seed = statistics.median(t for t, _ in seed) + t_encode
    t_cold = t_ours + t_encode
    print()
    print("| protocol | wall time (s) | test top-1 |")
    print("| --- | --- | --- |")
    print(f"| lbfgs (cached features) | {t_ours:.1f} | {statistics.median(a for _, a, _ in ours):.4f} |")
    print(f"| lbfgs (cold: + extraction) | {t_cold:.1f} | {statistics.median(a for _, a, _ in ours):.4f} |")
    print(f"| seed: extraction + Adam {args.adam_epochs} epochs | {t_seed:.1f} | "
          f"{statistics.median(a for _, a in seed):.4f} |")
    print(f"\nspeed-up: {t_seed / t_ours:.1f}x with cached features, {t_seed / t_cold:.1f}x cold")
    print("Adam test top-1 by epoch (first repeat): "
          + ", ".join(f"{e}: {a:.4f}" for e, a in sorted(adam_curve.items())))
    tmp.cleanup()


if __name__ == "__main__":
    main()
