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
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="the runs directory (default: runs, made if missing); one named here must exist, "
                        "or be made with --create")
    p.add_argument("--create", action="store_true", help="make the --runs-dir folder if it does not exist")
    p.add_argument("--demo", action="store_true",
                   help="start a tiny synthetic run (preset tiny, offline, seconds long) and watch it")
    p.add_argument("--poll", type=float, default=0.5, metavar="SECONDS",
                   help="how often to re-read the runs directory (default: 0.5)")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="where the New-run form sends runs by default: local (run here) or slurm (sbatch; the "
                        "runs directory must be on a filesystem the compute nodes share); each run can choose")
    p.add_argument("--no-worker", action="store_true",
                   help="do not start a queue worker for queued runs (default: start one when queued work "
                        "waits and none runs)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.poll <= 0:
        print("simclr-tui: --poll must be positive", file=sys.stderr)
        return 2
    if args.runs_dir is None:
        args.runs_dir = Path("runs")  # the default is made by the app when missing
    elif not args.runs_dir.is_dir() and not ensure_runs_dir(args.runs_dir, args.create):
        return 2
    from .app import make_app  # after argument parsing, so --help stays instant

    if args.launcher == "slurm":
        from core.jobs.slurm import available

        why = available()
        if why:
            print(f"simclr-tui: --launcher slurm: {why}", file=sys.stderr)
            return 2
    app = make_app(args.runs_dir, poll_interval=args.poll, demo=args.demo, start_worker=not args.no_worker,
                   launcher=args.launcher)
    app.run()
    return app.return_code or 0


def ensure_runs_dir(path: Path, create: bool) -> bool:
    """A --runs-dir that is not there: made with --create or when a person at the terminal says
    yes; otherwise one line saying what to do. Returns whether the folder now exists."""
    if path.exists():
        print(f"simclr-tui: --runs-dir {path} is not a folder; give the folder that holds the runs",
              file=sys.stderr)
        return False
    if not create and sys.stdin.isatty() and sys.stdout.isatty():
        try:
            answer = input(f"simclr-tui: the runs directory {path} does not exist. Create it? [y/N] ")
        except EOFError:
            answer = ""
        create = answer.strip().lower() in ("y", "yes")
    if not create:
        print(f"simclr-tui: the runs directory {path} does not exist; check the path, or pass --create "
              f"to make it", file=sys.stderr)
        return False
    try:
        path.mkdir(parents=True)
    except OSError as e:
        print(f"simclr-tui: cannot create the runs directory {path}: {e.strerror or e}", file=sys.stderr)
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
