"""`simclr ...`: the headless runner's command line, one module per command group.

* ``pretrain``  pretrain, --resume, --queue/--then, --launcher slurm;
* ``studies``   sweep, queue (work, cancel, move);
* ``encoders``  export, embed;
* ``runs``      note, stop, presets, runs;
* ``evaluate``  linear-eval, knn, finetune, baseline, results;
* ``pictures``  views (what the augmentation does);
* ``flags``     the config flags generated from ``PretrainConfig`` and how they resolve;
* ``common``    the parser whose errors are one line.

Flags of `simclr pretrain` are generated from `PretrainConfig`, so the CLI, config files and
the TUI's form share one schema. Resolution order: defaults < preset < config file < flags;
the resolved config is what gets saved. Exit codes: 0 done or stopped, 1 failed while
training, 2 a ``core.errors.UserError`` (bad arguments, config or data: one line, nothing
written), 130 interrupted. Anything else is a bug and keeps its traceback. Imports no torch
until a command trains or evaluates.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from core.cli import encoders, evaluate, pictures, pretrain, runs, studies
from core.cli.common import Parser
from core.errors import UserError

#: in the order `simclr --help` lists them
GROUPS = (pretrain, studies, encoders, runs, evaluate, pictures)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="simclr", description="SimCLR pretraining and evaluation (headless runner)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["slurm-job"] and len(argv) == 2:  # what a Slurm job runs (core.jobs.slurm writes the script)
        from core.jobs.slurm_job import main as slurm_job
        return slurm_job(argv[1])
    shared: list[str] = []
    if argv[:1] == ["sweep"] and "--" in argv:  # simclr sweep ... -- PRETRAIN_FLAGS
        argv, shared = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    try:
        if argv[:2] == ["sweep", "show"]:  # `simclr sweep show NAME`: a sweep named show is refused
            args = studies.sweep_show_parser().parse_args(argv[2:])
            return int(args.func(args) or 0)
        args = build_parser().parse_args(argv)
        if args.command == "sweep":
            args.pretrain_flags = shared
        args.argv = argv  # what a Slurm job of this command runs (core.jobs.launch.strip_launcher_flags)
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"simclr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
