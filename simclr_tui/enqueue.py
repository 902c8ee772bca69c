"""Queueing from the New-run form: the `simclr pretrain --queue` and `simclr sweep` commands.

The form's sweep section is checked here with core's own parsers (`core.jobs.sweep.parse_grid`,
`parse_seeds`, `expand`; pruning with `core.jobs.prune.PruneSpec.check` and the rung check
of `simclr sweep`), so the form refuses exactly what `simclr sweep` would, with the same message; the command is then run as a short subprocess through the TUI's runner
(`run_cli`), which makes the queued run directories and exits (0, or 2 with one line
`simclr: error: ...`). The TUI starts the queue worker itself (`SimclrApp.queue_changed`),
so both are run with `--no-start`; the sweep command shown to copy leaves that out.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import process
from core.config import ConfigError, dash
from core.jobs.worker import child_env
from core.runs import check_run_name
from core.jobs.prune import PruneSpec, check_rungs, spec_of
from core.jobs.sweep import Member, expand, parse_grid, parse_seeds
from core.report.groups import NOT_A_SETTING

#: the config fields a sweep row may not vary (seeds have their own input)
NOT_IN_GRID = NOT_A_SETTING
#: the form checks every member as you type; beyond this many it refuses (`simclr sweep` does not)
MAX_FORM_SWEEP = 5000


@dataclass(frozen=True)
class Sweep:
    """A checked sweep: its name, grid (``KEY=V1,V2`` specs), seeds and members."""

    name: str
    specs: tuple[str, ...]
    seeds: str | None  # the seeds as typed ("0,1,2", "0-4"), None for none
    members: tuple[Member, ...]
    prune: PruneSpec | None = None  # --prune asha|median ...

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(parse_grid(list(self.specs)))


def grid_rows_defined(rows: list[tuple[str | None, str]], seeds: str) -> bool:
    """Whether the section describes a sweep at all (a key with values, or seeds)."""
    return bool(seeds.strip()) or any(key and values.strip() for key, values in rows)


def check_prune(rule: str | None, metric: str, min_epochs: str, reduction_factor: str) -> PruneSpec | None:
    """The form's pruning fields as `simclr sweep` reads its flags (core.jobs.prune.spec_of):
    None without a rule, refusing the other fields set without one; raises ConfigError."""
    ints = {}
    for flag, raw in (("--min-epochs", min_epochs.strip()), ("--reduction-factor", reduction_factor.strip())):
        try:
            ints[flag] = int(raw)
        except ValueError:
            raise ConfigError(f"argument {flag}: invalid int value: {raw!r}") from None
    return spec_of(rule, metric, ints["--min-epochs"], ints["--reduction-factor"])


def prune_flags(prune: PruneSpec | None) -> list[str]:
    """``--prune RULE --prune-metric M --min-epochs R --reduction-factor ETA`` (nothing without pruning)."""
    if prune is None:
        return []
    return ["--prune", prune.rule, "--prune-metric", prune.metric, "--min-epochs", str(prune.min_epochs),
            "--reduction-factor", str(prune.reduction_factor)]


def check_sweep(name: str, rows: list[tuple[str | None, str]], seeds: str, base: dict[str, Any],
                runs_dir: Path, taken_sweeps: set[str], prune: PruneSpec | None = None) -> Sweep:
    """The sweep the rows describe, every member validated; raises ConfigError."""
    specs = []
    for key, values in rows:
        if key and values.strip():
            specs.append(f"{dash(key)}={values.strip()}")
        elif values.strip():
            raise ConfigError(f"--grid ={values.strip()}: choose the config key these values are for")
    grid = parse_grid(specs)
    seed_list = parse_seeds(seeds) if seeds.strip() else None
    if not grid and seed_list is None:
        raise ConfigError("a sweep needs a key with values (e.g. temperature 0.1,0.2) or seeds (e.g. 0,1,2)")
    size = math.prod([len(v) for v in grid.values()] + [len(seed_list or [0])])
    if size > MAX_FORM_SWEEP:
        raise ConfigError(f"a sweep of {size} runs: the form queues at most {MAX_FORM_SWEEP}; "
                          f"copy the command (ctrl+o) and run it in a shell")
    try:
        check_run_name(name)
    except ValueError as e:
        raise ConfigError(f"sweep name: {e}") from None
    if name in taken_sweeps:
        raise ConfigError(f"sweep {name} already exists in {runs_dir}; choose another sweep name")
    members = expand(name, base, grid, seed_list)
    taken = [m.name for m in members if (runs_dir / m.name).exists()]
    if taken:
        raise ConfigError(f"sweep {name}: a run named {taken[0]} already exists; choose another sweep name")
    if prune is not None:
        check_rungs(prune, min(m.config.epochs for m in members))
    return Sweep(name, tuple(specs), seeds.strip() or None, tuple(members), prune)


def grid_size(rows: list[tuple[str | None, str]], seeds: str) -> int:
    """Runs the rows would make, before any check (values per key multiplied, times seeds)."""
    counts = [len(v.split(",")) for k, v in rows if k and v.strip()]
    if seeds.strip():
        try:
            counts.append(len(parse_seeds(seeds)))
        except ConfigError:
            pass
    return math.prod(counts) if counts else 0


def then_specs(linear: bool, knn: bool, finetune: bool, fraction: str) -> list[str]:
    """The --then jobs (`core.jobs.queue.THEN_COMMANDS`) the checkboxes ask for; raises ConfigError."""
    out = ["linear-eval"] * linear + ["knn"] * knn
    if finetune:
        try:
            f = float(fraction)
        except ValueError:
            f = math.nan
        if not 0 < f <= 1:
            raise ConfigError(f"--then finetune: the label fraction must be in (0, 1], e.g. 0.1 (got {fraction!r})")
        out.append(f"finetune --label-fraction {f!r}")
    return out


def without(args: list[str], names: tuple[str, ...]) -> list[str]:
    """Flag/value pairs minus the flags of ``names`` (a sweep sets those per run)."""
    flags = {"--" + dash(n) for n in names}
    out, i = [], 0
    while i < len(args):
        if args[i] in flags:
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def queue_args(runs_dir: Path, name: str, then: list[str], flags: list[str]) -> list[str]:
    """`pretrain --run-dir RUNS/NAME --runs-dir RUNS --queue --no-start [--then JOB] FLAGS`
    (the app starts the worker, as for a sweep)."""
    runs = runs_dir.resolve()
    return ["pretrain", "--run-dir", str(runs / name), "--runs-dir", str(runs), "--queue", "--no-start",
            *[a for t in then for a in ("--then", t)], *flags]


def sweep_args(runs_dir: Path, sweep: Sweep, then: list[str], flags: list[str], start: bool) -> list[str]:
    """`sweep NAME --runs-dir RUNS --grid K=V,.. --seeds S [--then JOB] [--prune ...] [--no-start] -- FLAGS`;
    the seed and swept keys are left out of FLAGS."""
    args = ["sweep", sweep.name, "--runs-dir", str(runs_dir.resolve())]
    args += [a for s in sweep.specs for a in ("--grid", s)]
    if sweep.seeds:
        args += ["--seeds", sweep.seeds]
    args += [a for t in then for a in ("--then", t)]
    args += prune_flags(sweep.prune)
    if not start:
        args.append("--no-start")
    dropped = sweep.keys + (("seed",) if sweep.seeds else ())
    return [*args, "--", *without(flags, dropped)]


# ---------------------------------------------------------------------- running it
@dataclass(frozen=True)
class CliResult:
    returncode: int
    output: str  # stdout
    error: str  # the one-line error (exit 2), else the last line of stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def one_line_error(stderr: str, stdout: str = "") -> str:
    """The command's one-line error (core.process.error_line: the runner's own words)."""
    return process.error_line(stderr, stdout) or ""


def run_cli(runner: list[str], args: list[str], timeout: float = 120.0) -> CliResult:
    """Run a short `simclr` command (no training) and wait for it; call from a thread."""
    try:
        proc = subprocess.run([*runner, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, env=child_env(), start_new_session=True, check=False)
    except OSError as e:
        return CliResult(-1, "", f"cannot start {runner[0]}: {e.strerror or e}")
    except subprocess.TimeoutExpired:
        return CliResult(-1, "", f"`simclr {args[0]}` did not finish within {timeout:.0f} s")
    error = "" if proc.returncode == 0 else one_line_error(proc.stderr, proc.stdout)
    if proc.returncode and not error:
        error = f"exited with code {proc.returncode}"
    return CliResult(proc.returncode, proc.stdout, error)
