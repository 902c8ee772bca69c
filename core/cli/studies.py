"""`simclr sweep` and `simclr queue [work | cancel | move]`: studies of many runs, torch-free.

The sweep is made by ``core.jobs.studies.make_sweep`` (all or nothing); the queue's listing
comes from ``core.report.listing``. Here: flags in, lines out.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from core.cli.common import Parser
from core.cli.flags import parse_then, pretrain_flag_parser, resolve_values
from core.cli.pretrain import start_or_say
from core.errors import UsageError
from core.jobs.launch import add_launcher_flags, slurm_options


def add_commands(sub) -> None:
    p = sub.add_parser("sweep", help="queue a grid of settings x seeds, one run each",
                       description="Queue one pretraining run per combination of --grid values and --seeds "
                                   "(every combination is validated first; nothing is made if one is bad), "
                                   "named NAME-KEY=V,...; or N settings drawn from --space (--sample N), at "
                                   "random or by TPE. A worker starts them as slots free up; --prune stops "
                                   "hopeless settings early. The flags of `simclr pretrain` every run shares "
                                   "(--preset, --config, --epochs ...) go after --. `simclr sweep show NAME` "
                                   "shows a sweep.",
                       usage="simclr sweep NAME [--runs-dir runs] (--grid KEY=V1,V2 [--grid ...] | --sample N --space KEY=DIST "
                             "[--space ...] [--sampler random|tpe] [--sweep-seed S]) [--seeds 0,1,2] "
                             "[--then JOB ...] [--prune asha|median [--prune-metric knn_top1] [--min-epochs R] "
                             "[--reduction-factor 3]] [--slots N] [--no-start] -- PRETRAIN_FLAGS...\n"
                             "       simclr sweep show NAME [--runs-dir runs] [--format table|json]")
    p.add_argument("name", help="the sweep's name: its runs are NAME-<what differs>")
    p.add_argument("--runs-dir", default="runs", help="where the runs and the queue live (default: runs)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a config key and its values (flag names with or without dashes); repeatable: the grid "
                        "is every combination")
    p.add_argument("--seeds", help="seeds to repeat every setting with: 0,1,2 or 0-4")
    p.add_argument("--then", action="append", default=[], metavar="JOB",
                   help="an evaluation to queue after each run: linear-eval, knn, or "
                        "'finetune --label-fraction 0.1' (quoted, with flags); repeatable")
    p.add_argument("--slots", type=int, help="runs at once (default: one per visible GPU, 1 on CPU); remembered "
                                             "for the runs directory")
    p.add_argument("--no-start", action="store_true", help="only queue; start with `simclr queue work`")
    p.add_argument("--sample", type=int, metavar="N", help="draw N settings from --space instead of a grid")
    p.add_argument("--space", action="append", default=[], metavar="KEY=DIST",
                   help="a config key's distribution for --sample: uniform:LOW:HIGH, loguniform:LOW:HIGH, "
                        "int:LOW:HIGH, logint:LOW:HIGH or choice:V1,V2 (e.g. lr=loguniform:1e-4:1e-2); repeatable")
    p.add_argument("--sampler", choices=("random", "tpe"),
                   help="random (default: every member at once) or tpe (Optuna's model-based sampler: the first "
                        "settings at random, the rest proposed as earlier members end)")
    p.add_argument("--sweep-seed", type=int, help="the seed of the draws: the same seed draws the same settings "
                                                   "(default 0)")
    p.add_argument("--prune", choices=("asha", "median"),
                   help="stop hopeless members early at rungs of --min-epochs x --reduction-factor^k epochs: "
                        "asha (successive halving) or median (the median stopping rule); a setting's seeds are "
                        "judged together, by their mean")
    p.add_argument("--prune-metric", choices=("knn_top1", "loss"), default="knn_top1",
                   help="what rungs compare: the kNN monitor's top-1 (default; needs labelled data) or the "
                        "epoch's mean training loss")
    p.add_argument("--min-epochs", type=int, default=1, metavar="R", help="the first rung, in epochs (default 1)")
    p.add_argument("--reduction-factor", type=int, default=3, metavar="ETA",
                   help="rungs at R, R*ETA, R*ETA^2 ... epochs; asha keeps the best 1/ETA at each (default 3)")
    add_launcher_flags(p)
    # the flags after `--` are split off in main(): argparse cannot put them after a positional
    p.set_defaults(func=cmd_sweep, pretrain_flags=[])

    p = sub.add_parser("queue", help="the run queue: list it, run its worker, cancel or move runs",
                       description="Without a subcommand: the queued runs in order, what runs now, the "
                                   "--then jobs waiting, and the worker.")
    p.add_argument("--runs-dir", default="runs", help="the runs directory (default: runs)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    p.set_defaults(func=cmd_queue)
    qsub = p.add_subparsers(dest="queue_command", parser_class=Parser)
    q = qsub.add_parser("work", help="the worker: start queued runs as slots free up; exits when the queue is done")
    q.add_argument("--slots", type=int, help="runs at once (default: remembered, else one per GPU, 1 on CPU)")
    q.add_argument("--runner", help=argparse.SUPPRESS)  # the command runs start with (tests: a stand-in)
    q.set_defaults(func=cmd_queue_work)
    q = qsub.add_parser("cancel", help="take queued runs (or a sweep's queued runs) out of the queue")
    q.add_argument("runs", nargs="+", metavar="RUN", help="run names or sweep names")
    q.set_defaults(func=cmd_queue_cancel)
    q = qsub.add_parser("move", help="reorder a queued run")
    q.add_argument("run", metavar="RUN")
    q.add_argument("where", metavar="WHERE", help="up, down, top, bottom or a position (1 = next to start)")
    q.set_defaults(func=cmd_queue_move)
    for q in qsub.choices.values():
        q.add_argument("--runs-dir", default=argparse.SUPPRESS, help="the runs directory (default: runs)")


def cmd_sweep(args: argparse.Namespace) -> int:
    """`simclr sweep NAME --grid K=V1,V2 --seeds 0,1,2 -- PRETRAIN_FLAGS`: one queued run per combination."""
    from core.jobs import queue, studies, sweep
    from core.runs import check_run_name

    check_run_name(args.name)
    if args.name == "show":
        raise UsageError("a sweep cannot be named show (`simclr sweep show NAME` shows a sweep); choose another name")
    grid = sweep.parse_grid(args.grid)
    seeds = sweep.parse_seeds(args.seeds) if args.seeds is not None else None
    sampled = sampling(args, grid)
    if not grid and seeds is None and not sampled:
        raise UsageError("a sweep needs at least one --grid KEY=V1,V2, --sample N --space KEY=DIST, or --seeds 0,1,2")
    base = resolve_values(pretrain_flag_parser().parse_args(args.pretrain_flags))
    then = [parse_then(t) for t in args.then]
    if args.slots is not None and args.slots < 1:
        raise UsageError(f"--slots must be at least 1 (got {args.slots})")
    opts = sweep_launcher(args)
    prune = prune_spec(args)
    plan = {"seeds": seeds, "prune": prune.to_dict() if prune else None, "base": base, "then": then,
            "launcher": "slurm" if opts is not None else "queue", "slurm": opts.to_dict() if opts else None}
    if sampled:
        from core.jobs import space as spaces
        from core.jobs.propose import startup_settings

        dists = spaces.parse_space(args.space)
        seed = args.sweep_seed if args.sweep_seed is not None else 0
        # every draw is validated before anything is made; a model-based sampler's later draws
        # come from the same space, checked here by as many random ones
        members = spaces.draw(dists, args.sample, seed, base, seeds, args.name)
        sampler = args.sampler or "random"
        plan |= {"mode": "sample", "space": spaces.describe(dists), "sample": args.sample, "sampler": sampler,
                 "sweep_seed": seed, "startup": startup_settings(args.sample)}
        if sampler == "tpe":
            members = []
    else:
        members = sweep.expand(args.name, base, grid, seeds)
        plan |= {"mode": "grid", "grid": {k: list(dict.fromkeys(m.swept[k] for m in members)) for k in grid}}
    if prune is not None:
        from core.jobs.prune import check_rungs

        check_rungs(prune, min(m.config.epochs for m in members) if members else
                    sweep.expand(args.name, base, {}, None)[0].config.epochs)
    placed = studies.make_sweep(args.runs_dir, args.name, members, list(grid), seeds, then, opts, plan)
    if not members:  # a model-based sweep: its first settings
        members = [sweep.Member(name, 0, {}, None) for name in placed]
    root, runs = Path(args.runs_dir), f"{len(members)} run{'s' * (len(members) > 1)}"
    if plan.get("sampler") == "tpe":
        runs += f" of the first {plan['startup']} of {args.sample} settings (TPE proposes the rest as members end)"
    each = f", each followed by {', '.join(t[0] for t in then)}" if then else ""
    if opts is not None:
        print(f"sweep {args.name}: {runs} submitted to Slurm from {root}{each}")
        print("\n".join(f"  {m.name}  (Slurm job {placed[m.name]})" for m in members))
        print(f"follow them with `simclr runs --runs-dir {root}` or simclr-tui")
        return 0
    first, last = placed[members[0].name], placed[members[-1].name]
    place = f"position {first}" if first == last else f"positions {first}-{last}"
    print(f"sweep {args.name}: {runs} queued in {root} ({place}){each}")
    print("\n".join(f"  {m.name}" for m in members))
    if args.slots is not None:
        queue.set_slots(root, args.slots)
    start_or_say(args.no_start, str(root))
    return 0


def sampling(args: argparse.Namespace, grid: dict) -> bool:
    """Whether the sweep draws its settings (--sample); the draw flags without it are refused."""
    if args.sample is None:
        given = next((f for f, v in (("--space", args.space), ("--sampler", args.sampler),
                                     ("--sweep-seed", args.sweep_seed)) if v), None)
        if given:
            raise UsageError(f"{given} is for a sweep that draws its settings: add --sample N")
        return False
    if grid:
        raise UsageError("give --grid (every combination) or --sample N --space ... (draws), not both")
    if not args.space:
        raise UsageError(f"--sample {args.sample} draws from a space: give --space KEY=DIST, "
                         f"e.g. --space lr=loguniform:1e-4:1e-2")
    return True


def prune_spec(args: argparse.Namespace):
    """The sweep's pruning, checked, or None; its flags without --prune are refused."""
    from core.jobs.prune import spec_of

    return spec_of(args.prune, args.prune_metric, args.min_epochs, args.reduction_factor)


def sweep_launcher(args: argparse.Namespace):
    """The sweep's Slurm options, or None for the local queue; flags of the other one refused."""
    opts = slurm_options(args)
    if opts is not None:
        from core.jobs.slurm import available

        if args.slots is not None or args.no_start:
            raise UsageError(f"--{'slots' if args.slots is not None else 'no-start'} is for the local queue's worker; "
                             f"with --launcher slurm, Slurm schedules the runs")
        if available():
            raise UsageError(available())
    return opts


def sweep_show_parser() -> Parser:
    p = Parser(prog="simclr sweep show", description="One sweep: its plan, its members (state, setting, seed, "
                                                        "epoch, kNN top-1), what is still to come, and its pruning "
                                                        "decisions (rung, member, metric, cutoff, settings compared).")
    p.add_argument("name", help="the sweep's name")
    p.add_argument("--runs-dir", default="runs", help="the runs directory (default: runs)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    p.set_defaults(func=cmd_sweep_show, command="sweep-show")
    return p


def cmd_sweep_show(args: argparse.Namespace) -> int:
    """`simclr sweep show NAME`: the sweep, its members and its decision log."""
    from core.report.sweeps import sweep_lines, sweep_overview

    if not Path(args.runs_dir).is_dir():
        raise UsageError(f"--runs-dir {args.runs_dir} does not exist")
    data = sweep_overview(args.runs_dir, args.name)
    print(json.dumps(data, indent=2) if args.format == "json" else "\n".join(sweep_lines(data)))
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    """`simclr queue`: what is queued, in order, what runs, and the worker."""
    from core.jobs.queue import Listing
    from core.jobs.worker import has_work
    from core.report.console import queue_lines
    from core.report.listing import queue_overview

    root = Path(args.runs_dir)
    if not root.is_dir():
        raise UsageError(f"--runs-dir {root} does not exist")
    listing = Listing(root)  # the runs directory, read once
    data = queue_overview(root, listing)
    if args.format == "json":
        print(json.dumps(data, indent=2))
    else:
        print("\n".join(queue_lines(data, has_work=not data["worker"] and has_work(root, listing))))
    return 0


def cmd_queue_work(args: argparse.Namespace) -> int:
    from core.jobs import queue

    if args.slots is not None:
        queue.set_slots(args.runs_dir, args.slots)
    runner = shlex.split(args.runner) if args.runner else None
    from core.jobs.worker import Worker
    return Worker(args.runs_dir, slots=args.slots, runner=runner).run()


def cmd_queue_cancel(args: argparse.Namespace) -> int:
    from core.jobs import service

    names, stopped = service.cancel(args.runs_dir, args.runs)
    if names or not stopped:
        print(f"cancelled {len(names)} queued run(s): {', '.join(names)}")
    for name in stopped:
        print(f"sweep {name} proposes no more settings; its runs already made go on (stop them with simclr stop)")
    return 0


def cmd_queue_move(args: argparse.Namespace) -> int:
    from core.jobs import service

    print(f"{args.run} is now #{service.move(args.runs_dir, args.run, args.where)} in the queue")
    return 0
