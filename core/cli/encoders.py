"""`simclr export` and `simclr embed`: a run's encoder for use outside this package."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(sub) -> None:
    p = sub.add_parser("export", help="the trained encoder as torchvision / safetensors / torch.export",
                       description="Write a run's encoder in a standard format, and beside it PATH.json: "
                                   "arch, width, image size, stem, input mean/std, run, checkpoint, step and "
                                   "the accuracies known for that checkpoint.")
    p.add_argument("--run-dir", required=True, help="the run (runs/NAME)")
    p.add_argument("--checkpoint", default="last", help="last (default) or epoch_NNNN")
    p.add_argument("--ema", action="store_true", help="require the EMA encoder (default: EMA if the run kept one)")
    p.add_argument("--format", required=True, choices=("torchvision", "safetensors", "torch-export"),
                   help="torchvision: a state dict for torchvision.models.resnetNN (width 64); safetensors: "
                        "the weights as safetensors; torch-export: a program that runs without this package")
    p.add_argument("--out", required=True, help="the file to write (its folder must exist)")
    p.add_argument("--with-head", action="store_true",
                   help="include the projection head (default: the encoder, whose features evaluations use)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("embed", help="the encoder's features for a folder or the run's test split, as .npz "
                                     "(and in TensorBoard's Projector)",
                       description="Features of every image under --data-dir (class folders D/<class>/<img> "
                                   "give labels; any other layout is unlabelled, -1), or without --data-dir of "
                                   "the run's own --split (default test), with the run's evaluation transform: "
                                   "arrays features, paths, labels, classes and pca_2d (the first two principal "
                                   "components). Without --data-dir the default --out is "
                                   "RUN/features/map-<checkpoint>.npz, the TUI's embedding map. --tensorboard "
                                   "also writes the embedding, labels and thumbnails into the run directory for "
                                   "TensorBoard's Projector tab (tensorboard --logdir runs).")
    p.add_argument("--run-dir", required=True, help="the run (runs/NAME)")
    p.add_argument("--data-dir", help="a folder of images, any layout (default: the run's own --split)")
    p.add_argument("--split", default="test", choices=("test", "train"),
                   help="without --data-dir: the run's labelled split to embed (default: test)")
    p.add_argument("--out", help="the .npz to write (its folder must exist); default without --data-dir: "
                                 "RUN/features/map-<checkpoint>.npz (map-train-<checkpoint>.npz for --split "
                                 "train); with --data-dir, --out or --tensorboard is needed")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard projector data into the run directory (projector_config.pbtxt, "
                        "projector/<name>/: features, metadata, thumbnail sprite; at most 100,000 points, sampled)")
    p.add_argument("--checkpoint", default="last", help="last (default) or epoch_NNNN")
    p.add_argument("--ema", action="store_true", help="require the EMA encoder (default: EMA if the run kept one)")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch (default: 256)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_embed)


def cmd_export(args: argparse.Namespace) -> int:
    """`simclr export --run-dir R --format F --out PATH`: the encoder in a standard format."""
    from core.evaluation.export import export, sidecar

    meta = export(args.run_dir, args.out, args.format, args.checkpoint, True if args.ema else None, args.with_head)
    known = ", ".join(f"{k} top-1 {v['test_top1']:.4f}" for k, v in meta["accuracy"].items())
    print(f"wrote {args.out} ({args.format}, {meta['arch']} width {meta['width']}, {meta['encoder']} encoder"
          f"{' + head' if meta['with_head'] else ''}, {meta['feature_dim']} features"
          f"{', ' + known if known else ''}) and {sidecar(Path(args.out))}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """`simclr embed --run-dir R [--data-dir D] [--out F.npz] [--tensorboard]`: features of every
    image under D, or of the run's own split."""
    from core.cli.common import end_on_sigterm
    from core.evaluation.embed import embed

    end_on_sigterm()
    s = embed(args.run_dir, args.data_dir, args.out, args.checkpoint, True if args.ema else None, args.batch_size,
              args.device, tensorboard=args.tensorboard, split=args.split)
    what = (f"{s['n']} x {s['dim']} features"
            + (f", {s['classes']} classes" if s["classes"] else ", unlabelled (labels -1)")
            + (f", {s['skipped']} unreadable file(s) skipped" if s["skipped"] else ""))
    if s["out"] is not None:
        print(f"wrote {s['out']}: {what} in {s['seconds']:.1f} s")
    if s["projector"]:
        pr = s["projector"]
        print(f"wrote TensorBoard projector data {pr['name']} into {args.run_dir} ({pr['points']} points"
              f"{'' if s['out'] is not None else ', ' + what}, {pr['thumb']} px thumbnails): "
              f"tensorboard --logdir {Path(args.run_dir).parent}, Projector tab")
    return 0
