"""Pictures of what a config and a run do: `simclr views` (the augmentation).

Each command is self-contained: one ``add_<command>`` that registers it and one ``cmd_<command>``
that runs it; :func:`add_commands` registers them all. No torch until a command draws.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.cli.common import end_on_sigterm
from core.cli.flags import add_config_flags, add_source_flags, resolve_config
from core.errors import UsageError


def add_commands(sub) -> None:
    add_views(sub)
    add_neighbours(sub)


# ---------------------------------------------------------------------- simclr views
def add_views(sub) -> None:
    p = sub.add_parser(
        "views", help="a PNG of what the augmentation does: images and their training views",
        description="Write a PNG grid: each row an image of the config's training split (the first --n of a "
                    "random pick seeded by --seed) and --views of its views, drawn by the pipeline that trains "
                    "(batched on the CPU for <= 64 px, or with --device; per image with torchvision above), at "
                    "the configured image size. Takes --preset, --config and every pretrain flag.")
    add_source_flags(p)
    p.add_argument("--n", type=int, default=8, help="images, one a row (1-64; default: 8)")
    p.add_argument("--views", type=int, default=4, help="views of each image (1-16; default: 4)")
    p.add_argument("--scale", type=int, default=1, help="enlarge the grid K times, pixels kept sharp (1-8; default: "
                                                         "1, the configured size; 32 px images are small on a page)")
    p.add_argument("--out", required=True, help="the .png to write (its folder must exist)")
    add_config_flags(p)
    p.set_defaults(func=cmd_views)


def cmd_views(args: argparse.Namespace) -> int:
    """`simclr views [--preset P | --config F | pretrain flags] --data-dir D --out grid.png`."""
    end_on_sigterm()
    cfg = resolve_config(args)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist")
    if out.is_dir() or out.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: give the .png file to write (not a folder, not another format)")
    from core.training.views_grid import GAP, check_counts, check_data, views_grid, write_png

    MAX_SIDE = 16384  # noqa: N806 - a picture, not a memory test: past this, say so

    check_counts(args.n, args.views)
    if not 1 <= args.scale <= 8:
        raise UsageError(f"--scale must be 1 to 8 (got {args.scale})")
    side = max(args.n, 1 + args.views) * (cfg.image_size + GAP) * args.scale
    if side > MAX_SIDE:
        raise UsageError(f"--scale {args.scale}: the grid would be about {side} px a side (at most {MAX_SIDE}); "
                         f"lower --scale, --n or --views")
    check_data(cfg)
    device = "cpu"
    if args.device is not None:  # asked for: draw there (the random numbers differ between device types)
        from core.training.device import pick_device
        device = pick_device(cfg)
    grid = views_grid(cfg, args.n, args.views, device=device)
    rows = (grid.shape[1] + GAP) // (cfg.image_size + GAP)
    if args.scale > 1:  # nearest neighbour: every pixel an exact K x K block
        grid = grid.repeat_interleave(args.scale, 1).repeat_interleave(args.scale, 2)
    write_png(grid, out)
    print(f"wrote {out}: {rows} image(s) of {cfg.dataset} and {args.views} view(s) of each at {cfg.image_size} px "
          f"({grid.shape[2]}x{grid.shape[1]}), seed {cfg.seed}")
    return 0


# ---------------------------------------------------------------------- simclr neighbours
def add_neighbours(sub) -> None:
    p = sub.add_parser(
        "neighbours", help="a PNG of what the encoder thinks is similar: queries and their nearest training images",
        description="Write a PNG grid: each row a query image (picked by --seed) and its --k nearest training "
                    "images by cosine similarity of the frozen encoder's features (the kNN evaluation's, from "
                    "the run's features/ cache, computed and cached once if absent), each with its similarity "
                    "and a green (same class) or red (other class) border. Queries come from the run's test "
                    "split, or --data-dir: a folder with train/ and test/ (then the bank is its train/), or any "
                    "folder of images (then the bank is the run's training split).")
    p.add_argument("--run-dir", required=True, help="the run (runs/NAME)")
    p.add_argument("--checkpoint", default="last", help="last (default) or epoch_NNNN")
    p.add_argument("--data-dir", help="queries from here instead of the run's test split: a folder of "
                                      "train/ and test/ class folders, or any folder of images")
    p.add_argument("--queries", type=int, default=8, help="query images, one a row (default: 8)")
    p.add_argument("--k", type=int, default=8, help="neighbours of each query (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="which queries: another seed, other queries (default: 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--no-ema", dest="prefer_ema", action="store_false",
                   help="use the online encoder even when the run kept an EMA of it")
    p.add_argument("--out", required=True, help="the .png to write (its folder must exist)")
    p.set_defaults(func=cmd_neighbours)


def cmd_neighbours(args: argparse.Namespace) -> int:
    """`simclr neighbours --run-dir R [--data-dir D] [--queries 8] [--k 8] [--seed S] --out nn.png`."""
    from core.evaluation.neighbours import neighbours

    end_on_sigterm()
    grid = neighbours(args.run_dir, args.out, args.checkpoint, args.data_dir, args.queries, args.k, args.seed,
                      args.device, args.prefer_ema)
    marks = [m for row in grid.marks() for m in row]
    same = f", {marks.count('same')} of {len(marks)} neighbours of the same class" if "unknown" not in marks else ""
    print(f"wrote {args.out}: {len(grid.names)} queries x {grid.index.shape[1]} neighbours{same}")
    return 0
