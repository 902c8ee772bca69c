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

from .clitools import Parser, UsageError, tee_to
from .config import (
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
from .evaluation.cli import add_commands as add_eval_commands

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
    values: dict[str, Any] = {}
    file_values = load_config_file(args.config) if args.config else {}
    preset_name = args.preset or file_values.pop("preset", None)
    if preset_name:
        values.update(preset(preset_name))
    values.update(file_values)
    values.update({f.name: getattr(args, f.name) for f in fields(PretrainConfig)
                   if getattr(args, f.name) is not None})
    return PretrainConfig.from_dict(values).validate()


def given_flags(args: argparse.Namespace) -> list[str]:
    return [f.name for f in fields(PretrainConfig) if getattr(args, f.name) is not None]


# ---------------------------------------------------------------------- commands
def cmd_pretrain(args: argparse.Namespace) -> int:
    from . import dist, rundir

    timeout = dist.timeout_from_env()  # checked before anything is written
    if args.resume:
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
        check_free(run_dir, resume=True)
        if not (run_dir / "checkpoints" / "last.pt").exists():
            raise ConfigError(f"{run_dir}/checkpoints/last.pt does not exist: nothing to resume; start a new run")
        made = False
    else:
        cfg = resolve_config(args)
        if args.run_dir:
            run_dir = Path(args.run_dir)
            rundir.check_run_name(run_dir.name)
            check_free(run_dir, resume=False)
            made = not run_dir.exists()
        elif os.environ.get("RANK", "0") == "0":  # only the rank that writes claims a directory
            run_dir, made = rundir.claim_run_dir(args.runs_dir, cfg.dataset, cfg.backbone), True
        else:  # other ranks never write the run directory
            run_dir = Path(args.runs_dir) / rundir.generate_run_name(args.runs_dir, cfg.dataset, cfg.backbone)
            made = False
    return _run_pretrain(cfg, run_dir, args.resume is not None, made, timeout)


def check_free(run_dir: Path, resume: bool) -> None:
    """A new run needs an empty directory (the TUI leaves a stdout.log); a resumed one a dead writer."""
    from . import rundir

    if resume:
        status = rundir.read_json(run_dir / "status.json")
        if rundir.effective_state(status) in rundir.LIVE_STATES:
            raise UsageError(f"{run_dir} is still running (pid {status.get('pid')}); stop it before resuming")
    elif run_dir.exists() and not set(os.listdir(run_dir)) <= {"stdout.log"}:
        raise UsageError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or choose another --run-dir")


def _run_pretrain(cfg: PretrainConfig, run_dir: Path, resume: bool, made: bool, timeout: timedelta) -> int:
    """Train on rank 0 while holding the run directory (`rundir.hold_run_dir`); ``made``: this
    process created the directory, so set-up errors remove it again; ``timeout``: how long
    collectives wait for a silent rank."""
    from . import dist, rundir
    from .trainer import pretrain

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
    """Every run and evaluation job, one row each (jobs under their run), in a compact table."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from .rundir import iter_runs, job_result_path, read_json, read_metrics

    colours = {"running": "green", "finished": "blue", "failed": "red", "crashed": "red",
               "stopped": "yellow", "damaged": "magenta", "starting": "green"}
    table = Table(title=f"runs in {args.runs_dir}", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    runs = list(iter_runs(args.runs_dir, jobs=True))
    # the name is what people look for: it keeps its width, the other columns give way
    table.add_column("name", no_wrap=True, min_width=min(32, max((len(r.name) + 2 for r in runs), default=4)))
    widths = {"kind": 8, "state": 8, "epoch": 5, "loss": 5, "kNN": 5, "top-1": 5}
    for col in ("kind", "state", "data/model", "epoch", "loss", "kNN", "top-1"):
        # data/model is the one column rich may narrow (it never wraps: no spaces, ellipsis);
        # with every column no_wrap, rich would cut the last one, top-1, instead
        table.add_column(col, no_wrap=col != "data/model", min_width=widths.get(col), overflow="ellipsis",
                         max_width=16 if col == "data/model" else None,
                         justify="right" if col in ("epoch", "loss", "kNN", "top-1") else "left")
    for run in runs:
        st, cfg = run.status or {}, run.config or {}
        kind = str(st.get("kind", "pretrain")).removesuffix("-eval")
        is_job = run.path.parent.name == "eval"
        last: dict[str, float] = {}
        if not is_job:
            for r in read_metrics(run.path / "metrics.jsonl")[0]:
                if "job" not in r and isinstance(r["tag"], str) and isinstance(r["value"], (int, float)):
                    last[r["tag"]] = r["value"]  # a garbage record is skipped, as the TUI does
            # a run's best evaluation result, from its jobs' result files
            tops = [(read_json(f) or {}).get("test_top1") for f in (run.path / "eval").glob("*.json")]
            top1 = max((t for t in tops if isinstance(t, (int, float))), default=None)
        else:
            top1 = (read_json(job_result_path(run.path)) or {}).get("test_top1")
        epoch = f"{st.get('epoch', '')}/{st.get('total_epochs', '')}" if kind == "pretrain" else ""
        table.add_row(
            f"└ {run.name}" if is_job else run.name, kind, f"[{colours.get(run.state, 'white')}]{run.state}[/]",
            "" if is_job else f"{cfg.get('dataset', '')}/{cfg.get('backbone', '')}",
            epoch, f"{last['train/loss']:.3f}" if "train/loss" in last else "",
            f"{last['knn/top1']:.3f}" if "knn/top1" in last else "",
            f"{top1:.3f}" if isinstance(top1, (int, float)) else "")
    Console().print(table if runs else f"no runs in {args.runs_dir}")
    return 0


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="simclr", description="SimCLR pretraining and evaluation (headless runner)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("pretrain", help="pretrain an encoder with SimCLR",
                       description="Pretrain an encoder with SimCLR. Flags override --config and --preset.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run-dir", help="run directory (default: a generated name under --runs-dir)")
    p.add_argument("--runs-dir", default="runs", help="where generated run directories go")
    p.add_argument("--config", help="a .json or .yaml file of config keys")
    p.add_argument("--preset", help=f"start from a preset: {', '.join(PRESETS)} (see `simclr presets`)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped/crashed run from its checkpoints/last.pt")
    add_config_flags(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("presets", help="list the presets and their settings")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("runs", help="a table of runs with status and latest metrics")
    p.add_argument("--runs-dir", default="runs", help="the runs directory")
    p.set_defaults(func=cmd_runs)

    add_eval_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import CheckpointError, DataError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except (UsageError, ConfigError, DataError, CheckpointError, ValueError) as e:
        print(f"simclr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
