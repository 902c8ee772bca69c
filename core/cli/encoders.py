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

    p = sub.add_parser("embed", help="the encoder's features for every image under a folder, as .npz",
                       description="Features of every image under --data-dir (class folders D/<class>/<img> "
                                   "give labels; any other layout is unlabelled, -1), with the run's evaluation "
                                   "transform, in sorted path order: arrays features, paths, labels, classes.")
    p.add_argument("--run-dir", required=True, help="the run (runs/NAME)")
    p.add_argument("--data-dir", required=True, help="a folder of images, any layout")
    p.add_argument("--out", required=True, help="the .npz to write (its folder must exist)")
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
    """`simclr embed --run-dir R --data-dir D --out F.npz`: features of every image under D."""
    from core.evaluation.embed import embed

    s = embed(args.run_dir, args.data_dir, args.out, args.checkpoint, True if args.ema else None, args.batch_size,
              args.device)
    print(f"wrote {args.out}: {s['n']} x {s['dim']} features"
          + (f", {s['classes']} classes" if s["classes"] else ", unlabelled (labels -1)")
          + (f", {s['skipped']} unreadable file(s) skipped" if s["skipped"] else "") + f" in {s['seconds']:.1f} s")
    return 0
