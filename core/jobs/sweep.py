"""A sweep: a grid of config values times a few seeds, expanded into one run per combination.

Plain Python (no torch). ``simclr sweep`` parses the grid here, validates every combination
before anything is made (one bad value: one line, exit 2, no directory), and hands the
members to ``core.jobs.queue.enqueue``: each becomes an ordinary run directory in state
``queued`` with a ``sweep.json`` saying which sweep it belongs to, its place in it and the
values that were swept (docs/RUN_DIRECTORY.md, "Sweeps and the queue").

Order: seeds outermost, then the grid in the order given (the last ``--grid`` key varies
fastest), so every setting has one finished seed before any has two: a study read half-way
already compares all its settings.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, fields
from typing import Any

from core.config import ConfigError, PretrainConfig, dash

FIELDS = tuple(f.name for f in fields(PretrainConfig))
#: fields a sweep cannot vary: where the data lives and how it runs do not define a setting
UNSWEPT = ("device", "workers")


@dataclass(frozen=True)
class Member:
    """One run of a sweep: its directory name, place, swept values and resolved config."""

    name: str
    index: int
    swept: dict[str, Any]
    config: PretrainConfig

    def sweep_record(self, sweep: str, size: int, grid: dict[str, list[Any]], seeds: list[int] | None) -> dict:
        """The contents of the run's sweep.json."""
        return {"sweep": sweep, "index": self.index, "size": size, "swept": self.swept,
                "grid": grid, "seeds": seeds}


def field_name(key: str, flag: str = "--grid") -> str:
    """A config key as given (``batch-size`` or ``batch_size``) -> the field name; ``flag``
    (``--grid``, ``--space``) names the option in the error."""
    name = key.strip().replace("-", "_")
    if name not in FIELDS:
        close = difflib.get_close_matches(name, FIELDS, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(dash(c) for c in close[:3])}?)" if close else ""
        raise ConfigError(f"{flag} {key}: not a config key{hint}; see `simclr pretrain --help` for the names")
    if name in UNSWEPT:
        raise ConfigError(f"{flag} {key}: {dash(name)} says where a run runs, not what it is; give it after --")
    return name


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
    """``["temperature=0.1,0.2", "lr=1e-3,2e-3"]`` -> ``{"temperature": ["0.1", "0.2"], ...}``."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--grid {spec!r}: write KEY=V1,V2 (e.g. --grid temperature=0.1,0.2)")
        name = field_name(key)
        if name in grid:
            raise ConfigError(f"--grid {dash(name)} is given twice; list all its values in one --grid")
        items = [v.strip() for v in values.split(",")]
        if not all(items):
            raise ConfigError(f"--grid {spec!r}: an empty value; write KEY=V1,V2 without spaces or trailing commas")
        if len(set(items)) != len(items):
            raise ConfigError(f"--grid {spec!r}: a value is listed twice")
        grid[name] = items
    return grid


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` -> a list of distinct non-negative seeds."""
    text = text.strip()
    m = re.fullmatch(r"(\d+)-(\d+)", text)
    try:
        seeds = list(range(int(m[1]), int(m[2]) + 1)) if m else [int(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: write integers such as 0,1,2 or a range 0-4") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: give distinct non-negative integers, e.g. 0,1,2")
    return seeds


def expand(sweep: str, base: dict[str, Any], grid: dict[str, list[str]], seeds: list[int] | None) -> list[Member]:
    """Every combination, validated. ``base``: the config values every run shares (defaults <
    preset < file < flags, not yet validated). Raises ConfigError naming the combination."""
    if seeds is not None and "seed" in grid:
        raise ConfigError("give the seeds once: --seeds 0,1,2 or --grid seed=0,1,2, not both")
    axes = ([("seed", [str(s) for s in seeds])] if seeds is not None else []) + list(grid.items())
    combos = [dict(zip([k for k, _ in axes], values)) for values in itertools.product(*[v for _, v in axes])]
    members, seen = [], {}
    for index, combo in enumerate(combos):
        label = ",".join(f"{k}={v}" for k, v in combo.items())
        try:
            cfg = PretrainConfig.from_dict({**base, **combo}).validate()
        except ConfigError as e:
            raise ConfigError(f"sweep {sweep}, {label or 'the base config'}: {e}") from None
        swept = {k: getattr(cfg, k) for k in combo}
        key = tuple(sorted(swept.items(), key=lambda kv: kv[0]))
        if key in seen:  # e.g. 0.1 and 1e-1
            raise ConfigError(f"sweep {sweep}: {label} is the same setting as {seen[key]}; list each value once")
        seen[key] = label
        members.append(Member("", index, swept, cfg))
    varying = [k for k, values in axes if len(values) > 1]
    names = member_names(sweep, [m.swept for m in members], varying)
    return [Member(n, m.index, m.swept, m.config) for n, m in zip(names, members)]


def member_names(sweep: str, swept: list[dict[str, Any]], varying: list[str]) -> list[str]:
    """``NAME-temperature=0.2,seed=1``: what differs, grid keys first, seed last. When a name
    would be too long or two would collide (values cleaned for a file name), ``NAME-007``."""
    order = [k for k in varying if k != "seed"] + [k for k in varying if k == "seed"]
    def clean(v: Any) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", str(v)).strip("_") or "_"
    names = [f"{sweep}-" + ",".join(f"{k}={clean(s[k])}" for k in order) if order else f"{sweep}-{i + 1}"
             for i, s in enumerate(swept)]
    if len(set(names)) != len(names) or max(map(len, names), default=0) > 100:
        width = len(str(len(swept)))
        names = [f"{sweep}-{i + 1:0{max(3, width)}d}" for i in range(len(swept))]
    return names


def setting_label(swept: dict[str, Any], without: tuple[str, ...] = ("seed",)) -> str:
    """``temperature=0.2,lr=0.001``: a member's setting, its seed left out (what groups share)."""
    return ",".join(f"{k}={v}" for k, v in swept.items() if k not in without)
