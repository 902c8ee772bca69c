"""`simclr-tui`: the experiment manager over a runs directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="simclr-tui",
        description="Watch, launch, stop, resume, evaluate and compare SimCLR runs. Runs are separate "
                    "processes: quitting never stops them, and starting again reattaches to them.")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="the runs directory (default: runs)")
    p.add_argument("--demo", action="store_true",
                   help="start a tiny synthetic run (preset tiny, offline, seconds long) and watch it")
    p.add_argument("--poll", type=float, default=0.5, metavar="SECONDS",
                   help="how often to re-read the runs directory (default: 0.5)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.poll <= 0:
        print("simclr-tui: --poll must be positive", file=sys.stderr)
        return 2
    from .app import make_app  # after argument parsing, so --help stays instant

    app = make_app(args.runs_dir, poll_interval=args.poll, demo=args.demo)
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())
