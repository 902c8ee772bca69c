"""`simclr runs`, `simclr note`, `simclr stop` and `simclr presets`: reading and steering runs.

Torch-free: the records come from ``core.report.listing``, the table from ``core.report.console``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.errors import UsageError


def add_commands(sub) -> None:
    p = sub.add_parser("note", help="set or show a run's note and tags (notes.json)",
                       description="Without TEXT or --tags: show them. TEXT replaces the note ('' clears it); "
                                   "--tags replaces the tags ('' clears them). The TUI shows both and its "
                                   "filter matches them (tag:NAME for one tag).")
    p.add_argument("run", metavar="RUN", help="the run's name under --runs-dir")
    p.add_argument("text", nargs="?", metavar="TEXT", help="the new note")
    p.add_argument("--tags", help="the new tags, comma- or space-separated, e.g. baseline,lr-test")
    p.add_argument("--runs-dir", default="runs", help="the runs directory (default: runs)")
    p.set_defaults(func=cmd_note)

    p = sub.add_parser("stop", help="stop a run or evaluation job, local or Slurm: it checkpoints and stops",
                       description="Local: SIGTERM to the run's process group. Slurm: SIGTERM to the job, which the "
                                   "job forwards to the runner (it checkpoints and stops; a stop is never requeued); "
                                   "a job still waiting is cancelled. The TUI's x does the same.")
    p.add_argument("--run-dir", required=True, help="the run (runs/NAME) or evaluation job (runs/NAME/eval/JOB)")
    p.add_argument("--kill", action="store_true",
                   help="end it now: SIGKILL (local) or scancel (Slurm); it reads as crashed and resumes from last.pt")
    p.add_argument("--wait", type=float, metavar="SECONDS", help="wait up to SECONDS for it to end, and say how")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("presets", help="list the presets and their settings")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("runs", help="a table of runs with status and latest metrics")
    p.add_argument("--runs-dir", default="runs", help="the runs directory")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    p.set_defaults(func=cmd_runs)


def cmd_runs(args: argparse.Namespace) -> int:
    """Every run and evaluation job, one row each (jobs under their run): a compact table, or
    with --format json one object per row with stable keys (docs/RUN_DIRECTORY.md)."""
    from core.report.listing import run_records

    records = run_records(args.runs_dir)
    if args.format == "json":
        print(json.dumps(records, indent=2))
        return 0
    from rich.console import Console

    from core.report.console import runs_table

    Console().print(runs_table(records, args.runs_dir) if records else f"no runs in {args.runs_dir}")
    return 0


def cmd_note(args: argparse.Namespace) -> int:
    """`simclr note RUN [TEXT] [--tags a,b]`: set (or show) a run's note and tags, as the TUI's N does."""
    from core.runs import read_notes, resolve_run_dir, write_notes

    run_dir = resolve_run_dir(args.runs_dir, args.run)
    if not ((run_dir / "status.json").exists() or (run_dir / "config.json").exists()):
        raise UsageError(f"{run_dir} is not a run directory; `simclr runs --runs-dir {args.runs_dir}` lists them")
    if args.text is not None or args.tags is not None:
        write_notes(run_dir, args.text, args.tags)
    note, tags = read_notes(run_dir)
    print(f"{args.run}: {note or '(no note)'}" + (f"  [tags: {', '.join(tags)}]" if tags else ""))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """`simclr stop --run-dir R [--kill] [--wait S]`, for either launcher."""
    from core.jobs import service
    from core.jobs.launch import wait_until_stopped

    run_dir = Path(args.run_dir)
    print(service.stop(run_dir, kill=args.kill))
    if args.wait is not None:
        state = wait_until_stopped(run_dir, args.wait)
        print(f"{run_dir.name} is {state}")
        return 0 if state not in ("running", "starting", "queued") else 1
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from core.config import PRESET_NOTES, PRESETS, PretrainConfig, dash

    console = Console()
    for name, values in PRESETS.items():
        table = Table(title=f"{name}: {PRESET_NOTES.get(name, '')}", title_justify="left", show_header=False)
        table.add_column("key", style="cyan")
        table.add_column("value")
        for k, v in PretrainConfig.from_dict(values).to_dict().items():
            mark = "" if k in values else " [dim](default)[/dim]"
            table.add_row(dash(k), f"{v}{mark}")
        console.print(table)
    return 0
