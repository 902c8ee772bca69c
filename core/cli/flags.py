"""The config flags of ``simclr pretrain`` (and of a sweep's runs, after ``--``), generated
from ``PretrainConfig``, and how they resolve: defaults < preset < --config file < flags.

Also ``--then``: an evaluation queued after a run, checked by the evaluation command's own
parser before anything is queued.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import fields
from typing import Any, get_type_hints

from core.cli.common import Parser
from core.config import PRESETS, PretrainConfig, base_type, dash, literal_choices, load_config_file, preset
from core.errors import UsageError

#: may change on --resume: they do not change the maths
RUNTIME_ONLY = ("device", "workers")


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per PretrainConfig field; default None means 'not given' (the help names the
    field's default, once: the parser adds none of its own)."""
    defaults = PretrainConfig()
    hints = get_type_hints(PretrainConfig)
    for f in fields(PretrainConfig):
        kind, _ = base_type(hints[f.name])
        choices = literal_choices(hints[f.name])
        help_text = f"{f.metadata.get('help', '')} (default: {getattr(defaults, f.name)})"
        kw: dict[str, Any] = dict(dest=f.name, default=None, help=help_text)
        if kind is bool:
            kw.update(nargs="?", const="true", metavar="BOOL")
        else:
            kw.update(metavar=kind.__name__.upper() if not choices else "{" + ",".join(choices) + "}")
        p.add_argument(f"--{dash(f.name)}", **kw)


def add_source_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a .json or .yaml file of config keys")
    p.add_argument("--preset", help=f"start from a preset: {', '.join(PRESETS)} (see `simclr presets`)")


def pretrain_flag_parser() -> argparse.ArgumentParser:
    """The config flags of `simclr pretrain` alone: what a sweep's runs share."""
    p = Parser(prog="simclr sweep ... --", add_help=False)
    add_source_flags(p)
    add_config_flags(p)
    return p


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
    values.update({name: getattr(args, name) for name in given_flags(args)})
    return values


def given_flags(args: argparse.Namespace) -> list[str]:
    return [f.name for f in fields(PretrainConfig) if getattr(args, f.name) is not None]


def parse_then(spec: str) -> list[str]:
    """One --then job, e.g. ``knn`` or ``"finetune --label-fraction 0.1"``, checked by the
    evaluation command's own parser (the run directory is added when it starts)."""
    from core.cli import evaluate
    from core.jobs.queue import THEN_COMMANDS

    argv = shlex.split(spec)
    if not argv or argv[0] not in THEN_COMMANDS:
        raise UsageError(f"--then {spec!r}: give one of {', '.join(THEN_COMMANDS)}, with its flags "
                         f"in quotes, e.g. --then \"finetune --label-fraction 0.1\"")
    if any(a == "--run-dir" or a.startswith("--run-dir=") for a in argv):
        raise UsageError(f"--then {spec!r}: leave out --run-dir; the job evaluates the run it follows")
    parser = Parser(prog="simclr")
    evaluate.add_commands(parser.add_subparsers(dest="command", required=True, parser_class=Parser))
    try:
        parser.parse_args([argv[0], "--run-dir", "RUN", *argv[1:]])
    except UsageError as e:
        raise UsageError(f"--then {spec!r}: {str(e).split(' (see ')[0]}") from None
    return argv
