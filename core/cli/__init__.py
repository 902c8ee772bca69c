"""`simclr ...`: the headless runner's command line.

Flags of `simclr pretrain` are generated from `PretrainConfig`, so the CLI, config files
and the TUI's form share one schema. Resolution order: defaults < preset < config file
< flags; the resolved config is what gets saved. Exit codes: 0 done or stopped,
1 failed while training, 2 bad arguments, config or data (nothing written).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence, get_type_hints

from core.cli.common import Parser
from core.errors import UsageError
from core.runs.output import tee_to
from core.config import (
    PRESET_NOTES,
    PRESETS,
    ConfigError,
    PretrainConfig,
    base_type,
    dash,
    literal_choices,
    load_config_file,
    preset,
)
from core.evaluation.cli import add_commands as add_eval_commands
from core.jobs.launch import add_launcher_flags, slurm_job_of, slurm_options, with_slurm_states
from core.jobs.slurm import this_job

RUNTIME_ONLY = ("device", "workers")  # may change on --resume: they do not change the maths


# ---------------------------------------------------------------------- pretrain flags
def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per PretrainConfig field; default None means 'not given'."""
    defaults = PretrainConfig()
    hints = get_type_hints(PretrainConfig)
    for f in fields(PretrainConfig):
        kind, optional = base_type(hints[f.name])
        choices = literal_choices(hints[f.name])
        default = getattr(defaults, f.name)
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        kw: dict[str, Any] = dict(dest=f.name, default=None, help=help_text)
        if kind is bool:
            kw.update(nargs="?", const="true", metavar="BOOL")
        else:
            kw.update(metavar=kind.__name__.upper() if not choices else "{" + ",".join(choices) + "}")
        p.add_argument(f"--{dash(f.name)}", **kw)


def resolve_config(args: argparse.Namespace) -> PretrainConfig:
    """defaults < preset < --config file < flags, then validated."""
    return PretrainConfig.from_dict(resolve_values(args)).validate()


def resolve_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config values defaults < preset < --config file < flags give, not yet validated."""
    values: dict[str, Any] = {}
    file_values = load_config_file(args.config) if args.config else {}
    preset_name = args.preset or file_values.pop("preset", None)
    if preset_name:
        values.update(preset(preset_name))
    values.update(file_values)
    values.update({f.name: getattr(args, f.name) for f in fields(PretrainConfig)
                   if getattr(args, f.name) is not None})
    return values


def given_flags(args: argparse.Namespace) -> list[str]:
    return [f.name for f in fields(PretrainConfig) if getattr(args, f.name) is not None]


# ---------------------------------------------------------------------- commands
def cmd_pretrain(args: argparse.Namespace) -> int:
    opts = slurm_options(args, inherit=Path(args.resume) if args.resume else None)
    if opts is not None:  # before torch is imported: a login node submits in a fraction of a second
        return submit_pretrain_job(args, opts)
    from core.simclr import dist
    from core import runs as rundir
    timeout = dist.timeout_from_env()  # checked before anything is written
    if (args.then or args.no_start) and not args.queue:
        if args.no_start:
            raise UsageError("--no-start only means something with --queue")
        raise UsageError("--then runs jobs after a queued run: add --queue, or --launcher slurm (or use `simclr sweep`)")
    if args.queue:
        if args.resume:
            raise UsageError("--queue starts a new run later; resume a run now with --resume (no --queue)")
        return queue_one(args)
    writer = os.environ.get("RANK", "0") == "0"  # other ranks never write the run directory, nor check it
    if args.resume:
        run_dir, cfg = resume_target(args, check=writer)
        made = False
    else:
        cfg = resolve_config(args)
        if args.run_dir:
            run_dir = Path(args.run_dir)
            rundir.check_run_name(run_dir.name)
            if writer:
                check_free(run_dir, resume=False)
            made = not run_dir.exists()
        elif os.environ.get("RANK", "0") == "0":  # only the rank that writes claims a directory
            run_dir, made = rundir.claim_run_dir(args.runs_dir, cfg.dataset, cfg.backbone), True
        else:  # other ranks never write the run directory
            run_dir = Path(args.runs_dir) / rundir.generate_run_name(args.runs_dir, cfg.dataset, cfg.backbone)
            made = False
    return _run_pretrain(cfg, run_dir, args.resume is not None, made, timeout)


def resume_target(args: argparse.Namespace, check: bool = True) -> tuple[Path, PretrainConfig]:
    """The run --resume continues and its saved config (only --device/--workers may change)."""
    from core import runs as rundir
    run_dir = Path(args.resume)
    if args.run_dir and Path(args.run_dir).resolve() != run_dir.resolve():
        raise UsageError("give the run to resume once: --resume runs/NAME (no --run-dir)")
    saved = rundir.read_json(run_dir / "config.json")
    if saved is None:
        raise ConfigError(f"{run_dir} has no readable config.json; is it a run directory made by `simclr pretrain`?")
    extra = [n for n in given_flags(args) if n not in RUNTIME_ONLY]
    if extra or args.config or args.preset:
        raise UsageError(f"--resume continues the saved config; only --device/--workers may change "
                         f"(got --{dash(extra[0]) if extra else 'config/--preset'})")
    cfg = PretrainConfig.from_dict(saved)
    cfg = cfg.replace(**{n: getattr(args, n) for n in given_flags(args)} if given_flags(args) else {})
    cfg = PretrainConfig.from_dict(cfg.to_dict()).validate()
    if check:
        check_free(run_dir, resume=True)
    if not (run_dir / "checkpoints" / "last.pt").exists():
        raise ConfigError(f"{run_dir}/checkpoints/last.pt does not exist: nothing to resume; start a new run")
    return run_dir, cfg


def submit_pretrain_job(args: argparse.Namespace, opts) -> int:
    """`simclr pretrain ... --launcher slurm`: submit the run (or --resume) and return at once."""
    from core import runs as rundir
    from core.jobs.launch import submit_pretrain
    from core.jobs.slurm import available

    if args.queue or args.no_start:
        raise UsageError("--queue is the local queue; with --launcher slurm, Slurm queues the run (drop --queue)")
    why = available()
    if why:
        raise UsageError(why)
    then = [parse_then(t) for t in args.then]
    if args.resume:
        if then:
            raise UsageError("--then with --resume: submit the evaluations once the run finishes")
        run_dir, cfg = resume_target(args)
        if any(n in RUNTIME_ONLY for n in given_flags(args)):  # a new --device/--workers: the job reads the file
            rundir.atomic_write_json(run_dir / "config.json", cfg.to_dict())
        job = submit_pretrain(run_dir, cfg, opts, resume=True)
    else:
        cfg = resolve_config(args)
        if args.run_dir:
            run_dir = Path(args.run_dir)
            rundir.check_run_name(run_dir.name)
            check_free(run_dir, resume=False)
        else:
            run_dir = rundir.claim_run_dir(args.runs_dir, cfg.dataset, cfg.backbone)
        job = submit_pretrain(run_dir, cfg, opts)
    print(f"submitted Slurm job {job}: {run_dir} ({'resumes from last.pt' if args.resume else 'queued'})")
    for argv in then:
        print(f"  then {submit_then(run_dir, argv, opts, job)[1]}")
    print(f"follow it with `simclr runs` or simclr-tui; stop it with `simclr stop --run-dir {run_dir}`")
    return 0


def submit_then(run_dir: Path, argv: list[str], opts, after: str) -> tuple[str, str]:
    """A --then evaluation of a Slurm run: its own job, started by Slurm once the run's job
    ends well (``afterok``: never after a stopped or failed run)."""
    from core.jobs.launch import submit_eval
    from core.jobs.queue import _options, job_name

    job, kind = job_name(argv, run_dir), argv[0]  # the status kind an evaluation job writes is its command
    checkpoint = _options(argv[1:]).get("--checkpoint", "last")
    job_id = submit_eval(run_dir, job, kind, checkpoint, [argv[0], "--run-dir", str(run_dir.absolute()), *argv[1:]],
                         opts, dependency=f"afterok:{after}")
    return job_id, f"{job} as Slurm job {job_id} (after job {after} finishes)"


def queue_one(args: argparse.Namespace) -> int:
    """`simclr pretrain ... --queue`: a queued run at the end of the queue, started by the worker."""
    from core.jobs import queue
    from core import runs as rundir
    cfg = resolve_config(args)
    then = [parse_then(t) for t in args.then]
    with queue.queue_lock(args.runs_dir):
        if args.run_dir:
            run_dir = Path(args.run_dir)
            rundir.check_run_name(run_dir.name)
            if Path(args.runs_dir).resolve() != run_dir.resolve().parent:
                raise UsageError(f"a queued run lives in the queue's runs directory: give --run-dir "
                                 f"{Path(args.runs_dir) / run_dir.name} (or --runs-dir {run_dir.parent})")
            if (run_dir / "status.json").exists() or (run_dir / "config.json").exists():
                raise UsageError(f"{run_dir} already holds a run (queued or not); choose another --run-dir")
            check_free(run_dir, resume=False)
        else:
            run_dir = rundir.claim_run_dir(args.runs_dir, cfg.dataset, cfg.backbone)
        queue.enqueue(args.runs_dir, run_dir, cfg, then)
        position = queue.positions(args.runs_dir).get(run_dir.name)
    print(f"queued {run_dir} at position {position}" + (f", then {', '.join(t[0] for t in then)}" if then else ""))
    if args.no_start:
        print(f"not started (--no-start); start with `simclr queue work --runs-dir {args.runs_dir}`")
    else:
        report_worker(args.runs_dir, queue.ensure_worker(args.runs_dir))
    return 0


def parse_then(spec: str) -> list[str]:
    """One --then job, e.g. ``knn`` or ``"finetune --label-fraction 0.1"``, checked by the
    evaluation command's own parser (the run directory is added when it starts)."""
    import shlex

    from core.jobs.queue import THEN_COMMANDS

    argv = shlex.split(spec)
    if not argv or argv[0] not in THEN_COMMANDS:
        raise UsageError(f"--then {spec!r}: give one of {', '.join(THEN_COMMANDS)}, with its flags "
                         f"in quotes, e.g. --then \"finetune --label-fraction 0.1\"")
    if any(a == "--run-dir" or a.startswith("--run-dir=") for a in argv):
        raise UsageError(f"--then {spec!r}: leave out --run-dir; the job evaluates the run it follows")
    try:
        build_parser().parse_args([argv[0], "--run-dir", "RUN", *argv[1:]])
    except UsageError as e:
        raise UsageError(f"--then {spec!r}: {str(e).split(' (see ')[0]}") from None
    return argv


def report_worker(runs_dir: str, pid: int | None) -> None:
    from core.jobs.queue import default_slots

    if pid is None:
        print(f"no worker started; start one with `simclr queue work --runs-dir {runs_dir}`")
    else:
        print(f"worker pid {pid} ({default_slots(runs_dir)} slot(s)); follow it with "
              f"`simclr queue --runs-dir {runs_dir}` or simclr-tui")


def cmd_sweep(args: argparse.Namespace) -> int:
    """`simclr sweep NAME --grid K=V1,V2 --seeds 0,1,2 -- PRETRAIN_FLAGS`: one queued run per combination."""
    from core.jobs import queue, sweep
    from core import runs as rundir
    rundir.check_run_name(args.name)
    grid = sweep.parse_grid(args.grid)
    seeds = sweep.parse_seeds(args.seeds) if args.seeds is not None else None
    if not grid and seeds is None:
        raise UsageError("a sweep needs at least one --grid KEY=V1,V2 or --seeds 0,1,2")
    base = resolve_values(pretrain_flag_parser().parse_args(args.pretrain_flags))
    then = [parse_then(t) for t in args.then]
    if args.slots is not None and args.slots < 1:
        raise UsageError(f"--slots must be at least 1 (got {args.slots})")
    opts = slurm_options(args)
    if opts is not None:
        from core.jobs.slurm import available
        if args.slots is not None or args.no_start:
            raise UsageError(f"--{'slots' if args.slots is not None else 'no-start'} is for the local queue's worker; "
                             f"with --launcher slurm, Slurm schedules the runs")
        if available():
            raise UsageError(available())
    members = sweep.expand(args.name, base, grid, seeds)
    typed_grid = {k: list(dict.fromkeys(m.swept[k] for m in members)) for k in grid}
    root = Path(args.runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    with queue.queue_lock(root):
        used = [r.name for r in rundir.iter_runs(root) if (rundir.read_sweep(r.path) or {}).get("sweep") == args.name]
        if used:
            raise UsageError(f"sweep {args.name} already exists in {root} ({len(used)} run(s), e.g. {used[0]}); "
                             f"choose another name, or `simclr queue cancel {args.name}` to drop its queued runs")
        taken = [m.name for m in members if (root / m.name).exists()]
        if taken:
            raise UsageError(f"sweep {args.name}: {root / taken[0]} already exists"
                             f"{f' (and {len(taken) - 1} more)' if len(taken) > 1 else ''}; choose another "
                             f"sweep name, or `simclr queue cancel {args.name}` to drop its queued runs")
        made, jobs = [], []
        try:
            for m in members:
                rundir.check_run_name(m.name)
                made.append(root / m.name)
                record = m.sweep_record(args.name, len(members), typed_grid, seeds)
                if opts is None:
                    queue.enqueue(root, root / m.name, m.config, then, record)
                    continue
                from core.jobs.launch import submit_pretrain
                run_job = submit_pretrain(root / m.name, m.config, opts, sweep=record)
                jobs.append(run_job)
                jobs += [submit_then(root / m.name, argv, opts, run_job)[0] for argv in then]
        except BaseException:  # all or nothing: a sweep half made is not a sweep
            import shutil
            for job in jobs:
                from core.jobs.slurm import SlurmError, cancel_job
                with contextlib.suppress(SlurmError):
                    cancel_job(job)
            for path in made:
                shutil.rmtree(path, ignore_errors=True)
            raise
        where = queue.positions(root)
    if opts is not None:
        print(f"sweep {args.name}: {len(members)} run{'s' * (len(members) > 1)} submitted to Slurm from {root}"
              + (f", each followed by {', '.join(t[0] for t in then)}" if then else ""))
        for m in members:
            print(f"  {m.name}  (Slurm job {(rundir.read_json(root / m.name / 'status.json') or {}).get('slurm_job_id')})")
        print(f"follow them with `simclr runs --runs-dir {root}` or simclr-tui")
        return 0
    first, last = where[members[0].name], where[members[-1].name]
    place = f"position {first}" if first == last else f"positions {first}-{last}"
    print(f"sweep {args.name}: {len(members)} run{'s' * (len(members) > 1)} queued in {root} ({place})"
          + (f", each followed by {', '.join(t[0] for t in then)}" if then else ""))
    for m in members:
        print(f"  {m.name}")
    if args.slots is not None:
        queue.set_slots(root, args.slots)
    if args.no_start:
        print(f"not started (--no-start); start with `simclr queue work --runs-dir {root}`")
    else:
        report_worker(str(root), queue.ensure_worker(root))
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    """`simclr queue`: what is queued, in order, what runs, and the worker."""
    import json

    from core.jobs import queue
    from core.runs import LIVE_STATES, iter_runs

    root = Path(args.runs_dir)
    if not root.is_dir():
        raise UsageError(f"--runs-dir {root} does not exist")
    worker = queue.worker_info(root)
    running = []
    for run in iter_runs(root, jobs=True):
        launch = (queue.read_queue_file(run.path) or {}).get("launch") or {}
        if run.state in LIVE_STATES or (run.state == "queued" and launch):
            st = run.status or {}
            name = f"{run.path.parent.parent.name}/eval/{run.name}" if run.path.parent.name == "eval" else run.name
            running.append({"name": name, "kind": st.get("kind", "pretrain"), "state": run.state,
                            "pid": st.get("pid") or launch.get("pid"), "gpu": launch.get("gpu")})
    queued = [{"position": i + 1, "name": e.run, "sweep": e.sweep} for i, e in enumerate(queue.queued(root))]
    jobs = [{"name": e.name, "run": e.run, "command": " ".join(e.argv), "run_state": state,
             "ready": state == "finished"} for e, state in queue.pending_jobs(root)]
    data = {"runs_dir": str(root), "worker": worker, "slots": queue.default_slots(root),
            "running": running, "queued": queued, "jobs": jobs}
    if args.format == "json":
        print(json.dumps(data, indent=2))
        return 0
    w = (f"worker pid {worker.get('pid')}, {worker.get('slots')} slot(s)" if worker else
         "no worker" + (f" (start one: simclr queue work --runs-dir {root})" if queue.has_work(root) else ""))
    print(f"queue of {root}: {len(queued)} queued, {len(running)} running, {len(jobs)} job(s) waiting; {w}")
    for r in running:
        print(f"  running  {r['name']}  ({r['kind']}, pid {r['pid']}" + (f", GPU {r['gpu']})" if r["gpu"] else ")"))
    for q in queued:
        print(f"  #{q['position']:<6} {q['name']}" + (f"  [sweep {q['sweep']}]" if q["sweep"] else ""))
    for j in jobs:
        print(f"  then     {j['name']}  ({'ready' if j['ready'] else 'after the run, now ' + j['run_state']})")
    return 0


def cmd_queue_work(args: argparse.Namespace) -> int:
    from core.jobs import queue
    if args.slots is not None:
        queue.set_slots(args.runs_dir, args.slots)
    import shlex

    runner = shlex.split(args.runner) if args.runner else None
    return queue.Worker(args.runs_dir, slots=args.slots, runner=runner).run()


def cmd_queue_cancel(args: argparse.Namespace) -> int:
    from core.jobs import queue
    names = queue.cancel(args.runs_dir, args.runs)
    print(f"cancelled {len(names)} queued run(s): {', '.join(names)}")
    return 0


def cmd_queue_move(args: argparse.Namespace) -> int:
    from core.jobs import queue
    print(f"{args.run} is now #{queue.move(args.runs_dir, args.run, args.where)} in the queue")
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


def check_free(run_dir: Path, resume: bool) -> None:
    """A new run needs an unstarted directory (empty but for the TUI's stdout.log, notes, or a
    queued run's files: `rundir.is_unstarted`); a resumed one a dead writer."""
    from core import runs as rundir
    if resume:
        from core.jobs.launch import current_state

        state, _, status = current_state(run_dir)  # a Slurm run: Slurm's word, not a pid
        if status.get("launcher") == "slurm" and this_job(status):
            return  # this job's own earlier start, ended by a requeue (the run's lock guards the rest)
        if state in rundir.LIVE_STATES:
            raise UsageError(f"{run_dir} is still running (pid {status.get('pid')}"
                             + (f", Slurm job {status['slurm_job_id']}" if status.get("launcher") == "slurm" else "")
                             + f"); stop it before resuming (`simclr stop --run-dir {run_dir}`)")
        if state == "queued" and status.get("launcher") == "slurm":
            raise UsageError(f"{run_dir} waits in Slurm (job {status.get('slurm_job_id')}) and resumes when it "
                             f"starts; `simclr stop --run-dir {run_dir}` cancels it")
    elif not rundir.is_unstarted(run_dir):
        raise UsageError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or choose another --run-dir")
    else:
        status = rundir.read_json(run_dir / "status.json") or {}
        job = slurm_job_of(status)
        if job is not None and not this_job(status):  # another job's directory, not this job's own start
            from core.jobs.launch import current_state

            state, _, _ = current_state(run_dir)
            if state == "queued" or state in rundir.LIVE_STATES:
                raise UsageError(f"{run_dir} is Slurm job {job}'s ({state}); choose another --run-dir, or "
                                 f"`simclr stop --run-dir {run_dir}` first")


def _run_pretrain(cfg: PretrainConfig, run_dir: Path, resume: bool, made: bool, timeout: timedelta) -> int:
    """Train on rank 0 while holding the run directory (`rundir.hold_run_dir`); ``made``: this
    process created the directory, so set-up errors remove it again; ``timeout``: how long
    collectives wait for a silent rank."""
    from core.simclr import dist
    from core import runs as rundir
    from core.training.trainer import pretrain

    dist.init_from_env(timeout=timeout)
    try:
        with rundir.hold_run_dir(run_dir) if dist.is_main() else contextlib.nullcontext():
            if dist.is_main():
                check_free(run_dir, resume)  # again: another launch may have filled it meanwhile
            with tee_to(run_dir / "stdout.log", enabled=dist.is_main()):
                try:
                    return pretrain(cfg, run_dir, resume=resume, argv=sys.argv)
                except BaseException:
                    # set-up errors (before the run dir got its config) leave nothing behind
                    if made and dist.is_main() and not (run_dir / "config.json").exists():
                        import shutil
                        shutil.rmtree(run_dir, ignore_errors=True)
                    raise
    except rundir.RunBusyError as e:
        raise UsageError(str(e)) from None
    finally:
        dist.cleanup()


def cmd_stop(args: argparse.Namespace) -> int:
    """`simclr stop --run-dir R [--kill] [--wait S]`, for either launcher."""
    from core.jobs.launch import stop, wait_until_stopped

    run_dir = Path(args.run_dir)
    print(stop(run_dir, kill=args.kill))
    if args.wait is not None:
        state = wait_until_stopped(run_dir, args.wait)
        print(f"{run_dir.name} is {state}")
        return 0 if state not in ("running", "starting", "queued") else 1
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

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


def cmd_runs(args: argparse.Namespace) -> int:
    """Every run and evaluation job, one row each (jobs under their run): a compact table, or
    with --format json one object per row with stable keys (docs/RUN_DIRECTORY.md)."""
    import json

    from core.jobs.queue import positions
    from core.runs import iter_runs, job_result_path, read_json, read_metrics, read_notes, read_sweep

    def number(value: Any) -> int | float | None:  # garbage in a status or result file reads as absent
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    runs = list(iter_runs(args.runs_dir, jobs=True))
    slurm = with_slurm_states(runs)
    places = positions(args.runs_dir) if any(r.state == "queued" for r in runs) else {}
    records = []
    for run in runs:
        st = run.status or {}
        parent = run.path.parent.parent if run.path.parent.name == "eval" else None
        last: dict[str, float] = {}
        results: dict[str, float] | float | None
        if parent is None:
            for r in read_metrics(run.path / "metrics.jsonl")[0]:
                if "job" not in r and r["tag"] in ("train/loss", "knn/top1") and number(r["value"]) is not None:
                    last[r["tag"]] = r["value"]  # a garbage record is skipped, as the TUI does
            tops = {f.stem: number((read_json(f) or {}).get("test_top1"))
                    for f in sorted((run.path / "eval").glob("*.json"))}
            results = {job: top for job, top in tops.items() if top is not None}
        else:
            results = number((read_json(job_result_path(run.path)) or {}).get("test_top1"))
        sweep = read_sweep(parent or run.path)
        note, tags = read_notes(run.path)
        kind = st.get("kind", None if parent else "pretrain")
        records.append({
            "name": f"{parent.name}/eval/{run.name}" if parent else run.name,
            "kind": kind if isinstance(kind, str) else None, "state": run.state,
            "sweep": sweep["sweep"] if sweep else None, "swept": sweep["swept"] if sweep else None,
            "position": places.get(run.name) if parent is None and run.state == "queued" else None,
            "config": run.config,
            **{k: number(st.get(k)) for k in ("epoch", "total_epochs", "step", "total_steps")},
            "last": last, "results": results, "note": note, "tags": tags, "slurm": slurm.get(run.path),
            "parent": parent.name if parent else None, "path": str(run.path)})
    if args.format == "json":
        print(json.dumps(records, indent=2))
        return 0

    from rich import box
    from rich.console import Console
    from rich.table import Table

    colours = {"running": "green", "finished": "blue", "failed": "red", "crashed": "red",
               "stopped": "yellow", "damaged": "magenta", "starting": "green", "queued": "cyan"}
    table = Table(title=f"runs in {args.runs_dir}", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    # the name is what people look for: it keeps its width, the other columns give way
    table.add_column("name", no_wrap=True, min_width=min(32, max((len(r.name) + 2 for r in runs), default=4)))
    widths = {"kind": 8, "state": 8, "epoch": 5, "loss": 5, "kNN": 5, "top-1": 5}
    for col in ("kind", "state", "data/model", "epoch", "loss", "kNN", "top-1"):
        # data/model is the one column rich may narrow (it never wraps: no spaces, ellipsis);
        # with every column no_wrap, rich would cut the last one, top-1, instead
        table.add_column(col, no_wrap=col != "data/model", min_width=widths.get(col), overflow="ellipsis",
                         max_width=16 if col == "data/model" else None,
                         justify="right" if col in ("epoch", "loss", "kNN", "top-1") else "left")
    for run, rec in zip(runs, records):
        cfg, last, is_job = rec["config"] or {}, rec["last"], rec["parent"] is not None
        kind = (rec["kind"] or "?").removesuffix("-eval")
        # a run's best evaluation result, from its jobs' result files; a job's own
        top1 = rec["results"] if is_job else max(rec["results"].values(), default=None)
        if rec["position"] is not None:
            epoch = f"#{rec['position']}"  # its place in the queue
        elif rec["slurm"] and run.state == "queued":
            epoch = f"job {rec['slurm']['job_id']}"  # waiting in Slurm
        elif kind == "pretrain":
            epoch = "/".join("" if rec[k] is None else str(rec[k]) for k in ("epoch", "total_epochs"))
        else:
            epoch = ""
        table.add_row(
            f"└ {run.name}" if is_job else run.name, kind, f"[{colours.get(run.state, 'white')}]{run.state}[/]",
            "" if is_job else f"{cfg.get('dataset', '')}/{cfg.get('backbone', '')}",
            epoch, f"{last['train/loss']:.3f}" if "train/loss" in last else "",
            f"{last['knn/top1']:.3f}" if "knn/top1" in last else "",
            f"{top1:.3f}" if top1 is not None else "")
    Console().print(table if runs else f"no runs in {args.runs_dir}")
    return 0


# ---------------------------------------------------------------------- parser
def add_source_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a .json or .yaml file of config keys")
    p.add_argument("--preset", help=f"start from a preset: {', '.join(PRESETS)} (see `simclr presets`)")


def pretrain_flag_parser() -> argparse.ArgumentParser:
    """The config flags of `simclr pretrain` alone: what a sweep's runs share."""
    p = Parser(prog="simclr sweep ... --", add_help=False)
    add_source_flags(p)
    add_config_flags(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="simclr", description="SimCLR pretraining and evaluation (headless runner)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("pretrain", help="pretrain an encoder with SimCLR",
                       description="Pretrain an encoder with SimCLR. Flags override --config and --preset.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run-dir", help="run directory (default: a generated name under --runs-dir)")
    p.add_argument("--runs-dir", default="runs", help="where generated run directories go")
    add_source_flags(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped/crashed run from its checkpoints/last.pt")
    p.add_argument("--queue", action="store_true",
                   help="add the run to the queue of --runs-dir instead of running it now (see `simclr queue`)")
    p.add_argument("--then", action="append", default=[], metavar="JOB",
                   help="with --queue: an evaluation to queue after the run finishes: linear-eval, knn, or "
                        "'finetune --label-fraction 0.1' (quoted, with flags); repeatable")
    p.add_argument("--no-start", action="store_true", help="with --queue: only queue; start with `simclr queue work`")
    add_launcher_flags(p)
    add_config_flags(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("sweep", help="queue a grid of settings x seeds, one run each",
                       description="Queue one pretraining run per combination of --grid values and --seeds "
                                   "(every combination is validated first; nothing is made if one is bad), "
                                   "named NAME-KEY=V,...; a worker starts them as slots free up. The flags of "
                                   "`simclr pretrain` every run shares (--preset, --config, --epochs ...) go "
                                   "after --.",
                       usage="simclr sweep NAME [--runs-dir runs] --grid KEY=V1,V2 [--grid ...] [--seeds 0,1,2] "
                             "[--then JOB ...] [--slots N] [--no-start] -- PRETRAIN_FLAGS...")
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
    add_launcher_flags(p)
    # the flags after `--` are split off in main(): argparse cannot put them after a positional
    p.set_defaults(func=cmd_sweep, pretrain_flags=[])

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

    p = sub.add_parser("note", help="set or show a run's note and tags (notes.json)",
                       description="Without TEXT or --tags: show them. TEXT replaces the note ('' clears it); "
                                   "--tags replaces the tags ('' clears them). The TUI shows both and its "
                                   "filter matches them (tag:NAME for one tag).")
    p.add_argument("run", metavar="RUN", help="the run's name under --runs-dir")
    p.add_argument("text", nargs="?", metavar="TEXT", help="the new note")
    p.add_argument("--tags", help="the new tags, comma- or space-separated, e.g. baseline,lr-test")
    p.add_argument("--runs-dir", default="runs", help="the runs directory (default: runs)")
    p.set_defaults(func=cmd_note)

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
    for q in (qsub.choices.values()):
        q.add_argument("--runs-dir", default=argparse.SUPPRESS, help="the runs directory (default: runs)")

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

    add_eval_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from core.errors import CheckpointError, DataError
    from core.jobs.queue import QueueError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["slurm-job"] and len(argv) == 2:  # what a Slurm job runs (core.jobs.slurm writes the script)
        from core.jobs.slurm_job import main as slurm_job
        return slurm_job(argv[1])
    parser = build_parser()
    shared: list[str] = []
    if argv[:1] == ["sweep"] and "--" in argv:  # simclr sweep ... -- PRETRAIN_FLAGS
        argv, shared = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    try:
        args = parser.parse_args(argv)
        if args.command == "sweep":
            args.pretrain_flags = shared
        args.argv = argv  # what a Slurm job of this command runs (core.jobs.launch.strip_launcher_flags)
        return int(args.func(args) or 0)
    except (UsageError, ConfigError, DataError, CheckpointError, QueueError, ValueError) as e:  # ExportError is a ValueError
        print(f"simclr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
